package testcluster

import (
	"slices"
	"time"
)

// FaultFunc decides, for each frame replica from sends to replica to, how long to hold it and
// whether to drop it. It runs on the replicas' sending goroutines: it must be safe for
// concurrent use.
type FaultFunc func(from, to uint64) (delay time.Duration, drop bool)

// SetReplicaFault installs f between the replicas (nil removes it); it takes effect on the next
// frame, so a test can change the network while the cluster runs. In process only: the
// binary has no fault hook.
func (c *Cluster) SetReplicaFault(f FaultFunc) {
	c.t.Helper()
	if c.cfg.processes {
		c.t.Fatal("testcluster: replica faults need the cluster in this process")
	}
	if f == nil {
		c.fault.Store(nil)
		return
	}
	c.fault.Store(&f)
}

// Partition drops every frame between the given replicas and the others, both ways; Heal
// ends it. Only the replicas' raft traffic is cut: their calls to the arbiter and the
// clients' calls still pass.
func (c *Cluster) Partition(side ...uint64) {
	c.t.Helper()
	in := slices.Clone(side)
	c.SetReplicaFault(func(from, to uint64) (time.Duration, bool) {
		return 0, slices.Contains(in, from) != slices.Contains(in, to)
	})
}

// Heal removes any replica fault or, in a Netns() cluster, every network fault.
func (c *Cluster) Heal() {
	c.t.Helper()
	if c.net != nil {
		if err := c.net.heal(); err != nil {
			c.t.Fatalf("testcluster: heal: %v", err)
		}
		return
	}
	c.SetReplicaFault(nil)
}
