package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/triarch-io/triarch/pkg/identity"
)

// alpn is gRPC's protocol; a config from GetConfigForClient must name it itself.
var alpn = []string{"h2"}

// ServerConfig is the tls.Config of a server: TLS 1.3, this node's current certificate, and
// a client certificate chaining to the current CA required (optional is for the gateway's
// public port, whose clients need not have one; one that is presented is still verified).
func (s *Source) ServerConfig(optionalClientCert bool) *tls.Config {
	auth := tls.RequireAndVerifyClientCert
	if optionalClientCert {
		auth = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: alpn,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   alpn,
				Certificates: []tls.Certificate{*cert},
				ClientCAs:    pool,
				ClientAuth:   auth,
			}, nil
		},
	}
}

// ClientConfig is the tls.Config of a client: it presents this node's current certificate
// and accepts a server whose certificate chains to the current CA and names a triarch
// identity of one of roles (any role when none is given). Host names are not checked: the
// identity is what the CA vouches for (see the package doc).
func (s *Source) ClientConfig(roles ...identity.Role) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
		// The chain is verified in VerifyConnection, against the CA as of this handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified below, by identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := s.current()
			_, err := VerifyPeer(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth, roles...)
			return err
		},
	}
}

// VerifyPeer checks that certs (leaf first) chain to pool for usage, and that the leaf names
// a triarch identity of one of roles (any role when none is given); it returns the identity.
func VerifyPeer(certs []*x509.Certificate, pool *x509.CertPool, usage x509.ExtKeyUsage, roles ...identity.Role) (identity.ID, error) {
	if len(certs) == 0 {
		return identity.ID{}, errors.New("tlsx: the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return identity.ID{}, fmt.Errorf("tlsx: the peer's certificate: %w", err)
	}
	id, err := identity.FromCertificate(certs[0])
	if err != nil {
		return identity.ID{}, fmt.Errorf("tlsx: the peer's certificate: %w", err)
	}
	if len(roles) > 0 && !slices.Contains(roles, id.Role) {
		return identity.ID{}, fmt.Errorf("tlsx: the peer is %s, want a %v", id, roles)
	}
	return id, nil
}
