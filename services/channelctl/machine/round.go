package machine

import (
	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Round is the actions of many channels' machines, grouped into the RPCs that carry them out:
// one CompareAndSetChannels for all the CAS changes, and per replica node one call of each kind.
// Grouping here rather than in the driver keeps "a handful of RPCs, not one per channel"
// something the tests can count.
type Round struct {
	CAS      []*arbiterv1.ChannelChange
	Load     map[uint64][]LoadGroups
	Query    map[uint64][]QueryPositions
	Confirm  map[uint64][]ConfirmLeader
	Campaign map[uint64][]Campaign
	// Transfer is keyed by the leader that hands over.
	Transfer map[uint64][]TransferLeader
	Unload   map[uint64][]Unload
	// Change is keyed by the leader that changes its group.
	Change map[uint64][]ChangeReplicas
	Answer []AnswerWaiters
	Fail   []FailWaiters
}

// Batch groups actions (from any number of machines) into a Round.
func Batch(actions []Action) Round {
	r := Round{
		Load: map[uint64][]LoadGroups{}, Query: map[uint64][]QueryPositions{}, Confirm: map[uint64][]ConfirmLeader{},
		Campaign: map[uint64][]Campaign{}, Transfer: map[uint64][]TransferLeader{}, Unload: map[uint64][]Unload{},
		Change: map[uint64][]ChangeReplicas{},
	}
	for _, a := range actions {
		switch a := a.(type) {
		case CommitCAS:
			r.CAS = append(r.CAS, a.Change)
		case LoadGroups:
			for _, n := range a.Nodes {
				r.Load[n] = append(r.Load[n], a)
			}
		case QueryPositions:
			for _, n := range a.Nodes {
				r.Query[n] = append(r.Query[n], a)
			}
		case ConfirmLeader:
			r.Confirm[a.Node] = append(r.Confirm[a.Node], a)
		case Campaign:
			r.Campaign[a.Node] = append(r.Campaign[a.Node], a)
		case TransferLeader:
			r.Transfer[a.From] = append(r.Transfer[a.From], a)
		case Unload:
			for _, n := range a.Nodes {
				r.Unload[n] = append(r.Unload[n], a)
			}
		case ChangeReplicas:
			r.Change[a.Leader] = append(r.Change[a.Leader], a)
		case AnswerWaiters:
			r.Answer = append(r.Answer, a)
		case FailWaiters:
			r.Fail = append(r.Fail, a)
		}
	}
	return r
}

// RPCs is the number of remote calls the round takes. Position queries and leader
// confirmations to the same node share one GetGroupStatus call.
func (r Round) RPCs() int {
	n := len(r.Load) + len(r.Campaign) + len(r.Transfer) + len(r.Unload)
	if len(r.CAS) > 0 {
		n++
	}
	status := map[uint64]bool{}
	for node := range r.Query {
		status[node] = true
	}
	for node := range r.Confirm {
		status[node] = true
	}
	return n + len(status)
}
