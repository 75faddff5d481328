package tlsx

import (
	"errors"
	"fmt"
)

// Files are the PEM files of a node's TLS material (--tls-ca, --tls-cert, --tls-key). All
// empty means plaintext.
type Files struct {
	// CA holds the certificates of the cluster's CA, that peers' certificates must chain to.
	CA string
	// Cert holds this node's certificate (and any intermediates after it); Key its key.
	Cert string
	Key  string
}

// Enabled reports whether TLS is configured.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that the files are given all three or not at all: half a configuration
// would silently fall back to plaintext, or fail at the first handshake.
func (f Files) Validate() error {
	if !f.Enabled() {
		return nil
	}
	var errs []error
	for _, x := range []struct{ name, path string }{{"--tls-ca", f.CA}, {"--tls-cert", f.Cert}, {"--tls-key", f.Key}} {
		if x.path == "" {
			errs = append(errs, fmt.Errorf("%s is required with the other --tls-* flags", x.name))
		}
	}
	return errors.Join(errs...)
}
