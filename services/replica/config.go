package replica

import (
	"errors"
	"time"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// Config is the replica's configuration.
type Config struct {
	process.Common
	// TLS are the node's CA, certificate and key (--tls-ca, --tls-cert, --tls-key); none
	// means plaintext. With them every connection in and out is mutual TLS, and calls are
	// authorized by the identity in the caller's certificate (pkg/identity).
	TLS tlsx.Files
	// Zone labels the node's failure domain for placement.
	Zone string
	// DedupWindow and DedupMaxIDs bound how long (by the channel's dedup clock, the greatest
	// leader propose time applied) and how many client_msg_ids per channel are remembered for
	// idempotent sends; each takes at most 56 bytes of memory per channel (pkg/chanlog).
	DedupWindow time.Duration
	DedupMaxIDs int
	// TickInterval is the raft tick; only leaders are ticked (heartbeats, retransmission).
	TickInterval time.Duration
	// HeartbeatTicks is how many ticks go by between a leader's heartbeats.
	HeartbeatTicks int
	// LeaseTTL is how long a leader serves without renewing its node lease or hearing from a
	// quorum of its group. It must match the arbiter's lease TTL.
	LeaseTTL time.Duration
	// MinFreeBytes is the free-space watermark of the data directory's file system: below
	// it appends are refused with ResourceExhausted until a quarter more is free again
	// (--min-free-space; 0 turns the guard off). See space.go.
	MinFreeBytes uint64
	// DiskStallBound is how long a store write (the append stage's Save and its fsync) may
	// stay in flight before the replica counts its disk as stalled: it then stops renewing its
	// node lease and stops sending to its peers until the write returns, so the arbiter
	// declares it dead and its channels fail over (see doc.go, "A stalled disk"). Default
	// 2 s; negative turns the detection off.
	DiskStallBound time.Duration
	// StoreFault, when set, wraps the store the raft host and the engine write through, so
	// that a test can make its writes hang as a stalled disk would (tests only, in process).
	StoreFault func(Store) Store
	// TransportFault injects delay and loss on the frames this replica sends to its peers
	// (tests only; see raftnet.Config.Fault).
	TransportFault func(to uint64) (delay time.Duration, drop bool)
	// TransportTamper may change the raft messages this replica sends to a peer
	// (raftnet.Config.Tamper); tests only, in process.
	TransportTamper func(to uint64, env multiraft.Envelope) multiraft.Envelope
}

// DefaultMinFreeBytes is the default free-space watermark: room for a few of Badger's
// 256 MiB value-log files and memtables beyond it, so that raft's writes never meet a full disk.
const DefaultMinFreeBytes = 1 << 30

// Defaults fills unset tuning fields.
func (c *Config) Defaults() {
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.HeartbeatTicks <= 0 {
		c.HeartbeatTicks = 2
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 600 * time.Millisecond
	}
	if c.DiskStallBound == 0 {
		c.DiskStallBound = 2 * time.Second
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.TLS.Validate()}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if c.DedupWindow <= 0 {
		errs = append(errs, errors.New("--dedup-window must be positive"))
	}
	if c.DedupMaxIDs <= 0 {
		errs = append(errs, errors.New("--dedup-max-ids must be positive"))
	}
	return errors.Join(errs...)
}
