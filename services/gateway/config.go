package gateway

import (
	"errors"
	"fmt"
	"net"

	"github.com/triarch-io/triarch/pkg/process"
)

// Config is the gateway's configuration. Common.Listen is the gRPC address.
type Config struct {
	process.Common
	// HTTPAddr serves REST/JSON and /openapi.json.
	HTTPAddr string
	// DefaultReplication is the replication factor of channels created implicitly by a send.
	DefaultReplication uint32
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err))
	}
	if c.DefaultReplication == 0 {
		errs = append(errs, errors.New("--default-replication must be at least 1"))
	}
	return errors.Join(errs...)
}
