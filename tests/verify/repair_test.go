package verify

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/verify"
)

// repairDeadAfter is the channelctls' --replace-dead-after in runs with repair faults: a
// replica dead this long gets its channels repaired onto a spare. A repair fault keeps its
// replica dead 10-16 s, so that the control tier notices the death (a lease of 0.6 s), waits
// this long and repairs the channels while clients send. Kills (at most 4 s) may start repairs
// too, which the node's return then cuts short: the joint replica sets' hard case.
const repairDeadAfter = 3 * time.Second

// repairs counts what the repair faults did: how many channels listed the replica when it
// died, and how many of those no longer listed it when it came back (repaired away).
type repairs struct {
	events, listed, moved int
	// before is the channels listing the replica of the repair under way.
	before []string
}

// begin notes the channels whose record lists node, before it is killed.
func (r *repairs) begin(ctx context.Context, c *testcluster.Cluster, node uint64) string {
	r.events++
	r.before = nil
	recs, err := channelRecords(ctx, c)
	if err != nil {
		return fmt.Sprintf(" (the channels it holds unknown: %v)", err)
	}
	for id, ch := range recs {
		if slices.Contains(ch.GetReplicaNodeIds(), node) || slices.Contains(ch.GetNextReplicaNodeIds(), node) {
			r.before = append(r.before, id)
		}
	}
	slices.Sort(r.before)
	r.listed += len(r.before)
	return fmt.Sprintf(": holds %d channels", len(r.before))
}

// end counts the channels repaired away from node while it was dead, before it restarts.
func (r *repairs) end(ctx context.Context, c *testcluster.Cluster, node uint64) string {
	recs, err := channelRecords(ctx, c)
	if err != nil {
		return fmt.Sprintf(" (the channels repaired unknown: %v)", err)
	}
	var moved, joint []string
	for _, id := range r.before {
		ch := recs[id]
		switch {
		case ch == nil:
		case len(ch.GetNextReplicaNodeIds()) > 0:
			joint = append(joint, fmt.Sprintf("%s %v->%v", id, ch.GetReplicaNodeIds(), ch.GetNextReplicaNodeIds()))
		case !slices.Contains(ch.GetReplicaNodeIds(), node):
			moved = append(moved, fmt.Sprintf("%s->%v", id, ch.GetReplicaNodeIds()))
		}
	}
	r.moved += len(moved)
	return fmt.Sprintf(": %d of %d channels repaired away %v, %d mid-repair %v", len(moved), len(r.before), moved, len(joint), joint)
}

// check reports repair faults that never made the control tier repair anything although
// their replicas held channels: the control tier never replaced a dead replica (or the fault
// no longer makes it), and the faults tested nothing.
func (r *repairs) check() error {
	if r.listed > 0 && r.moved == 0 {
		return fmt.Errorf("%d repair faults, on replicas holding %d channels in all, repaired none of them away: "+
			"the control tier never replaced a replica", r.events, r.listed)
	}
	return nil
}

// withRepairs sizes the cluster for repair faults: a spare replica, and channelctls that
// repair after repairDeadAfter.
func withRepairs(kinds []verify.Fault, replicas int) (int, []testcluster.Option) {
	if !slices.Contains(kinds, verify.Repair) {
		return replicas, nil
	}
	return max(replicas, verify.MinRepairReplicas), []testcluster.Option{testcluster.ReplaceDeadAfter(repairDeadAfter)}
}
