package machine

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

func chanID(i int) string { return fmt.Sprintf("ch%05d", i) }

func TestPlanFailover10000Channels(t *testing.T) {
	// 10,000 channels over nodes 1-3, leaders spread i%3+1: node 1 led 3,334 of them.
	var infos []ChannelInfo
	waiting := map[string]int{chanID(3): 5, chanID(9999): 2, chanID(5001): 1, chanID(1): 9 /* led by 2 */}
	for i := range 10000 {
		infos = append(infos, ChannelInfo{ID: chanID(i), Replicas: []uint64{1, 2, 3}, Leader: uint64(i%3 + 1), Waiters: waiting[chanID(i)]})
	}
	plan := PlanFailover(1, infos, 1000)

	require.Equal(t, 3334, plan.Channels())
	var sizes []int
	for _, s := range plan.Steps {
		sizes = append(sizes, len(s.Channels))
	}
	require.Equal(t, []int{1000, 1000, 1000, 334}, sizes)
	require.Equal(t, []string{chanID(3), chanID(9999), chanID(5001), chanID(0), chanID(6)}, plan.Steps[0].Channels[:5],
		"channels with waiting clients first, most waiters first, then by id")
	require.NotContains(t, plan.Steps[0].Channels, chanID(1), "a channel node 1 did not lead needs no election")

	// Status: one call per surviving node per step, each covering the whole step. The machines
	// carry these out as LoadGroups (the election's gather), not GetGroupStatus; the count is
	// the same (TestFailover10000ChannelsInAHandfulOfRPCs checks the loads against the plan).
	for _, s := range plan.Steps {
		require.Len(t, s.Status, 2)
		require.Equal(t, uint64(2), s.Status[0].Node)
		require.Equal(t, uint64(3), s.Status[1].Node)
		require.Equal(t, s.Channels, s.Status[0].Channels)
		require.Equal(t, s.Channels, s.Status[1].Channels)
	}
	require.Equal(t, 8, plan.StatusRPCs())

	// Campaigns: choose from positions where node 3 is ahead on every fifth channel and the two
	// are equal otherwise (the preference then alternates by channel number).
	campaigns := 0
	chosen := map[string]uint64{}
	for _, s := range plan.Steps {
		picks := map[string]uint64{}
		for _, id := range s.Channels {
			var i int
			_, err := fmt.Sscanf(id, "ch%05d", &i)
			require.NoError(t, err)
			p := map[uint64]Position{2: pos(5, 100), 3: pos(5, 100)}
			if i%5 == 0 {
				p[3] = pos(5, 101)
			}
			c, err := ChooseLeader([]uint64{1, 2, 3}, p, set(2, 3), uint64(2+i%2))
			require.NoError(t, err)
			picks[id] = c
			chosen[id] = c
		}
		batches := s.Campaigns(picks)
		require.Len(t, batches, 2)
		require.Equal(t, len(s.Channels), len(batches[0].Channels)+len(batches[1].Channels))
		campaigns += len(batches)
	}
	require.Equal(t, 8, campaigns)
	require.Equal(t, 16, plan.StatusRPCs()+campaigns, "3,334 channels fail over in 16 node RPCs: 8 loads, 8 campaigns")
	require.Equal(t, uint64(3), chosen[chanID(15)], "node 3 is ahead on channel 15")
	require.Equal(t, uint64(3), chosen[chanID(3)])
	require.Equal(t, uint64(2), chosen[chanID(6)])
}

