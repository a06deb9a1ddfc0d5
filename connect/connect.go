package connect

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kdedup/kdedup/config"
)

// ErrNoCertificates is wrapped when tls.ca_file holds no PEM certificate.
var ErrNoCertificates = errors.New("connect: no PEM certificates")

// Options returns the client options that secure the connections as sa
// and t say: a TLS dialer when t is on, and the SASL mechanism when sa has
// one; none for plaintext without SASL. Files (CA, client certificate and
// key, password file) are read now, so that a bad one fails start-up with
// a message naming it.
func Options(sa config.SASL, t config.TLS) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if t.On() {
		tc, err := TLSConfig(t)
		if err != nil {
			return nil, err
		}
		// franz-go fills in each broker's host as the server name when
		// tc has none.
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if sa.Mechanism != "" {
		m, err := Mechanism(sa)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// TLSConfig returns the TLS client configuration of t: TLS 1.2 or later,
// the CA file's roots (else the system's), the client certificate, the
// server name (else each broker's host, which the dialer fills in).
func TLSConfig(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // documented as for tests only
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: %w", t.CAFile, ErrNoCertificates)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file and tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Mechanism returns the SASL mechanism of sa, with its password read from
// sa.PasswordFile when that is set (one trailing newline dropped).
func Mechanism(sa config.SASL) (sasl.Mechanism, error) {
	pass := sa.Password.Reveal()
	if sa.PasswordFile != "" {
		b, err := os.ReadFile(sa.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("sasl.password_file: %w", err)
		}
		pass = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	switch strings.ToUpper(sa.Mechanism) {
	case config.SASLPlain:
		return plain.Auth{User: sa.Username, Pass: pass}.AsMechanism(), nil
	case config.SASLScramSHA256:
		return scram.Auth{User: sa.Username, Pass: pass}.AsSha256Mechanism(), nil
	case config.SASLScramSHA512:
		return scram.Auth{User: sa.Username, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("sasl.mechanism: unknown mechanism %q", sa.Mechanism)
}
