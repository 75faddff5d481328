package arbiter

import (
	"errors"
	"fmt"
	"net"

	"github.com/triarch-io/triarch/pkg/process"
)

// Config is the arbiter's configuration.
type Config struct {
	process.Common
	// Peers maps every member's node id to its raft/gRPC address, this member included.
	// Empty means a single-member cluster (triarch dev).
	Peers map[uint64]string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	for id, addr := range c.Peers {
		if id == 0 {
			errs = append(errs, errors.New("--peers: node id 0 is not allowed"))
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("--peers: member %d: %w", id, err))
		}
	}
	if len(c.Peers) > 0 {
		if _, ok := c.Peers[c.NodeID]; !ok {
			errs = append(errs, fmt.Errorf("--peers must include this member (--node-id %d)", c.NodeID))
		}
	}
	return errors.Join(errs...)
}
