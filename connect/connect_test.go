package connect

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kdedup/kdedup/config"
	"github.com/kdedup/kdedup/internal/testcerts"
)

func TestTLSConfig(t *testing.T) {
	f, err := testcerts.Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := TLSConfig(config.TLS{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey, ServerName: "kafka.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "kafka.example.com" || tc.InsecureSkipVerify {
		t.Fatalf("tls config %+v", tc)
	}
	if tc, err := TLSConfig(config.TLS{Enabled: true}); err != nil || tc.RootCAs != nil || tc.Certificates != nil {
		t.Fatalf("enabled only: %+v, %v: want the system roots and no client certificate", tc, err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  config.TLS
		want string
	}{
		{"missing CA", config.TLS{CAFile: "/no/such/ca.pem"}, "tls.ca_file: open /no/such/ca.pem"},
		{"CA not PEM", config.TLS{CAFile: notPEM}, "no PEM certificates"},
		{"key of another cert", config.TLS{CertFile: f.ClientCert, KeyFile: f.ServerKey}, "tls.cert_file and tls.key_file: tls: private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TLSConfig(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestMechanism(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		m, err := Mechanism(config.SASL{Mechanism: mech, Username: "u", Password: "p"})
		if err != nil || m.Name() != mech {
			t.Errorf("%s: %v %v", mech, m, err)
		}
	}
	if _, err := Mechanism(config.SASL{Mechanism: "GSSAPI"}); err == nil {
		t.Error("GSSAPI accepted")
	}
	if _, err := Mechanism(config.SASL{Mechanism: config.SASLPlain, PasswordFile: "/no/such/file"}); err == nil || !strings.Contains(err.Error(), "sasl.password_file") {
		t.Errorf("missing password file: %v", err)
	}
	// The password file's trailing newline is not part of the password:
	// kfake accepts from-file, and nothing else.
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(config.SASLScramSHA256, "kdedup", "from-file"))
	defer c.Close()
	ping := func(sa config.SASL) error {
		opts, err := Options(sa, config.TLS{})
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(c.ListenAddrs()...), kgo.RetryTimeout(time.Second))...)
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	if err := ping(config.SASL{Mechanism: config.SASLScramSHA256, Username: "kdedup", PasswordFile: file}); err != nil {
		t.Fatalf("password from the file: %v", err)
	}
	err := ping(config.SASL{Mechanism: config.SASLScramSHA256, Username: "kdedup", Password: "from-file\n"})
	if err == nil {
		t.Fatal("a password with a newline was accepted")
	}
	if strings.Contains(err.Error(), "from-file") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

// TestOptions connects over TLS with a client certificate and SCRAM to a
// kfake broker that requires both.
func TestOptions(t *testing.T) {
	f, err := testcerts.Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.ServerConfig(true)
	if err != nil {
		t.Fatal(err)
	}
	c := kfake.MustCluster(kfake.NumBrokers(1), kfake.TLS(srv), kfake.EnableSASL(), kfake.Superuser(config.SASLScramSHA512, "kdedup", "pw"))
	defer c.Close()
	sa := config.SASL{Mechanism: config.SASLScramSHA512, Username: "kdedup", Password: "pw"}
	for _, tc := range []struct {
		name string
		tls  config.TLS
		ok   bool
	}{
		{"ca and client certificate", config.TLS{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}, true},
		{"server name", config.TLS{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey, ServerName: testcerts.ServerName}, true},
		{"wrong server name", config.TLS{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey, ServerName: "elsewhere.test"}, false},
		{"no client certificate", config.TLS{CAFile: f.CA}, false},
		{"system roots", config.TLS{Enabled: true, CertFile: f.ClientCert, KeyFile: f.ClientKey}, false},
		{"plaintext", config.TLS{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := Options(sa, tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(c.ListenAddrs()...), kgo.RetryTimeout(time.Second), kgo.DialTimeout(2*time.Second))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err = cl.Ping(ctx)
			if (err == nil) != tc.ok {
				t.Fatalf("ping: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && errors.Is(err, context.Canceled) {
				t.Fatalf("ping canceled: %v", err)
			}
		})
	}
}