func TestPlanFailoverBudgets(t *testing.T) {
	infos := []ChannelInfo{
		{ID: "b", Replicas: []uint64{1, 2, 3}, Leader: 1},
		{ID: "a", Replicas: []uint64{1, 2, 4}, Leader: 1},
		{ID: "c", Replicas: []uint64{1, 3, 4}, Leader: 3},
		{ID: "d", Replicas: []uint64{2, 3, 4}, Leader: 0},
		{ID: "e", Replicas: []uint64{1, 3, 4}, Leader: 1, Waiters: 1},
	}
	all := PlanFailover(1, infos, 0)
	require.Len(t, all.Steps, 1)
	require.Equal(t, []string{"e", "a", "b"}, all.Steps[0].Channels)
	require.Equal(t, []NodeBatch{{2, []string{"a", "b"}}, {3, []string{"e", "b"}}, {4, []string{"e", "a"}}}, all.Steps[0].Status)

	two := PlanFailover(1, infos, 2)
	require.Len(t, two.Steps, 2)
	require.Equal(t, []string{"e", "a"}, two.Steps[0].Channels)
	require.Equal(t, []string{"b"}, two.Steps[1].Channels)
	require.Equal(t, 3+2, two.StatusRPCs())

	require.Empty(t, PlanFailover(9, infos, 2).Steps, "a node that led nothing plans nothing")
	require.Empty(t, PlanFailover(0, infos, 2).Steps, "node 0 is no node")
	require.Empty(t, all.Steps[0].Campaigns(map[string]uint64{"zz": 2}))
}

// fakeCluster carries out rounds against an in-memory arbiter and replicas, answering every
// call as the real ones would when nothing fails.
type fakeCluster struct {
	t        testing.TB
	records  map[string]*arbiterv1.Channel
	statuses map[string]map[uint64]*replicav1.GroupStatus
	dead     map[uint64]bool
	answered map[string]AnswerWaiters
	failed   []FailWaiters
}

func (c *fakeCluster) run(r Round) map[string][]Event {
	out := map[string][]Event{}
	for _, ch := range r.CAS {
		rec := c.records[ch.GetChannelId()]
		if rec.GetEpoch() != ch.GetExpectedEpoch() {
			out[ch.GetChannelId()] = append(out[ch.GetChannelId()], CASResult{Refusal: RefusedStaleEpoch, Channel: proto.Clone(rec).(*arbiterv1.Channel)})
			continue
		}
		c.records[ch.GetChannelId()] = apply(rec, ch)
		out[ch.GetChannelId()] = append(out[ch.GetChannelId()], CASResult{Accepted: true, Channel: proto.Clone(c.records[ch.GetChannelId()]).(*arbiterv1.Channel)})
	}
	// A load brings the group into memory where it is not (a replica that restarted) and
	// answers with the status either way, as the replicas' LoadGroups does.
	reports := map[string]*GroupsLoaded{}
	for node, ls := range r.Load {
		for _, l := range ls {
			rec := c.records[l.ChannelID]
			require.Equal(c.t, rec.GetGroupId(), l.GroupID, "%s: load of another group", l.ChannelID)
			require.Equal(c.t, rec.GetReplicaNodeIds(), l.Replicas, "%s: the load names the whole replica set as voters", l.ChannelID)
			require.Equal(c.t, rec.GetEpoch(), l.Epoch, "%s: the load carries the current epoch", l.ChannelID)
			p := reports[l.ChannelID]
			if p == nil {
				p = &GroupsLoaded{Epoch: l.Epoch, Statuses: map[uint64]*replicav1.GroupStatus{}}
				reports[l.ChannelID] = p
			}
			if !c.dead[node] {
				s := c.statuses[l.ChannelID][node]
				s.Loaded = true
				p.Statuses[node] = proto.Clone(s).(*replicav1.GroupStatus)
			}
		}
	}
	for id, p := range reports {
		out[id] = append(out[id], *p)
	}
	for node, cs := range r.Campaign {
		for _, a := range cs {
			var term uint64
			for _, s := range c.statuses[a.ChannelID] {
				term = max(term, s.GetTerm())
			}
			s := c.statuses[a.ChannelID][node]
			require.True(c.t, s.GetLoaded(), "%s: campaign on node %d, which has not loaded the group", a.ChannelID, node)
			s.Role, s.Term, s.LeaderNodeId = replicav1.Role_ROLE_LEADER, term+1, node
			out[a.ChannelID] = append(out[a.ChannelID], CampaignResult{Node: node, Epoch: a.Epoch, Leader: true, Term: term + 1})
		}
	}
	for node, cs := range r.Confirm {
		for _, a := range cs {
			out[a.ChannelID] = append(out[a.ChannelID], ConfirmResult{Node: node, Epoch: a.Epoch,
				Status: proto.Clone(c.statuses[a.ChannelID][node]).(*replicav1.GroupStatus)})
		}
	}
	// A failover's statuses come from the loads; nothing queries positions.
	require.Empty(c.t, r.Query)
	require.Empty(c.t, r.Transfer)
	require.Empty(c.t, r.Unload)
	for _, a := range r.Answer {
		c.answered[a.ChannelID] = a
	}
	c.failed = append(c.failed, r.Fail...)
	return out
}

