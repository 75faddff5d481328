package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/triarch-io/triarch/pkg/identity"
)

// ClientConfig is the tls.Config of a tool that connects to a cluster (the CLI, pkg/client):
// f.CA is required, and the server must present a certificate of one of roles (any role when
// none is given) chaining to it; f.Cert and f.Key, optional together, are the tool's own
// certificate (an admin's, say). Unlike a node's Source, the files are read once: a tool's
// connections are short.
func ClientConfig(f Files, roles ...identity.Role) (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("tlsx: --tls-ca is required to connect with TLS")
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tlsx: --tls-cert and --tls-key go together")
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tlsx: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tlsx: %s holds no PEM certificate", f.CA)
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection, by identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := VerifyPeer(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth, roles...)
			return err
		},
	}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("tlsx: load %s and %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
