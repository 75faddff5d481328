package process

import (
	"errors"
	"fmt"
	"net"
)

// Common are the settings every service takes (docs/ARCHITECTURE.md, "The contract").
type Common struct {
	// NodeID identifies the process in its tier; raft needs it non-zero.
	NodeID uint64
	// Listen is the gRPC address to bind; port 0 picks a free port.
	Listen string
	// Advertise is the address peers dial; empty means the bound Listen address.
	Advertise string
	// DataDir is where the service stores anything.
	DataDir string
	// Arbiters are the arbiter members' gRPC addresses.
	Arbiters []string
	// AdminAddr serves /healthz, /readyz, /metrics, and /debug/pprof/ when Pprof is set.
	AdminAddr string
	// Pprof serves Go's profiles on AdminAddr under /debug/pprof/ (--pprof); off by default,
	// as they expose the command line and the process's internals.
	Pprof bool
}

// Validate checks what every service needs.
func (c Common) Validate() error {
	var errs []error
	if c.NodeID == 0 {
		errs = append(errs, errors.New("--node-id must be a positive integer"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", c.Listen, err))
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("--advertise %q: %w", c.Advertise, err))
		}
	}
	if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
		errs = append(errs, fmt.Errorf("--admin-addr %q: %w", c.AdminAddr, err))
	}
	for _, a := range c.Arbiters {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("--arbiters: %q: %w", a, err))
		}
	}
	return errors.Join(errs...)
}
