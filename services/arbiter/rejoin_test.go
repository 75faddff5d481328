package arbiter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// status returns member id's view of the metadata group; ok is false while it has none (not
// loaded, or failed).
func (m *members) status(id uint64) (multiraft.Status, bool) {
	s := m.svcs[id]
	if s == nil {
		return multiraft.Status{}, false
	}
	st, err := s.host.Status(context.Background(), metaGroup)
	return st, err == nil
}

// requireSameState waits until member id is a voter off probation holding the same FSM as
// member ref.
func (m *members) requireSameState(id, ref uint64) {
	m.t.Helper()
	var last string
	ok := assertEventually(func() bool {
		st, ok := m.status(id)
		if !ok {
			last = "metadata group not running"
			return false
		}
		if st.OnProbation || !slices.Contains(st.ConfState.GetVoters(), id) {
			last = fmt.Sprintf("probation %t, configuration %v", st.OnProbation, st.ConfState)
			return false
		}
		want, err1 := m.svcs[ref].FSM().Snapshot()
		got, err2 := m.svcs[id].FSM().Snapshot()
		if err1 != nil || err2 != nil || string(got) != string(want) {
			last = fmt.Sprintf("revision %d, member %d at %d", m.svcs[id].FSM().Revision(), ref, m.svcs[ref].FSM().Revision())
			return false
		}
		return true
	}, 20*time.Second)
	require.True(m.t, ok, "member %d: not a voter with member %d's state: %s", id, ref, last)
}

