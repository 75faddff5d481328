package machine

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

var (
	t0      = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	testCfg = Config{HibernateAfter: 2 * time.Minute}
)

// channel is the arbiter record of test channel "c": group 7 on replicas 1, 2, 3, whose stores
// are 101, 202 and 303.
func channel(state arbiterv1.ChannelState, epoch, leader, term uint64) *arbiterv1.Channel {
	return &arbiterv1.Channel{ChannelId: "c", GroupId: 7, Slot: 3, ReplicaNodeIds: []uint64{1, 2, 3},
		LeaderNodeId: leader, LeaderTerm: term, Epoch: epoch, State: state, LastSeq: 40,
		ReplicaStoreIds: map[uint64]uint64{1: 101, 2: 202, 3: 303}}
}

// recordedStores is the store ids of the test channel's record.
func recordedStores() map[uint64]uint64 { return map[uint64]uint64{1: 101, 2: 202, 3: 303} }

func newMachine(t testing.TB, ch *arbiterv1.Channel) *Machine {
	t.Helper()
	m, err := New(ch, testCfg, t0)
	require.NoError(t, err)
	return m
}

// apply is the arbiter's side of a compare-and-set, as the tests' fake arbiter does it.
func apply(ch *arbiterv1.Channel, c *arbiterv1.ChannelChange) *arbiterv1.Channel {
	out := proto.Clone(ch).(*arbiterv1.Channel)
	out.Epoch++
	if c.State != nil {
		out.State = c.GetState()
	}
	if c.LeaderNodeId != nil {
		out.LeaderNodeId = c.GetLeaderNodeId()
	}
	if c.LeaderTerm != nil {
		out.LeaderTerm = c.GetLeaderTerm()
	}
	if c.LastSeq != nil {
		out.LastSeq = c.GetLastSeq()
	}
	if len(c.GetReplicaNodeIds()) > 0 {
		out.ReplicaNodeIds = slices.Clone(c.GetReplicaNodeIds())
		out.NextReplicaNodeIds = nil
	}
	if len(c.GetNextReplicaNodeIds()) > 0 {
		out.NextReplicaNodeIds = slices.Clone(c.GetNextReplicaNodeIds())
	}
	if c.GetClearNextReplicas() {
		out.NextReplicaNodeIds = nil
	}
	// Store ids are merged in; the entries of nodes that left the replica set are dropped.
	stores := map[uint64]uint64{}
	for n, s := range ch.GetReplicaStoreIds() {
		stores[n] = s
	}
	maps.Copy(stores, c.GetReplicaStoreIds())
	maps.DeleteFunc(stores, func(n, _ uint64) bool { return !slices.Contains(out.ReplicaNodeIds, n) })
	out.ReplicaStoreIds = stores
	return out
}

// accepted is the arbiter accepting the CAS the machine has in flight; with none in flight it
// is an accepted result for the next epoch, which the machine must refuse.
func accepted(m *Machine) Event {
	if m.pending == nil {
		ch := m.Channel()
		ch.Epoch++
		return CASResult{Accepted: true, Channel: ch}
	}
	return CASResult{Accepted: true, Channel: apply(m.ch, m.pending)}
}

// st is a replica status at (last term, last index), committed and applied up to commit.
func st(term, index, commit uint64) *replicav1.GroupStatus {
	return &replicav1.GroupStatus{ChannelId: "c", GroupId: 7, Loaded: true, Role: replicav1.Role_ROLE_FOLLOWER,
		Term: term, LastTerm: term, LastIndex: index, Commit: commit, Applied: commit, LastSeq: 40}
}

// leaderSt is node's status as leader in term with followers matching match.
func leaderSt(node, term, index uint64, match map[uint64]uint64) *replicav1.GroupStatus {
	s := st(term, index, index)
	s.Role = replicav1.Role_ROLE_LEADER
	s.LeaderNodeId = node
	s.Progress = []*replicav1.Progress{{NodeId: node, Match: index, Next: index + 1}}
	for _, n := range slices.Sorted(maps.Keys(match)) {
		s.Progress = append(s.Progress, &replicav1.Progress{NodeId: n, Match: match[n], Next: match[n] + 1})
	}
	return s
}

func withActivity(s *replicav1.GroupStatus, at time.Time) *replicav1.GroupStatus {
	s.LastActivityTime = timestamppb.New(at)
	return s
}

// caughtUp is the statuses of a channel at rest: leader 1 in term 5, everyone at index 100.
func caughtUp() map[uint64]*replicav1.GroupStatus {
	return map[uint64]*replicav1.GroupStatus{
		1: leaderSt(1, 5, 100, map[uint64]uint64{2: 100, 3: 100}),
		2: st(5, 100, 100),
		3: st(5, 100, 100),
	}
}

// show renders actions for comparison; a failure's error text is left out (rows check the
// error with errors.Is instead, so that wording can change).
func show(acts []Action) []string {
	out := []string{}
	for _, a := range acts {
		if f, ok := a.(FailWaiters); ok {
			out = append(out, fmt.Sprintf("fail(%s %v)", f.ChannelID, f.Waiters))
			continue
		}
		out = append(out, a.String())
	}
	return out
}

// step feeds ev and requires it accepted, returning the rendered actions.
func step(t testing.TB, m *Machine, ev Event) []string {
	t.Helper()
	acts, err := m.Step(ev)
	require.NoError(t, err, "%T", ev)
	return show(acts)
}

// snapshot is everything a refused event must leave unchanged.
func snapshot(m *Machine) string {
	return fmt.Sprintf("%v/%v epoch=%d waiters=%v pending=%v cand=%d fenced=%v repair=%d->%d store=%d dead=%v",
		m.state, m.phase, m.ch.GetEpoch(), m.waiters, m.pending != nil, m.candidate, m.fenced,
		m.repairDead, m.repairWith, m.repairStore, m.alive())
}