// TestFailover10000ChannelsInAHandfulOfRPCs kills the node leading 10,000 channels and drives
// every channel's machine through its election, batching each round over all channels of a
// plan step: 9 RPCs per step of 2,500 channels, 36 in all. The positions come from LoadGroups
// on the survivors (which also reloads the group on a survivor that restarted), so the plan's
// "status" batches are carried out as LoadGroups calls: one per surviving node per step, as
// many as the GetGroupStatus calls they replace.
func TestFailover10000ChannelsInAHandfulOfRPCs(t *testing.T) {
	const total = 10000
	cluster := &fakeCluster{t: t, records: map[string]*arbiterv1.Channel{}, statuses: map[string]map[uint64]*replicav1.GroupStatus{},
		dead: map[uint64]bool{}, answered: map[string]AnswerWaiters{}}
	machines := map[string]*Machine{}
	for i := range total {
		id := chanID(i)
		ch := &arbiterv1.Channel{ChannelId: id, GroupId: uint64(i + 1), ReplicaNodeIds: []uint64{1, 2, 3}, LeaderNodeId: 1,
			LeaderTerm: 5, Epoch: 10, State: stateActive}
		cluster.records[id] = ch
		cluster.statuses[id] = map[uint64]*replicav1.GroupStatus{1: leaderSt(1, 5, 100, nil), 2: st(5, 100, 100), 3: st(5, 100, 100)}
		if i%7 == 0 {
			cluster.statuses[id][3] = st(5, 100, 99) // committed less, same log: still eligible
		}
		if i%5 == 0 {
			cluster.statuses[id][2] = st(5, 98, 98) // behind: must never be chosen
		}
		if i%11 == 0 {
			cluster.statuses[id][3].Loaded = false // node 3 restarted and has not reloaded it yet
		}
		machines[id] = newMachine(t, ch)
	}
	// Clients of ten channels were refused by the dying leader and asked again.
	var waiting []string
	for i := total - 10; i < total; i++ {
		id := chanID(i)
		acts, err := machines[id].Step(Resolve{Waiter: uint64(i), At: t0, StaleLeader: 1})
		require.NoError(t, err)
		require.Equal(t, []string{fmt.Sprintf("confirm(%s@10 on 1 term>=5)", id)}, show(acts))
		waiting = append(waiting, id)
	}

	cluster.dead[1] = true
	var infos []ChannelInfo
	for _, id := range slices.Sorted(maps.Keys(machines)) {
		infos = append(infos, machines[id].Info())
	}
	plan := PlanFailover(1, infos, 2500)
	require.Len(t, plan.Steps, 4)
	require.Equal(t, waiting, slices.Sorted(slices.Values(plan.Steps[0].Channels[:10])))

	rpcs := 0
	for si, s := range plan.Steps {
		var acts []Action
		for _, id := range s.Channels {
			a, err := machines[id].Step(NodeDead{Node: 1})
			require.NoError(t, err)
			acts = append(acts, a...)
		}
		stepRPCs, loadRounds := 0, 0
		for len(acts) > 0 {
			r := Batch(acts)
			stepRPCs += r.RPCs()
			for node, ls := range r.Load {
				require.NotEqual(t, uint64(1), node, "no call to the dead node")
				require.Len(t, ls, len(s.Channels))
			}
			if len(r.Load) > 0 {
				// The loads are the plan's status batches: per surviving node, the step's channels.
				var loads []NodeBatch
				for _, node := range slices.Sorted(maps.Keys(r.Load)) {
					b := NodeBatch{Node: node}
					for _, l := range r.Load[node] {
						b.Channels = append(b.Channels, l.ChannelID)
					}
					slices.Sort(b.Channels)
					loads = append(loads, b)
				}
				var want []NodeBatch
				for _, b := range s.Status {
					want = append(want, NodeBatch{Node: b.Node, Channels: slices.Sorted(slices.Values(b.Channels))})
				}
				require.Equal(t, want, loads, "step %d", si)
				loadRounds++
			}
			events := cluster.run(r)
			acts = nil
			for _, id := range slices.Sorted(maps.Keys(events)) {
				for _, ev := range events[id] {
					a, err := machines[id].Step(ev)
					require.NoError(t, err, "%s: %T", id, ev)
					acts = append(acts, a...)
				}
			}
		}
		// Rounds in lockstep, so no two kinds share a round: claim CAS (1), LoadGroups on 2 and 3
		// (2, formerly the GetGroupStatus position queries), decide CAS (1), Campaign on 2 and 3
		// (2), GetGroupStatus confirmations on 2 and 3 (2), settle CAS (1).
		require.Equal(t, 9, stepRPCs, "step %d: claim CAS, 2 load, decide CAS, 2 campaign, 2 confirm, settle CAS", si)
		require.Equal(t, 1, loadRounds, "step %d: one round of loads", si)
		rpcs += stepRPCs
		if si == 0 {
			for _, id := range waiting {
				require.Contains(t, cluster.answered, id, "waiting clients are answered in the first step")
			}
		}
	}
	require.Equal(t, 36, rpcs, "4 steps of 9: 12 CAS, 8 LoadGroups, 8 Campaign, 8 GetGroupStatus")
	require.Empty(t, cluster.failed)

	leaders := map[uint64]int{}
	for i := range total {
		id := chanID(i)
		m := machines[id]
		rec := m.Channel()
		require.Equal(t, stateActive, m.State(), id)
		require.Equal(t, rec.GetLeaderNodeId(), cluster.records[id].GetLeaderNodeId(), id)
		require.Equal(t, uint64(13), rec.GetEpoch(), "%s: claim, decide, settle", id)
		require.Equal(t, uint64(6), rec.GetLeaderTerm(), id)
		if i%5 == 0 {
			require.Equal(t, uint64(3), rec.GetLeaderNodeId(), "%s: node 2 is behind and must not lead", id)
		}
		leaders[rec.GetLeaderNodeId()]++
		for _, n := range []uint64{2, 3} {
			require.True(t, cluster.statuses[id][n].GetLoaded(), "%s: the failover loaded the group on survivor %d", id, n)
		}
	}
	require.Equal(t, map[uint64]int{2: 4000, 3: 6000}, leaders,
		"equal survivors split by group id; node 3 also takes the channels node 2 lags on")
	for _, id := range waiting {
		require.Equal(t, machines[id].Channel().GetLeaderNodeId(), cluster.answered[id].Leader)
	}
}

