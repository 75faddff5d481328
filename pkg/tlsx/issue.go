package tlsx

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/triarch-io/triarch/pkg/identity"
)

// Lifetimes of what Issue creates.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	LeafLifetime = 365 * 24 * time.Hour
)

// File names in an Issue directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CertFile and KeyFile are the names of id's certificate and key in an Issue directory.
func CertFile(id identity.ID) string { return fmt.Sprintf("%s-%d.crt", id.Role, id.Node) }

// KeyFile is the name of id's key in an Issue directory.
func KeyFile(id identity.ID) string { return fmt.Sprintf("%s-%d.key", id.Role, id.Node) }

// IssueOptions say what Issue creates.
type IssueOptions struct {
	// Dir receives the files. A CA already there (ca.crt and ca.key) issues the new
	// certificates; otherwise a new CA is created.
	Dir string
	// IDs get a certificate each, replacing any they had (a rotation).
	IDs []identity.ID
	// Hosts are extra DNS names or IP addresses every certificate is valid for, for clients
	// that check host names (the gateway's public clients); localhost and the loopback
	// addresses always are.
	Hosts []string
	// Now is the start of validity (time.Now when zero).
	Now time.Time
}

// Issue creates the CA if needed and a certificate and key per identity, all ECDSA P-256:
// the CA valid CALifetime, the nodes' certificates LeafLifetime, each for both ends of a
// connection (server and client authentication). Keys are written readable by their owner
// only, each file atomically (a node reloading its files never reads half of one). It returns
// the paths it wrote.
func Issue(o IssueOptions) ([]string, error) {
	if o.Dir == "" {
		return nil, errors.New("tlsx: no directory")
	}
	for _, id := range o.IDs {
		if err := id.Validate(); err != nil {
			return nil, err
		}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("tlsx: %w", err)
	}
	var written []string
	ca, caKey, err := loadCA(o.Dir)
	if errors.Is(err, os.ErrNotExist) {
		var key *ecdsa.PrivateKey
		if ca, key, err = newCA(now); err == nil {
			caKey = key
			written, err = writePair(o.Dir, CACertFile, CAKeyFile, ca.Raw, key)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, id := range o.IDs {
		der, key, err := newLeaf(id, o.Hosts, ca, caKey, now)
		if err != nil {
			return written, err
		}
		paths, err := writePair(o.Dir, CertFile(id), KeyFile(id), der, key)
		written = append(written, paths...)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "triarch CA", Organization: []string{"triarch"}},
		NotBefore:             now.Add(-time.Minute), // a little clock skew between nodes
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

func newLeaf(id identity.ID, hosts []string, ca *x509.Certificate, caKey crypto.Signer, now time.Time) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: key of %s: %w", id, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("%s-%d", id.Role, id.Node), Organization: []string{"triarch"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(LeafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter // a certificate cannot outlive its issuer
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: certificate of %s: %w", id, err)
	}
	return der, key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("tlsx: crypto/rand failed: %v", err)) // crypto/rand does not fail
	}
	return n
}

// loadCA reads the CA of dir; the error wraps os.ErrNotExist when there is none.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: %s without its key: %w", CACertFile, err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("tlsx: %s or %s is not PEM", CACertFile, CAKeyFile)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: %s: %w", CACertFile, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsx: %s: %w", CAKeyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok || !ca.IsCA {
		return nil, nil, fmt.Errorf("tlsx: %s and %s are not a CA", CACertFile, CAKeyFile)
	}
	return ca, signer, nil
}

// writePair writes a certificate and its key, the key first: a node reloading between the
// two sees a pair that does not match and keeps its previous one until the certificate too
// is there.
func writePair(dir, certName, keyName string, der []byte, key *ecdsa.PrivateKey) ([]string, error) {
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("tlsx: encode %s: %w", keyName, err)
	}
	keyPath, certPath := filepath.Join(dir, keyName), filepath.Join(dir, certName)
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return []string{keyPath}, err
	}
	return []string{certPath, keyPath}, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("tlsx: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, mode)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("tlsx: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("tlsx: write %s: %w", path, err)
	}
	return nil
}
