package arbiter

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
	"github.com/triarch-io/triarch/services/arbiter/liveness"
)

// Config is the arbiter's configuration.
type Config struct {
	process.Common
	// TLS are the node's CA, certificate and key (--tls-ca, --tls-cert, --tls-key); none
	// means plaintext. With them every connection in and out is mutual TLS, and calls are
	// authorized by the identity in the caller's certificate (pkg/identity).
	TLS tlsx.Files
	// Peers maps every member's node id to its raft/gRPC address, this member included.
	// Empty means a single-member cluster (triarch dev).
	Peers map[uint64]string
	// Liveness holds the lease and failure-detection settings (liveness.DefaultConfig).
	Liveness liveness.Config
	// TickInterval and ElectionTicks set the metadata group's election timeout
	// (TickInterval x ElectionTicks, randomised up to twice that by raft).
	TickInterval  time.Duration
	ElectionTicks int
	// SnapshotEntries is how many entries go by between snapshots of the FSM.
	SnapshotEntries uint64
	// Existing says the cluster already exists (--initial-cluster-state=existing, as in
	// etcd): a member whose store is empty then never bootstraps a new cluster; it waits for
	// a member that holds the cluster and rejoins it. Set it on a member whose disk was
	// replaced: it is the only way to tell a cluster that ran on two of three members, one of
	// them now wiped and the other down, from a new one (join.go).
	Existing bool
	// MaxChannels caps how many channels the cluster holds (--max-channels; 0: no cap).
	// Creating one more answers ResourceExhausted. The cap rides in each create entry, so
	// members configured differently still agree; the leader's value is the one that counts.
	MaxChannels uint64
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Liveness == (liveness.Config{}) {
		c.Liveness = liveness.DefaultConfig()
	}
	if c.TickInterval <= 0 {
		c.TickInterval = 50 * time.Millisecond
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 10_000
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.TLS.Validate(), c.Liveness.Validate()}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
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
