package tlsx

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/triarch-io/triarch/pkg/identity"
)

// Source is a node's TLS material, kept current with its files: every handshake reads the
// three files (a few kilobytes; connections between nodes are long-lived) and loads them
// again if one changed. Contents are compared, not modification times, which a coarse
// file system clock can leave equal across a rotation.
// A change that does not load (a certificate written before its key, say) keeps the previous
// material and is tried again at the next handshake, so a rotation is never seen half done.
// Connections already open keep the certificates they were made with.
type Source struct {
	files Files
	log   *slog.Logger

	mu   sync.Mutex
	raw  [3][]byte // the files as last loaded: CA, certificate, key
	cert *tls.Certificate
	pool *x509.CertPool
	id   identity.ID
}

// NewSource loads f. It fails when the files do not load or the certificate names no
// triarch identity.
func NewSource(f Files, log *slog.Logger) (*Source, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, errors.New("tlsx: no TLS files configured")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{files: f, log: log}
	raw, err := s.read()
	if err != nil {
		return nil, err
	}
	if err := s.load(raw); err != nil {
		return nil, err
	}
	return s, nil
}

// Identity is the identity of this node's current certificate.
func (s *Source) Identity() identity.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

func (s *Source) read() ([3][]byte, error) {
	var out [3][]byte
	for i, p := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		b, err := os.ReadFile(p)
		if err != nil {
			return out, fmt.Errorf("tlsx: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

// load parses the three files' contents; s.mu is held or s is not shared yet.
func (s *Source) load(raw [3][]byte) error {
	cert, err := tls.X509KeyPair(raw[1], raw[2])
	if err != nil {
		return fmt.Errorf("tlsx: load %s and %s: %w", s.files.Cert, s.files.Key, err)
	}
	id, err := identity.FromCertificate(cert.Leaf)
	if err != nil {
		return fmt.Errorf("tlsx: %s: %w", s.files.Cert, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[0]) {
		return fmt.Errorf("tlsx: %s holds no PEM certificate", s.files.CA)
	}
	s.cert, s.pool, s.id, s.raw = &cert, pool, id, raw
	return nil
}

// current returns the material, loaded again first if a file changed.
func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, err := s.read()
	switch {
	case err != nil:
		s.log.Warn("TLS files unreadable; keeping the previous certificates", "err", err)
	case !bytes.Equal(raw[0], s.raw[0]) || !bytes.Equal(raw[1], s.raw[1]) || !bytes.Equal(raw[2], s.raw[2]):
		if err := s.load(raw); err != nil {
			s.log.Warn("TLS files changed but do not load; keeping the previous certificates", "err", err)
		} else {
			s.log.Info("TLS files reloaded", "identity", s.id.String(), "expires", s.cert.Leaf.NotAfter)
		}
	}
	return s.cert, s.pool
}
