package e2e_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/connect"
	"github.com/kdedup/kdedup/internal/e2e"
	"github.com/kdedup/kdedup/internal/testcerts"
)

// saslUser and saslPassword are the SASL user of the secure tests: a kfake
// superuser, and on Apache Kafka the user scripts/kafka.sh creates.
const (
	saslUser     = "kdedup"
	saslPassword = "kdedup-secret-4f1c"
)

// secureSetup returns a cluster that requires TLS and SASL mech. With
// KDEDUP_TEST_SECURE_BROKERS set, that real SASL_SSL listener, verified
// with the CA in KDEDUP_TEST_CA; else a kfake cluster that also requires a
// client certificate (mutual TLS).
func secureSetup(t *testing.T, mech string) *env {
	t.Helper()
	cfg := config.TLS{}
	e := &env{password: saslPassword}
	if bs := os.Getenv("KDEDUP_TEST_SECURE_BROKERS"); bs != "" {
		cfg.CAFile = os.Getenv("KDEDUP_TEST_CA")
		e.bs = strings.Split(bs, ",")
	} else {
		if realBrokers() != nil {
			t.Skip("KDEDUP_TEST_SECURE_BROKERS is not set: the real broker has no SASL_SSL listener")
		}
		f, err := testcerts.Generate(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		srv, err := f.ServerConfig(true)
		if err != nil {
			t.Fatal(err)
		}
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(srv), kfake.EnableSASL(), kfake.Superuser(mech, saslUser, saslPassword))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		e.bs, e.fake = c.ListenAddrs(), c
		cfg = config.TLS{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}
	}
	e.tp = e2e.NewTopics(prefixFor(t))
	secure, err := connect.Options(config.SASL{Mechanism: mech, Username: saslUser, Password: saslPassword}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.secure = secure
	// The configuration names the files and the user; the password comes
	// from the environment.
	e.security = fmt.Sprintf("sasl:\n  mechanism: %s\n  username: %s\ntls:\n  ca_file: %s\n", mech, saslUser, cfg.CAFile)
	if cfg.CertFile != "" {
		e.security += fmt.Sprintf("  cert_file: %s\n  key_file: %s\n", cfg.CertFile, cfg.KeyFile)
	}
	e.createInputs(t)
	return e
}

// TestSecureConnection runs kdedup over TLS with each SASL mechanism and
// checks the result record by record, and that the password is nowhere in
// its log.
func TestSecureConnection(t *testing.T) {
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			e := secureSetup(t, mech)
			in := startEnv(t, e.config(t, "secure", "log_level: debug\n"), []string{config.EnvName("sasl.password") + "=" + e.password})
			const n = 2_000
			mustProduce(t, producerClient(t, e), e.tp.NewWorkload(5, n), n)
			rep := e.verify(t, n)
			in.stop(t)
			t.Logf("%s over TLS: %v", mech, rep)
			if !rep.OK() {
				t.Fatalf("%v\n%s", rep, in.logs)
			}
			log, err := os.ReadFile(in.logFile)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(log), saslPassword) {
				t.Fatalf("the password is in kdedup's log %s", in.logFile)
			}
		})
	}
}