func TestBatchCountsRPCs(t *testing.T) {
	acts := []Action{
		CommitCAS{Change: &arbiterv1.ChannelChange{ChannelId: "a"}},
		CommitCAS{Change: &arbiterv1.ChannelChange{ChannelId: "b"}},
		QueryPositions{ChannelID: "a", Nodes: []uint64{2, 3}},
		ConfirmLeader{ChannelID: "b", Node: 3},
		ConfirmLeader{ChannelID: "c", Node: 4},
		LoadGroups{ChannelID: "d", Nodes: []uint64{1, 2, 3}},
		Campaign{ChannelID: "e", Node: 2},
		Campaign{ChannelID: "f", Node: 2},
		TransferLeader{ChannelID: "g", From: 1, To: 2},
		Unload{ChannelID: "h", Nodes: []uint64{1, 2}},
		AnswerWaiters{ChannelID: "i"},
		FailWaiters{ChannelID: "j"},
	}
	r := Batch(acts)
	require.Len(t, r.CAS, 2)
	require.Len(t, r.Campaign[2], 2)
	require.Len(t, r.Answer, 1)
	require.Len(t, r.Fail, 1)
	// 1 CAS + status on 2, 3, 4 (node 3's query and confirmation share a call) + load on 1, 2, 3
	// + campaign on 2 + transfer from 1 + unload on 1, 2.
	require.Equal(t, 1+3+3+1+1+2, r.RPCs())
	require.Zero(t, Batch(nil).RPCs())
}