func assertEventually(cond func() bool, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

func createChannels(t *testing.T, c interface {
	CreateChannel(context.Context, *arbiterv1.CreateChannelRequest) (*arbiterv1.CreateChannelResponse, error)
}, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		_, err := c.CreateChannel(tctx(t), &arbiterv1.CreateChannelRequest{ChannelId: id, ReplicationFactor: 3})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

// Issue 12, item 3: an arbiter member whose data directory was wiped comes back with a new,
// empty store. It must not bootstrap the metadata group as a voter (it forgot its vote and its
// log; before this, the leader's first heartbeat failed its group, commit index beyond its
// log): it rejoins on probation, the leader re-adds it as a learner with its new store,
// catches it up and makes it a voter, and then it counts in elections again.
func TestWipedMemberRejoinsAndKeepsTheMetadata(t *testing.T) {
	m := startMembers(t, 3, longLeases) // the replicas never heartbeat
	c := m.client()
	leader := m.leader()
	registerReplicas(t, c, 1, 2, 3)
	channels := createChannels(t, c, "before", 60) // past SnapshotEntries: the leader compacts
	for id := range m.peers {
		m.requireSameState(id, leader)
	}

	wiped := uint64(1)
	if wiped == leader {
		wiped = 2
	}
	oldStore := m.svcs[wiped].store.StoreID()
	m.stop(wiped)
	require.NoError(t, os.RemoveAll(m.dirs[wiped]))
	channels = append(channels, createChannels(t, c, "while-away", 5)...)
	m.start(wiped)
	require.NotEqual(t, oldStore, m.svcs[wiped].store.StoreID(), "a wiped directory makes a new store")
	m.requireSameState(wiped, leader)
	require.Equal(t, leader, m.leader(), "the rejoin needs no election")
	require.True(t, assertEventually(func() bool {
		_, err := os.Stat(filepath.Join(m.dirs[wiped], rejoinMarker))
		return errors.Is(err, os.ErrNotExist)
	}, 10*time.Second), "the rejoin marker goes once the member is a voter again")
	require.True(t, assertEventually(func() bool { return m.svcs[wiped].ready(context.Background()) == nil }, 10*time.Second),
		"ready once a voter again")

	// The cluster keeps working and the rejoined member follows.
	channels = append(channels, createChannels(t, c, "after", 5)...)
	m.requireSameState(wiped, leader)

	// Without the old leader, the two left (one of them the rejoined member, whose vote is
	// needed) elect a leader, which holds all the metadata and takes writes.
	m.stop(leader)
	second := m.leader()
	channels = append(channels, createChannels(t, c, "last", 3)...)
	for id := range m.svcs {
		m.requireSameState(id, second)
		for _, ch := range channels {
			_, ok := m.svcs[id].FSM().Channel(ch)
			require.True(t, ok, "member %d lost channel %s", id, ch)
		}
		require.Len(t, m.svcs[id].FSM().Nodes(), 3)
	}
}

// A member restarted in the middle of a rejoin (the marker is still in its data directory)
// has part of the log in its store; it loads on probation again, whatever its store holds, and
// the leader gives its place to the store once more before it votes.
func TestRestartInTheMiddleOfARejoinStaysOnProbation(t *testing.T) {
	m := startMembers(t, 3, longLeases)
	c := m.client()
	leader := m.leader()
	registerReplicas(t, c, 1, 2, 3)
	createChannels(t, c, "ch", 10)
	member := uint64(1)
	if member == leader {
		member = 2
	}
	m.requireSameState(member, leader)
	m.stop(member)
	// The member may have rejoined as the cluster formed (it found the others elected): the
	// leader forgets that, so what it records below is this rejoin's.
	m.svcs[leader].rejoins.forget(member)
	require.NoError(t, os.WriteFile(filepath.Join(m.dirs[member], rejoinMarker), nil, 0o640))
	m.start(member)
	m.requireSameState(member, leader)
	// The member may apply its promotion before the leader's proposal returns and records it.
	var slot rejoinSlot
	require.True(t, assertEventually(func() bool {
		var ok bool
		slot, ok = m.svcs[leader].rejoins.slot(member)
		return ok && slot.voter
	}, 10*time.Second), "the leader re-added the member: %+v", slot)
	require.Equal(t, multiraft.StoreToken(m.svcs[member].store.StoreID()), slot.token)
	createChannels(t, c, "more", 3)
	m.requireSameState(member, leader)
}

// RejoinMember on its own: what it refuses, that it waits while another voter is out of
// contact (the removal would leave no quorum), and that a repeated rejoin changes nothing.
func TestRejoinMemberOnTheLeader(t *testing.T) {
	m := startMembers(t, 3, longLeases)
	leader := m.leader()
	var followers []uint64
	for id := range m.peers {
		if id != leader {
			followers = append(followers, id)
		}
	}
	slices.Sort(followers)
	member, other := followers[0], followers[1]
	call := func(at, member, store uint64) (*arbiterv1.RejoinMemberResponse, error) {
		conn, err := grpc.NewClient(m.peers[at], grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		defer conn.Close()
		return arbiterv1.NewArbiterServiceClient(conn).RejoinMember(tctx(t), &arbiterv1.RejoinMemberRequest{MemberId: member, StoreId: store})
	}
	_, err := call(leader, member, 0)
	require.Equal(t, codes.InvalidArgument, status.Code(err), err)
	_, err = call(leader, 9, 42)
	require.Equal(t, codes.InvalidArgument, status.Code(err), err)
	_, err = call(leader, leader, 42)
	require.Equal(t, codes.InvalidArgument, status.Code(err), err)
	_, err = call(member, other, 42)
	require.Equal(t, codes.Unavailable, status.Code(err), err)
	require.NotNil(t, notLeaderDetail(err), "a follower names the leader: %v", err)
	require.Equal(t, leader, notLeaderDetail(err).GetLeaderId())

	m.stop(other)
	time.Sleep(300 * time.Millisecond) // past an election timeout (100 ms) without its answers
	_, err = call(leader, member, 42)
	require.Equal(t, codes.Unavailable, status.Code(err), err)
	require.Contains(t, err.Error(), "without a quorum")
	st, _ := m.status(leader)
	require.Contains(t, st.ConfState.GetVoters(), member, "nothing changed")

	m.start(other)
	var resp *arbiterv1.RejoinMemberResponse
	require.True(t, assertEventually(func() bool {
		resp, err = call(leader, member, 42)
		return err == nil
	}, 20*time.Second), "rejoin after the other voter is back: %v", err)
	st, _ = m.status(leader)
	require.ElementsMatch(t, []uint64{1, 2, 3}, st.ConfState.GetVoters())
	require.Empty(t, st.ConfState.GetLearners())
	again, err := call(leader, member, 42)
	require.NoError(t, err)
	require.Equal(t, resp.GetIndex(), again.GetIndex(), "a repeated rejoin finds it done")
	st2, _ := m.status(leader)
	require.Equal(t, st.ConfState.String(), st2.ConfState.String())
}

// A new cluster forms when its members start one after another: the first waits (it serves
// GetMemberState, is not ready and bootstraps nothing) until a majority answered, all empty;
// a member that starts after an election finds the cluster and joins it.
func TestNewClusterFormsWithMembersStartingOneByOne(t *testing.T) {
	m := newMembers(t, 3, longLeases)
	m.start(1)
	time.Sleep(time.Second)
	require.False(t, m.svcs[1].loaded.Load(), "one member of three bootstraps nothing alone")
	require.Error(t, m.svcs[1].ready(context.Background()))
	conn, err := grpc.NewClient(m.peers[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	first := arbiterv1.NewArbiterServiceClient(conn)
	st, err := first.GetMemberState(tctx(t), &arbiterv1.GetMemberStateRequest{})
	require.NoError(t, err, "a member answers GetMemberState before its group is loaded")
	require.False(t, st.GetLoaded())
	require.Zero(t, st.GetTerm())
	require.Zero(t, st.GetLastIndex())
	require.Equal(t, m.svcs[1].store.StoreID(), st.GetStoreId())
	_, err = first.GetChannel(tctx(t), &arbiterv1.GetChannelRequest{ChannelId: "any"})
	require.Equal(t, codes.Unavailable, status.Code(err), "no reads from an empty state machine: %v", err)
	m.start(2)
	leader := m.leader()
	c := m.client()
	registerReplicas(t, c, 1, 2, 3)
	createChannels(t, c, "ch", 5)
	time.Sleep(500 * time.Millisecond)
	m.start(3)
	for id := range m.peers {
		m.requireSameState(id, leader)
	}
	for id := range m.peers {
		require.True(t, assertEventually(func() bool { return m.svcs[id].ready(context.Background()) == nil }, 10*time.Second),
			"member %d ready", id)
	}
	m.stop(leader)
	next := m.leader()
	createChannels(t, c, "after", 3)
	for id := range m.svcs {
		m.requireSameState(id, next)
	}
}

// The case no rule reading only the members' stores can decide (join.go): a cluster of three
// that ran on members 1 and 2 only; member 2 is down and member 1's disk is replaced. With
// --initial-cluster-state=existing, member 1 does not bootstrap with the never-started member
// 3 (both empty: a majority that looks new); it waits, and once member 2 is back it rejoins,
// and every member holds the metadata created before.
func TestExistingMemberNeverBootstrapsAnotherCluster(t *testing.T) {
	m := newMembers(t, 3, longLeases)
	m.start(1)
	m.start(2)
	leader := m.leader()
	c := m.client()
	registerReplicas(t, c, 1, 2, 3)
	channels := createChannels(t, c, "before", 5)
	m.requireSameState(1, leader)
	m.requireSameState(2, leader)
	m.stop(2)
	m.stop(1)
	require.NoError(t, os.RemoveAll(m.dirs[1]))

	m.existing = map[uint64]bool{1: true}
	m.start(1)
	m.start(3)
	// Long enough for member 1 to have seen member 3 empty many times over (askEvery).
	time.Sleep(10 * askEvery)
	require.False(t, m.svcs[1].loaded.Load(), "member 1 bootstrapped a new cluster with the never-started member 3")
	require.Error(t, m.svcs[1].ready(context.Background()))

	m.existing = nil
	m.start(2)
	leader = m.leader()
	for id := range m.svcs {
		m.requireSameState(id, leader)
		for _, ch := range channels {
			_, ok := m.svcs[id].FSM().Channel(ch)
			require.True(t, ok, "member %d lacks channel %s", id, ch)
		}
	}
	require.True(t, assertEventually(func() bool { return m.svcs[1].ready(context.Background()) == nil }, 20*time.Second),
		"member 1 ready once a voter again")
}

func TestDecideJoin(t *testing.T) {
	empty := &memberAnswer{}
	booted := &memberAnswer{Term: 1, LastIndex: 1, Loaded: true}
	for _, tc := range []struct {
		name       string
		answers    []*memberAnswer
		members    int
		existing   bool
		rejoin, ok bool
	}{
		{"nobody answered", nil, 3, false, false, false},
		{"one empty of three: with this one a majority", []*memberAnswer{empty}, 3, false, false, true},
		{"a bootstrapped member that never elected counts as empty", []*memberAnswer{booted}, 3, false, false, true},
		{"one of five is no majority", []*memberAnswer{empty}, 5, false, false, false},
		{"two of five with this one is a majority", []*memberAnswer{empty, booted}, 5, false, false, true},
		{"a term past the bootstrap", []*memberAnswer{{Term: 2, LastIndex: 1}}, 3, false, true, true},
		{"a log past the bootstrap", []*memberAnswer{{Term: 1, LastIndex: 2}}, 5, false, true, true},
		{"a member that is rejoining saw the cluster", []*memberAnswer{{OnProbation: true}}, 3, false, true, true},
		{"one holder outweighs empty majorities", []*memberAnswer{empty, empty, {Term: 7, LastIndex: 90}}, 5, false, true, true},
		{"existing: an empty majority is no new cluster", []*memberAnswer{empty, booted}, 3, true, false, false},
		{"existing: a holder is rejoined", []*memberAnswer{empty, {Term: 3, LastIndex: 9}}, 3, true, true, true},
	} {
		rejoin, ok := decideJoin(tc.answers, tc.members, tc.existing)
		require.Equal(t, tc.rejoin, rejoin, tc.name)
		require.Equal(t, tc.ok, ok, tc.name)
	}
}
