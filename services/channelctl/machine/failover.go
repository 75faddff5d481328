package machine

import (
	"cmp"
	"slices"
)

// ChannelInfo is what failover planning needs to know of a channel (Machine.Info gives it).
type ChannelInfo struct {
	ID       string
	Replicas []uint64
	// Leader is the serving leader, 0 when the channel is not active.
	Leader uint64
	// Waiters is the number of clients waiting for the channel's leader.
	Waiters int
}

// NodeBatch is one RPC to one replica node covering many channels.
type NodeBatch struct {
	Node     uint64
	Channels []string
}

// FailoverStep is one rate-limited slice of a failover: its channels are re-elected together,
// so each phase of their elections is one RPC per node for all of them.
type FailoverStep struct {
	// Channels in the order their machines should be stepped (waiting clients first).
	Channels []string
	// Status is one position-gathering call (LoadGroups) per surviving replica node.
	Status []NodeBatch
}

// Plan is the failover of the channels a dead node led.
type Plan struct {
	Dead  uint64
	Steps []FailoverStep
}

// PlanFailover plans the re-election of every channel in channels that dead led. Channels with
// waiting clients go first (most waiters first, then by id), because their clients are the
// ones already stalled; the rest follow by id so that the plan is the same on every run. At most
// budget channels go in one step (budget <= 0: all in one) so that the arbiter's and replicas'
// work arrives in bounded slices rather than as a storm, and within a step the work is grouped
// per node: one status call per surviving node, later one campaign call per chosen node (see
// Campaigns). 10,000 channels over 3 nodes are then a few RPCs per step, not 10,000.
//
// Channels the dead node did not lead need no election; the driver still hands them NodeDead so
// that their machines stop counting on the node.
func PlanFailover(dead uint64, channels []ChannelInfo, budget int) Plan {
	var led []ChannelInfo
	for _, c := range channels {
		if c.Leader == dead && dead != 0 {
			led = append(led, c)
		}
	}
	slices.SortFunc(led, func(a, b ChannelInfo) int {
		if c := cmp.Compare(b.Waiters, a.Waiters); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if budget <= 0 {
		budget = max(len(led), 1)
	}
	plan := Plan{Dead: dead}
	for chunk := range slices.Chunk(led, budget) {
		step := FailoverStep{}
		byNode := map[uint64][]string{}
		for _, c := range chunk {
			step.Channels = append(step.Channels, c.ID)
			for _, n := range c.Replicas {
				if n != dead {
					byNode[n] = append(byNode[n], c.ID)
				}
			}
		}
		step.Status = batches(byNode)
		plan.Steps = append(plan.Steps, step)
	}
	return plan
}

// Channels is the number of channels the plan re-elects.
func (p Plan) Channels() int {
	n := 0
	for _, s := range p.Steps {
		n += len(s.Channels)
	}
	return n
}

// StatusRPCs is the number of status calls the plan makes.
func (p Plan) StatusRPCs() int {
	n := 0
	for _, s := range p.Steps {
		n += len(s.Status)
	}
	return n
}

// Campaigns groups the campaign orders of the step's channels by chosen node, one call per
// node; chosen maps channel to candidate (channels without one are skipped).
func (s FailoverStep) Campaigns(chosen map[string]uint64) []NodeBatch {
	byNode := map[uint64][]string{}
	for _, id := range s.Channels {
		if n, ok := chosen[id]; ok && n != 0 {
			byNode[n] = append(byNode[n], id)
		}
	}
	return batches(byNode)
}

func batches(byNode map[uint64][]string) []NodeBatch {
	out := make([]NodeBatch, 0, len(byNode))
	for n, chans := range byNode {
		out = append(out, NodeBatch{Node: n, Channels: chans})
	}
	slices.SortFunc(out, func(a, b NodeBatch) int { return cmp.Compare(a.Node, b.Node) })
	return out
}
