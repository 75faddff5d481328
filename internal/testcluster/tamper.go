package testcluster

import "github.com/triarch-io/triarch/pkg/multiraft"

// TamperFunc may change a raft message replica from sends to replica to (a copy: the message
// is raft's own), as a bad disk or memory on the way would. It runs on the replicas' sending
// goroutines: it must be safe for concurrent use.
type TamperFunc func(from, to uint64, env multiraft.Envelope) multiraft.Envelope

// SetReplicaTamper installs f between the replicas (nil removes it), from the next frame on.
// In process only.
func (c *Cluster) SetReplicaTamper(f TamperFunc) {
	c.t.Helper()
	if c.cfg.processes {
		c.t.Fatal("testcluster: tampering needs the cluster in this process")
	}
	if f == nil {
		c.tamper.Store(nil)
		return
	}
	c.tamper.Store(&f)
}
