package machine

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// transition is one row: from a fixture, one event, the state after, the actions, the error.
type transition struct {
	from    string
	ev      Event
	evf     func(m *Machine) Event // when the event depends on the machine (CAS results)
	state   arbiterv1.ChannelState
	acts    []string
	err     error
	waiters *int
	// ends marks an error that concludes work in flight (a check says no, an election stalls,
	// a CAS is refused): the machine moves on. Every other error is a refusal and must leave
	// the machine exactly as it was.
	ends bool
}

var errTest = errors.New("test: unreachable")

func n(i int) *int { return &i }

// statuses builds a status map from node -> (term, index), committed and applied.
func statuses(pos map[uint64][2]uint64) map[uint64]*replicav1.GroupStatus {
	out := map[uint64]*replicav1.GroupStatus{}
	for node, p := range pos {
		out[node] = st(p[0], p[1], p[1])
	}
	return out
}

var transitions = []transition{
	// hibernated: only activation leaves it; nothing else applies.
	{from: "hibernated", ev: Resolve{Waiter: 7, At: t0}, state: stateActivating, acts: []string{"cas(c@10 state=ACTIVATING leader=0)"}, waiters: n(1)},
	{from: "hibernated", ev: CancelWaiter{Waiter: 7}, state: stateHibernated},
	{from: "hibernated", ev: Activate{}, state: stateActivating, acts: []string{"cas(c@10 state=ACTIVATING leader=0)"}, waiters: n(0)},
	{from: "hibernated", ev: Hibernate{}, state: stateHibernated, err: ErrNotActive},
	{from: "hibernated", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateHibernated, err: ErrNotActive},
	{from: "hibernated", ev: MoveLeader{Target: 2}, state: stateHibernated, err: ErrNotActive},
	{from: "hibernated", ev: NodeDead{Node: 1}, state: stateHibernated},
	{from: "hibernated", ev: NodeAlive{Node: 1}, state: stateHibernated},
	{from: "hibernated", ev: Retry{}, state: stateHibernated},
	{from: "hibernated", evf: accepted, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "hibernated", ev: GroupsLoaded{Epoch: 10}, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "hibernated", ev: PositionsReported{Epoch: 10}, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "hibernated", ev: CampaignResult{Node: 1, Epoch: 10, Leader: true, Term: 6}, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "hibernated", ev: TransferResult{Target: 2, Epoch: 10}, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "hibernated", ev: ConfirmResult{Node: 1, Epoch: 10}, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "hibernated", ev: UnloadResult{Epoch: 10}, state: stateHibernated, err: ErrUnexpectedEvent},

	// activating, loads in flight under epoch 11, waiter 1 queued.
	{from: "activating/gather", ev: Resolve{Waiter: 8, At: t0}, state: stateActivating, waiters: n(2)},
	{from: "activating/gather", ev: CancelWaiter{Waiter: 1}, state: stateActivating, waiters: n(0)},
	{from: "activating/gather", ev: Activate{}, state: stateActivating, waiters: n(1)},
	{from: "activating/gather", ev: Hibernate{}, state: stateActivating, err: ErrNotActive},
	{from: "activating/gather", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateActivating, err: ErrNotActive},
	{from: "activating/gather", ev: MoveLeader{Target: 2}, state: stateActivating, err: ErrNotActive},
	{from: "activating/gather", ev: NodeDead{Node: 3}, state: stateActivating},
	{from: "activating/gather", ev: NodeAlive{Node: 3}, state: stateActivating},
	{from: "activating/gather", ev: Retry{}, state: stateActivating, err: ErrBusy},
	{from: "activating/gather", evf: accepted, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "activating/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{1: {5, 100}, 2: {5, 100}, 3: {5, 100}})},
		state: stateActivating, acts: []string{"cas(c@11 leader=1)"}},
	{from: "activating/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{1: {5, 99}, 2: {5, 100}, 3: {5, 100}})},
		state: stateActivating, acts: []string{"cas(c@11 leader=2)"}},
	{from: "activating/gather", ev: GroupsLoaded{Epoch: 10, Statuses: statuses(map[uint64][2]uint64{1: {5, 100}, 2: {5, 100}})},
		state: stateActivating, err: ErrStaleEpoch},
	{from: "activating/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {5, 100}}),
		Errors: map[uint64]error{1: errTest, 3: errTest}},
		state: stateActivating, acts: []string{"fail(c [1])"}, err: ErrNoMajority, waiters: n(0), ends: true},
	{from: "activating/gather", ev: PositionsReported{Epoch: 11, Statuses: caughtUp()}, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "activating/gather", ev: CampaignResult{Node: 1, Epoch: 11, Leader: true, Term: 6}, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "activating/gather", ev: TransferResult{Target: 2, Epoch: 11}, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "activating/gather", ev: ConfirmResult{Node: 1, Epoch: 11}, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "activating/gather", ev: UnloadResult{Epoch: 11}, state: stateActivating, err: ErrUnexpectedEvent},
	// activating, the other phases.
	{from: "activating/claim", evf: accepted, state: stateActivating, acts: []string{"load(c@11 on [1 2 3])"}},
	{from: "activating/claim", evf: func(m *Machine) Event { return CASResult{Accepted: true, Channel: channel(stateActivating, 13, 0, 5)} },
		state: stateActivating, err: ErrStaleEpoch},
	{from: "activating/claim", ev: refusedStale(channel(stateActive, 11, 2, 6)),
		state: stateActive, acts: []string{"answer(c [1] leader=2 term=6 epoch=11)"}, err: ErrCASRefused, waiters: n(0), ends: true},
	{from: "activating/claim", ev: refusedStale(channel(stateHibernated, 11, 2, 6)),
		state: stateHibernated, acts: []string{"fail(c [1])"}, err: ErrCASRefused, waiters: n(0), ends: true},
	{from: "activating/claim", ev: refusedNotOwner(channel(stateHibernated, 10, 1, 5)),
		state: stateHibernated, acts: []string{"fail(c [1])"}, err: ErrNotOwner, waiters: n(0), ends: true},
	{from: "activating/decide", evf: accepted, state: stateActivating, acts: []string{"campaign(c@12 on 1)"}},
	{from: "activating/decide", ev: refusedNotOwner(channel(stateActivating, 11, 0, 5)),
		state: stateActivating, acts: []string{"fail(c [1])"}, err: ErrNotOwner, ends: true},
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6},
		state: stateActivating, acts: []string{"confirm(c@12 on 1 term>=6)"}},
	// The campaign's status shows the candidate leading in the term it reports: no separate
	// confirmation. A status that does not (follower, another term) still gets one.
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6, Status: leaderSt(1, 6, 101, nil)},
		state: stateActivating, acts: []string{"cas(c@12 state=ACTIVE leader=1 term=6 seq=40)"}},
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6, Status: st(6, 101, 101)},
		state: stateActivating, acts: []string{"confirm(c@12 on 1 term>=6)"}},
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 6, Status: leaderSt(1, 7, 101, nil)},
		state: stateActivating, acts: []string{"confirm(c@12 on 1 term>=6)"}},
	// The recorded term (5) going on: a leader raft did not re-elect, confirmed by its quorum.
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 5, Status: leaderSt(1, 5, 101, nil)},
		state: stateActivating, acts: []string{"cas(c@12 state=ACTIVE leader=1 term=5 seq=40)"}},
	// A term below the recorded one is stale news: elect again.
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 4, Status: leaderSt(1, 4, 101, nil)},
		state: stateActivating, acts: []string{"load(c@12 on [1 2 3])"}},
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 11, Leader: true, Term: 6}, state: stateActivating, err: ErrStaleEpoch},
	{from: "activating/campaign", ev: CampaignResult{Node: 2, Epoch: 12, Leader: true, Term: 6}, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Leader: true, Term: 5}, state: stateActivating,
		acts: []string{"confirm(c@12 on 1 term>=5)"}},
	{from: "activating/campaign", ev: CampaignResult{Node: 1, Epoch: 12, Err: errTest}, state: stateActivating, acts: []string{"load(c@12 on [1 2 3])"}},
	{from: "activating/campaign", ev: NodeDead{Node: 1}, state: stateActivating, acts: []string{"load(c@12 on [2 3])"}},
	{from: "activating/campaign", ev: NodeDead{Node: 2}, state: stateActivating},
	{from: "activating/confirm", ev: ConfirmResult{Node: 1, Epoch: 12, Status: st(6, 101, 101)},
		state: stateActivating, acts: []string{"load(c@12 on [1 2 3])"}},
	{from: "activating/confirm", ev: ConfirmResult{Node: 1, Epoch: 12, Status: leaderSt(1, 5, 101, nil)},
		state: stateActivating, acts: []string{"load(c@12 on [1 2 3])"}},
	{from: "activating/confirm", ev: ConfirmResult{Node: 1, Epoch: 12, Status: leaderSt(1, 6, 101, nil)},
		state: stateActivating, acts: []string{"cas(c@12 state=ACTIVE leader=1 term=6 seq=40)"}},
	{from: "activating/settle", evf: accepted, state: stateActive, acts: []string{"answer(c [1] leader=1 term=6 epoch=13)"}, waiters: n(0)},
	{from: "activating/stalled", ev: Retry{}, state: stateActivating, acts: []string{"load(c@10 on [1 2 3])"}},
	{from: "activating/stalled", ev: Resolve{Waiter: 9, At: t0}, state: stateActivating, acts: []string{"load(c@10 on [1 2 3])"}, waiters: n(1)},
	{from: "activating/stalled", ev: NodeAlive{Node: 2}, state: stateActivating, acts: []string{"load(c@10 on [1 2 3])"}},
	{from: "activating/stalled", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateActivating, err: ErrNotActive},

	// active, leader 1 in term 5, last activity t0.
	{from: "active", ev: Resolve{Waiter: 7, At: t0.Add(time.Second)}, state: stateActive, acts: []string{"answer(c [7] leader=1 term=5 epoch=10)"}, waiters: n(0)},
	{from: "active", ev: Resolve{Waiter: 7, At: t0, StaleLeader: 1}, state: stateActive, acts: []string{"confirm(c@10 on 1 term>=5)"}, waiters: n(1)},
	{from: "active", ev: Resolve{Waiter: 7, At: t0, StaleLeader: 3}, state: stateActive, acts: []string{"answer(c [7] leader=1 term=5 epoch=10)"}},
	{from: "active", ev: CancelWaiter{Waiter: 7}, state: stateActive},
	{from: "active", ev: Activate{}, state: stateActive},
	{from: "active", ev: Hibernate{}, state: stateActive, acts: []string{"query(c@10 on [1 2 3])"}},
	{from: "active", ev: IdleTimeout{Now: t0.Add(time.Minute)}, state: stateActive, err: ErrNotIdle},
	{from: "active", ev: IdleTimeout{Now: t0.Add(2 * time.Minute)}, state: stateActive, acts: []string{"query(c@10 on [1 2 3])"}},
	{from: "active", ev: MoveLeader{Target: 2}, state: stateActive, acts: []string{"query(c@10 on [1 2])"}},
	{from: "active", ev: MoveLeader{Target: 4}, state: stateActive, err: ErrNotReplica},
	{from: "active", ev: MoveLeader{Target: 1}, state: stateActive},
	{from: "active/3-dead", ev: MoveLeader{Target: 3}, state: stateActive, err: ErrNodeDead},
	{from: "active/3-dead", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateActive, err: ErrNotCaughtUp},
	{from: "active", ev: NodeDead{Node: 1}, state: stateElecting, acts: []string{"cas(c@10 state=ELECTING leader=0)"}},
	{from: "active", ev: NodeDead{Node: 2}, state: stateActive},
	{from: "active", ev: NodeDead{Node: 9}, state: stateActive},
	{from: "active", ev: NodeAlive{Node: 2}, state: stateActive},
	{from: "active", ev: Retry{}, state: stateActive},
	{from: "active", evf: accepted, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active", ev: GroupsLoaded{Epoch: 10}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active", ev: PositionsReported{Epoch: 10, Statuses: caughtUp()}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active", ev: CampaignResult{Node: 2, Epoch: 10, Leader: true, Term: 6}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active", ev: TransferResult{Target: 2, Epoch: 10}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active", ev: ConfirmResult{Node: 1, Epoch: 10, Status: leaderSt(1, 5, 100, nil)}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active", ev: UnloadResult{Epoch: 10}, state: stateActive, err: ErrUnexpectedEvent},
	// active, with a check in flight.
	{from: "active/idle-check", ev: PositionsReported{Epoch: 10, Statuses: caughtUp()}, state: stateHibernating, acts: []string{"cas(c@10 state=HIBERNATING)"}},
	{from: "active/idle-check", ev: PositionsReported{Epoch: 10, Statuses: func() map[uint64]*replicav1.GroupStatus {
		s := caughtUp()
		s[1] = leaderSt(1, 5, 100, map[uint64]uint64{2: 100, 3: 98})
		s[3] = st(5, 98, 98)
		return s
	}()}, state: stateActive, err: ErrNotCaughtUp, ends: true},
	{from: "active/idle-check", ev: PositionsReported{Epoch: 10, Statuses: func() map[uint64]*replicav1.GroupStatus {
		s := caughtUp()
		s[2] = withActivity(s[2], t0.Add(150*time.Second))
		return s
	}()}, state: stateActive, err: ErrNotIdle, ends: true},
	{from: "active/idle-check", ev: PositionsReported{Epoch: 9, Statuses: caughtUp()}, state: stateActive, err: ErrStaleEpoch},
	{from: "active/idle-check", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateActive, err: ErrBusy},
	{from: "active/idle-check", ev: Hibernate{}, state: stateActive, err: ErrBusy},
	{from: "active/idle-check", ev: MoveLeader{Target: 2}, state: stateActive, err: ErrBusy},
	{from: "active/idle-check", ev: Resolve{Waiter: 7, At: t0, StaleLeader: 1}, state: stateActive, waiters: n(1)},
	{from: "active/idle-check", ev: NodeDead{Node: 1}, state: stateElecting, acts: []string{"cas(c@10 state=ELECTING leader=0)"}},
	{from: "active/move-check", ev: PositionsReported{Epoch: 10, Statuses: caughtUp()}, state: stateElecting, acts: []string{"cas(c@10 state=ELECTING leader=2)"}},
	{from: "active/move-check", ev: PositionsReported{Epoch: 10, Statuses: statuses(map[uint64][2]uint64{1: {5, 100}, 2: {5, 98}})},
		state: stateActive, err: ErrTargetLagging, ends: true},
	{from: "active/move-check", ev: PositionsReported{Epoch: 10, Statuses: statuses(map[uint64][2]uint64{1: {5, 100}, 2: {4, 120}})},
		state: stateActive, err: ErrTargetLagging, ends: true},
	{from: "active/move-check", ev: PositionsReported{Epoch: 10, Statuses: statuses(map[uint64][2]uint64{1: {5, 100}})},
		state: stateActive, err: ErrTargetLagging, ends: true},
	{from: "active/move-check", ev: Resolve{Waiter: 7, At: t0}, state: stateActive, acts: []string{"answer(c [7] leader=1 term=5 epoch=10)"}},
	{from: "active/verify", ev: ConfirmResult{Node: 1, Epoch: 10, Status: leaderSt(1, 5, 100, nil)},
		state: stateActive, acts: []string{"answer(c [1] leader=1 term=5 epoch=10)"}, waiters: n(0)},
	{from: "active/verify", ev: ConfirmResult{Node: 1, Epoch: 10, Status: st(6, 100, 100)},
		state: stateElecting, acts: []string{"cas(c@10 state=ELECTING leader=0)"}, waiters: n(1)},
	{from: "active/verify", ev: ConfirmResult{Node: 1, Epoch: 10}, state: stateElecting, acts: []string{"cas(c@10 state=ELECTING leader=0)"}},
	{from: "active/verify", ev: ConfirmResult{Node: 2, Epoch: 10, Status: leaderSt(2, 6, 100, nil)}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active/verify", ev: Resolve{Waiter: 8, At: t0}, state: stateActive, waiters: n(2)},

	// electing after leader 1 died, the group loaded on the survivors 2 and 3 under epoch 11.
	{from: "electing/gather", ev: Resolve{Waiter: 7, At: t0}, state: stateElecting, waiters: n(1)},
	{from: "electing/gather", ev: CancelWaiter{Waiter: 7}, state: stateElecting, waiters: n(0)},
	{from: "electing/gather", ev: Activate{}, state: stateElecting},
	{from: "electing/gather", ev: Hibernate{}, state: stateElecting, err: ErrNotActive},
	{from: "electing/gather", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateElecting, err: ErrNotActive},
	{from: "electing/gather", ev: MoveLeader{Target: 2}, state: stateElecting, err: ErrNotActive},
	{from: "electing/gather", ev: NodeDead{Node: 2}, state: stateElecting},
	{from: "electing/gather", ev: NodeAlive{Node: 1}, state: stateElecting},
	{from: "electing/gather", ev: Retry{}, state: stateElecting, err: ErrBusy},
	{from: "electing/gather", evf: accepted, state: stateElecting, err: ErrUnexpectedEvent},
	// The gather is a load: a status query's reply, even one that could decide, is not awaited.
	{from: "electing/gather", ev: PositionsReported{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {5, 100}, 3: {5, 90}})},
		state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {5, 100}, 3: {5, 90}})},
		state: stateElecting, acts: []string{"cas(c@11 leader=2)"}},
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {5, 90}, 3: {5, 100}})},
		state: stateElecting, acts: []string{"cas(c@11 leader=3)"}},
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {6, 3}, 3: {5, 100}})},
		state: stateElecting, acts: []string{"cas(c@11 leader=2)"}},
	// Equal: the previous leader is dead, so the group id (7) spreads the choice: [2 3][7%2].
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {5, 100}, 3: {5, 100}})},
		state: stateElecting, acts: []string{"cas(c@11 leader=3)"}},
	// The dead node answering the load with a longer log is still not a candidate.
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{1: {6, 200}, 2: {5, 100}, 3: {5, 90}})},
		state: stateElecting, acts: []string{"cas(c@11 leader=2)"}},
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 11, Statuses: statuses(map[uint64][2]uint64{2: {5, 100}}),
		Errors: map[uint64]error{3: errTest}}, state: stateElecting, err: ErrNoMajority, ends: true},
	{from: "electing/gather", ev: GroupsLoaded{Epoch: 10, Statuses: statuses(map[uint64][2]uint64{2: {5, 100}, 3: {5, 90}})},
		state: stateElecting, err: ErrStaleEpoch},
	{from: "electing/gather", ev: CampaignResult{Node: 2, Epoch: 11, Leader: true, Term: 6}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/gather", ev: TransferResult{Target: 2, Epoch: 11}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/gather", ev: ConfirmResult{Node: 2, Epoch: 11}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/gather", ev: UnloadResult{Epoch: 11}, state: stateElecting, err: ErrUnexpectedEvent},
	// electing, the other phases.
	{from: "electing/claim", evf: accepted, state: stateElecting, acts: []string{"load(c@11 on [2 3])"}},
	{from: "electing/claim", ev: refusedStale(channel(stateActive, 11, 3, 6)),
		state: stateActive, err: ErrCASRefused, ends: true},
	{from: "electing/decide", evf: accepted, state: stateElecting, acts: []string{"campaign(c@12 on 2)"}},
	{from: "electing/campaign", ev: CampaignResult{Node: 2, Epoch: 11, Leader: true, Term: 6}, state: stateElecting, err: ErrStaleEpoch},
	{from: "electing/campaign", ev: CampaignResult{Node: 2, Epoch: 12, Leader: true, Term: 6}, state: stateElecting, acts: []string{"confirm(c@12 on 2 term>=6)"}},
	{from: "electing/campaign", ev: CampaignResult{Node: 2, Epoch: 12, Leader: false}, state: stateElecting, acts: []string{"load(c@12 on [2 3])"}},
	{from: "electing/confirm", ev: ConfirmResult{Node: 2, Epoch: 12, Status: leaderSt(2, 6, 101, nil)},
		state: stateElecting, acts: []string{"cas(c@12 state=ACTIVE leader=2 term=6 seq=40)"}},
	{from: "electing/confirm", ev: ConfirmResult{Node: 2, Epoch: 11, Status: leaderSt(2, 6, 101, nil)}, state: stateElecting, err: ErrStaleEpoch},
	{from: "electing/settle", evf: accepted, state: stateActive},
	{from: "electing/transfer", ev: TransferResult{Target: 2, Epoch: 11}, state: stateElecting, acts: []string{"confirm(c@11 on 2 term>=6)"}},
	{from: "electing/transfer", ev: TransferResult{Target: 2, Epoch: 11, Err: errTest}, state: stateElecting, acts: []string{"load(c@11 on [1 2 3])"}},
	{from: "electing/transfer", ev: TransferResult{Target: 3, Epoch: 11}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/transfer", ev: TransferResult{Target: 2, Epoch: 10}, state: stateElecting, err: ErrStaleEpoch},
	// A late reply to the move check (a query) or to an earlier gather (a load) is not awaited.
	{from: "electing/transfer", ev: PositionsReported{Epoch: 10, Statuses: caughtUp()}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/transfer", ev: GroupsLoaded{Epoch: 11, Statuses: caughtUp()}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "electing/transfer", ev: NodeDead{Node: 2}, state: stateElecting, acts: []string{"load(c@11 on [1 3])"}},
	{from: "electing/stalled", ev: Retry{}, state: stateElecting, acts: []string{"load(c@10 on [1 2 3])"}},
	{from: "electing/stalled", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateElecting, err: ErrNotActive},

	// hibernating, unload in flight under epoch 11.
	{from: "hibernating/unload", ev: Resolve{Waiter: 7, At: t0}, state: stateHibernating, waiters: n(1)},
	{from: "hibernating/unload", ev: CancelWaiter{Waiter: 7}, state: stateHibernating},
	{from: "hibernating/unload", ev: Activate{}, state: stateHibernating},
	{from: "hibernating/unload", ev: Hibernate{}, state: stateHibernating, err: ErrNotActive},
	{from: "hibernating/unload", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateHibernating, err: ErrNotActive},
	{from: "hibernating/unload", ev: MoveLeader{Target: 2}, state: stateHibernating, err: ErrNotActive},
	{from: "hibernating/unload", ev: NodeDead{Node: 2}, state: stateHibernating},
	{from: "hibernating/unload", ev: NodeAlive{Node: 2}, state: stateHibernating},
	{from: "hibernating/unload", ev: Retry{}, state: stateHibernating, err: ErrBusy},
	{from: "hibernating/unload", evf: accepted, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: GroupsLoaded{Epoch: 11}, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: PositionsReported{Epoch: 11}, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: CampaignResult{Node: 2, Epoch: 11, Leader: true, Term: 6}, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: TransferResult{Target: 2, Epoch: 11}, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: ConfirmResult{Node: 1, Epoch: 11}, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: UnloadResult{Epoch: 11, Unloaded: []uint64{3, 1, 2}}, state: stateHibernating, acts: []string{"cas(c@11 state=HIBERNATED seq=40)"}},
	{from: "hibernating/unload", ev: UnloadResult{Epoch: 11, Unloaded: []uint64{2, 3}, Errors: map[uint64]error{1: errTest}},
		state: stateActivating, acts: []string{"cas(c@11 state=ACTIVATING leader=0)"}},
	{from: "hibernating/unload", ev: UnloadResult{Epoch: 10, Unloaded: []uint64{1, 2, 3}}, state: stateHibernating, err: ErrStaleEpoch},
	// hibernating, the other phases.
	{from: "hibernating/claim", evf: accepted, state: stateHibernating, acts: []string{"unload(c@11 on [1 2 3])"}},
	{from: "hibernating/claim", ev: refusedStale(channel(stateActive, 11, 2, 6)), state: stateActive, err: ErrCASRefused, ends: true},
	{from: "hibernating/rest", evf: accepted, state: stateHibernated},
	{from: "hibernating/resolved", evf: accepted, state: stateActivating, acts: []string{"cas(c@12 state=ACTIVATING leader=0)"}, waiters: n(1)},
	{from: "hibernating/stalled", ev: Retry{}, state: stateHibernating, acts: []string{"unload(c@10 on [1 2 3])"}},
	{from: "hibernating/stalled", ev: Resolve{Waiter: 7, At: t0}, state: stateActivating, acts: []string{"cas(c@10 state=ACTIVATING leader=0)"}},
	{from: "hibernating/stalled", ev: MoveLeader{Target: 2}, state: stateHibernating, err: ErrNotActive},

	// Replica-set repair: only an active channel with a live leader replaces a dead replica.
	{from: "hibernated", ev: Repair{Dead: 3, With: 4}, state: stateHibernated, err: ErrNotActive},
	{from: "hibernated", ev: ReplicasChanged{Epoch: 10}, state: stateHibernated, err: ErrUnexpectedEvent},
	{from: "activating/gather", ev: Repair{Dead: 3, With: 4}, state: stateActivating, err: ErrNotActive},
	{from: "activating/gather", ev: ReplicasChanged{Epoch: 11}, state: stateActivating, err: ErrUnexpectedEvent},
	{from: "electing/gather", ev: Repair{Dead: 3, With: 4}, state: stateElecting, err: ErrNotActive},
	{from: "electing/gather", ev: ReplicasChanged{Epoch: 11}, state: stateElecting, err: ErrUnexpectedEvent},
	{from: "hibernating/unload", ev: Repair{Dead: 3, With: 4}, state: stateHibernating, err: ErrNotActive},
	{from: "hibernating/unload", ev: ReplicasChanged{Epoch: 11}, state: stateHibernating, err: ErrUnexpectedEvent},
	{from: "active", ev: Repair{Dead: 3, With: 4}, state: stateActive, err: ErrNotDead},
	{from: "active", ev: ReplicasChanged{Epoch: 10}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active/3-dead", ev: Repair{Dead: 3, With: 4}, state: stateActive, acts: []string{"cas(c@10 next=[1 2 4])"}},
	{from: "active/3-dead", ev: Repair{Dead: 5, With: 4}, state: stateActive, err: ErrNotReplica},
	{from: "active/3-dead", ev: Repair{Dead: 3, With: 2}, state: stateActive, err: ErrInvalidReplicaSet},
	{from: "active/3-dead", ev: Repair{Dead: 3}, state: stateActive, err: ErrInvalidReplicaSet},
	{from: "active/3-dead", ev: Repair{Dead: 1, With: 4}, state: stateActive, err: ErrNotDead},
	// A rejoin (the same node twice): a live member other than the leader, whose store was
	// replaced.
	{from: "active", ev: Repair{Dead: 2, With: 2}, state: stateActive, acts: []string{"cas(c@10)"}},
	{from: "active", ev: Repair{Dead: 1, With: 1}, state: stateActive, err: ErrRejoinLeader},
	{from: "active", ev: Repair{Dead: 5, With: 5}, state: stateActive, err: ErrNotReplica},
	{from: "active", ev: Repair{}, state: stateActive, err: ErrNotReplica},
	{from: "active/3-dead", ev: Repair{Dead: 3, With: 3}, state: stateActive, err: ErrNodeDead},
	{from: "active/idle-check", ev: Repair{Dead: 2, With: 2}, state: stateActive, err: ErrBusy},
	{from: "active/idle-check", ev: Repair{Dead: 3, With: 4}, state: stateActive, err: ErrBusy},
	// The claim: a stale view is refused before raft is touched; a leader death waits for it.
	{from: "active/repair-claim", evf: accepted, state: stateActive, acts: []string{"load(c@11 on [1 2 4] join [1 2 4])"}},
	{from: "active/repair-claim", ev: refusedStale(channel(stateActive, 11, 2, 6)), state: stateActive, err: ErrCASRefused, ends: true},
	{from: "active/repair-claim", ev: refusedNotOwner(channel(stateActive, 10, 1, 5)), state: stateActive, err: ErrNotOwner, ends: true},
	{from: "active/repair-claim", ev: NodeDead{Node: 1}, state: stateActive},
	{from: "active/repair-claim", ev: Resolve{Waiter: 7, At: t0}, state: stateActive, acts: []string{"answer(c [7] leader=1 term=5 epoch=10)"}},
	{from: "active/repair-claim", ev: Repair{Dead: 3, With: 4}, state: stateActive, err: ErrBusy},
	{from: "active/repair-claim", ev: MoveLeader{Target: 2}, state: stateActive, err: ErrBusy},
	{from: "active/repair-claim", ev: ReplicasChanged{Epoch: 10}, state: stateActive, err: ErrUnexpectedEvent},
	// The join load.
	{from: "active/repair-load", ev: repairLoaded(11), state: stateActive, acts: []string{"change(c@11 on 1 +4 -3 store=404)"}},
	{from: "active/repair-load", ev: repairLoaded(10), state: stateActive, err: ErrStaleEpoch},
	{from: "active/repair-load", evf: func(*Machine) Event {
		ev := repairLoaded(11)
		delete(ev.Statuses, 4)
		ev.Errors = map[uint64]error{4: errTest}
		return ev
	}, state: stateActive, err: ErrRepairFailed, ends: true},
	{from: "active/repair-load", evf: func(*Machine) Event {
		ev := repairLoaded(11)
		delete(ev.Statuses, 1)
		return ev
	}, state: stateActive, err: ErrRepairFailed, ends: true},
	// Raft already has node 5 from a repair the arbiter never recorded: the order names the
	// voters wanted, {1, 2, 4}, and the leader drops node 5 along with node 3.
	{from: "active/repair-load", evf: func(*Machine) Event {
		ev := repairLoaded(11)
		ev.Statuses[1].Voters = []uint64{1, 2, 3, 5}
		return ev
	}, state: stateActive, acts: []string{"change(c@11 on 1 +4 -3 store=404)"}},
	{from: "active/repair-load", ev: NodeDead{Node: 1}, state: stateElecting, acts: []string{"cas(c@11 state=ELECTING leader=0)"}},
	{from: "active/repair-load", ev: Hibernate{}, state: stateActive, err: ErrBusy},
	// The new replica's store: it must report one (else it is too old to be admitted by it).
	{from: "active/repair-load", evf: func(*Machine) Event {
		ev := repairLoaded(11)
		ev.Statuses[4].StoreId = 0
		return ev
	}, state: stateActive, err: ErrRepairFailed, ends: true},
	// The rejoin's load: the node's new store rides on the change.
	{from: "active/rejoin-claim", evf: accepted, state: stateActive, acts: []string{"load(c@11 on [1 2 3] join [1 2 3])"}},
	{from: "active/rejoin-claim", ev: refusedStale(channel(stateActive, 11, 1, 5)), state: stateActive, err: ErrCASRefused, ends: true},
	{from: "active/rejoin-claim", ev: Repair{Dead: 3, With: 3}, state: stateActive, err: ErrBusy},
	{from: "active/rejoin-load", ev: rejoinLoaded(11), state: stateActive, acts: []string{"change(c@11 on 1 rejoin 2 store=222)"}},
	{from: "active/rejoin-load", ev: rejoinLoaded(10), state: stateActive, err: ErrStaleEpoch},
	{from: "active/rejoin-load", evf: func(*Machine) Event {
		ev := rejoinLoaded(11)
		ev.Statuses[2].StoreId = 0
		return ev
	}, state: stateActive, err: ErrRepairFailed, ends: true},
	// The node holds the recorded store after all (the driver's view of it was stale).
	{from: "active/rejoin-load", evf: func(*Machine) Event {
		ev := rejoinLoaded(11)
		ev.Statuses[2].StoreId = 202
		return ev
	}, state: stateActive, err: ErrRepairFailed, ends: true},
	{from: "active/rejoin-load", evf: func(*Machine) Event {
		ev := rejoinLoaded(11)
		delete(ev.Statuses, 2)
		ev.Errors = map[uint64]error{2: errTest}
		return ev
	}, state: stateActive, err: ErrRepairFailed, ends: true},
	{from: "active/rejoin-load", ev: NodeDead{Node: 1}, state: stateElecting, acts: []string{"cas(c@11 state=ELECTING leader=0)"}},
	{from: "active/rejoin-change", ev: ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 3)}, state: stateActive,
		acts: []string{"cas(c@11 stores=map[2:222])"}},
	// Still a learner: not promoted, nothing recorded.
	{from: "active/rejoin-change", ev: ReplicasChanged{Epoch: 11, Status: votersSt(1, 3)}, state: stateActive,
		err: ErrRepairFailed, ends: true},
	{from: "active/rejoin-change", ev: ReplicasChanged{Epoch: 11, Err: errTest}, state: stateActive, err: ErrRepairFailed, ends: true},
	{from: "active/rejoin-record", evf: accepted, state: stateActive},
	{from: "active/rejoin-record", ev: refusedStale(channel(stateActive, 12, 1, 5)), state: stateActive, err: ErrCASRefused, ends: true},
	// The change on the leader.
	{from: "active/repair-change", ev: ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 4)}, state: stateActive,
		acts: []string{"cas(c@11 replicas=[1 2 4] stores=map[4:404])"}},
	{from: "active/repair-change", ev: ReplicasChanged{Epoch: 11, Err: errTest}, state: stateActive, err: ErrRepairFailed, ends: true},
	{from: "active/repair-change", ev: ReplicasChanged{Epoch: 11, Status: votersSt(1, 2, 3, 4)}, state: stateActive,
		err: ErrRepairFailed, ends: true},
	{from: "active/repair-change", ev: ReplicasChanged{Epoch: 10, Status: votersSt(1, 2, 4)}, state: stateActive, err: ErrStaleEpoch},
	{from: "active/repair-change", ev: GroupsLoaded{Epoch: 11}, state: stateActive, err: ErrUnexpectedEvent},
	// The record.
	{from: "active/repair-record", evf: accepted, state: stateActive},
	{from: "active/repair-record", ev: refusedStale(channel(stateActive, 12, 1, 5)), state: stateActive, err: ErrCASRefused, ends: true},

	// A rejoin of a replica whose copy failed: it answers the join load with the recorded store,
	// reset. It rejoins with that store, and the record names it again.
	{from: "active/rejoin-load", ev: resetLoaded(11), state: stateActive, acts: []string{"change(c@11 on 1 rejoin 2 store=202)"}},

	// Reconciling a joint record (reconcile.go). One check at a time; a dead leader waits for
	// the CAS in flight; late or stale results are refused.
	{from: "active/reconcile-claim", evf: accepted, state: stateActive, acts: []string{"load(c@11 on [1 2 3 4] joining [4])"}},
	{from: "active/reconcile-claim", ev: NodeDead{Node: 1}, state: stateActive},
	{from: "active/reconcile-claim", ev: refusedStale(jointChannel(stateActive, 11, 1, 5)), state: stateActive, err: ErrCASRefused, ends: true},
	{from: "active/reconcile-claim", ev: Repair{Dead: 3, With: 4}, state: stateActive, err: ErrBusy},
	{from: "active/reconcile-claim", ev: IdleTimeout{Now: t0.Add(time.Hour)}, state: stateActive, err: ErrBusy},
	{from: "active/reconcile-check", ev: NodeDead{Node: 1}, state: stateElecting, acts: []string{"cas(c@11 state=ELECTING leader=0)"}},
	{from: "active/reconcile-check", ev: GroupsLoaded{Epoch: 10}, state: stateActive, err: ErrStaleEpoch},
	{from: "active/reconcile-check", ev: UnloadResult{Epoch: 11}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active/reconcile-check", ev: MoveLeader{Target: 2}, state: stateActive, err: ErrBusy},
	{from: "active/reconcile-clear", evf: accepted, state: stateActive, acts: []string{"unload(c@12 on [4])"}},
	{from: "active/reconcile-clear", ev: GroupsLoaded{Epoch: 11}, state: stateActive, err: ErrUnexpectedEvent},
	{from: "active/reconcile-unload", ev: UnloadResult{Epoch: 12, Unloaded: []uint64{4}}, state: stateActive, ends: true},
	{from: "active/reconcile-unload", ev: UnloadResult{Epoch: 11, Unloaded: []uint64{4}}, state: stateActive, err: ErrStaleEpoch},
	{from: "active/reconcile-unload", ev: NodeDead{Node: 1}, state: stateElecting, acts: []string{"cas(c@12 state=ELECTING leader=0)"}},

	// The driver doubts the leader (its copy failed there): the check a stale Resolve makes,
	// without a waiter; later when busy, not at all when not active.
	{from: "hibernated", ev: CheckLeader{}, state: stateHibernated, err: ErrNotActive},
	{from: "activating/gather", ev: CheckLeader{}, state: stateActivating, err: ErrNotActive},
	{from: "active", ev: CheckLeader{}, state: stateActive, acts: []string{"confirm(c@10 on 1 term>=5)"}, waiters: n(0)},
	{from: "active/verify", ev: CheckLeader{}, state: stateActive, waiters: n(1)},
	{from: "active/idle-check", ev: CheckLeader{}, state: stateActive},
	{from: "active/rejoin-change", ev: CheckLeader{}, state: stateActive},
	{from: "electing/gather", ev: CheckLeader{}, state: stateElecting, err: ErrNotActive},
	{from: "hibernating/unload", ev: CheckLeader{}, state: stateHibernating, err: ErrNotActive},
}

func (tr transition) event(m *Machine) Event {
	if tr.evf != nil {
		return tr.evf(m)
	}
	return tr.ev
}

func TestTransitions(t *testing.T) {
	for i, tr := range transitions {
		fx, ok := fixtures[tr.from]
		require.True(t, ok, "row %d: unknown fixture %q", i, tr.from)
		t.Run(fmt.Sprintf("%03d/%s/%s", i, tr.from, eventName(tr.event(fx(t)))), func(t *testing.T) {
			m := fx(t)
			before := snapshot(m)
			acts, err := m.Step(tr.event(m))
			if tr.err != nil {
				require.ErrorIs(t, err, tr.err)
			} else {
				require.NoError(t, err)
			}
			want := tr.acts
			if want == nil {
				want = []string{}
			}
			require.Equal(t, want, show(acts))
			require.Equal(t, tr.state.String(), m.State().String())
			if tr.waiters != nil {
				require.Equal(t, *tr.waiters, m.Waiters())
			}
			if err != nil && !tr.ends {
				require.Empty(t, acts, "a refused event has no actions")
				require.Equal(t, before, snapshot(m), "a refused event must leave the machine unchanged")
			}
			if tr.ends {
				require.NotEqual(t, before, snapshot(m), "concluded work must change the machine")
			}
		})
	}
}

// TestTransitionsCoverEveryPair fails when a state/event pair has no row, so a new event or
// state cannot be added without deciding what every state does with it.
func TestTransitionsCoverEveryPair(t *testing.T) {
	events := []Event{Resolve{}, CancelWaiter{}, Activate{}, Hibernate{}, IdleTimeout{}, MoveLeader{}, NodeDead{},
		NodeAlive{}, Retry{}, CASResult{}, GroupsLoaded{}, PositionsReported{}, CampaignResult{}, TransferResult{},
		ConfirmResult{}, UnloadResult{}, Repair{}, ReplicasChanged{}, CheckLeader{}}
	states := []arbiterv1.ChannelState{stateHibernated, stateActivating, stateActive, stateElecting, stateHibernating}
	covered := map[string]bool{}
	for _, tr := range transitions {
		m := fixtures[tr.from](t)
		covered[m.State().String()+" "+eventName(tr.event(m))] = true
	}
	var missing []string
	for _, s := range states {
		for _, e := range events {
			if k := s.String() + " " + eventName(e); !covered[k] {
				missing = append(missing, k)
			}
		}
	}
	require.Empty(t, missing)
}

func TestFencedMachineRefusesEverything(t *testing.T) {
	m := fxElectingDecide(t)
	require.Equal(t, []string{}, step(t, m, Resolve{Waiter: 5, At: t0}))
	acts, err := m.Step(refusedNotOwner(channel(stateElecting, 11, 0, 5)))
	require.ErrorIs(t, err, ErrNotOwner)
	require.ErrorIs(t, err, ErrCASRefused)
	require.Len(t, acts, 1)
	fail := acts[0].(FailWaiters)
	require.Equal(t, []uint64{5}, fail.Waiters)
	require.ErrorIs(t, fail.Err, ErrNotOwner)
	require.True(t, m.Fenced())

	for _, ev := range []Event{accepted(m), CampaignResult{Node: 2, Epoch: 12, Leader: true, Term: 6}, Resolve{Waiter: 6},
		Retry{}, NodeDead{Node: 2}, Activate{}} {
		acts, err := m.Step(ev)
		require.ErrorIs(t, err, ErrNotOwner, "%T", ev)
		require.Empty(t, acts, "%T", ev)
	}
}

func TestNewRefusesBadRecords(t *testing.T) {
	for name, tc := range map[string]struct {
		ch  *arbiterv1.Channel
		cfg Config
	}{
		"nil":                          {nil, testCfg},
		"no id":                        {&arbiterv1.Channel{ReplicaNodeIds: []uint64{1}, State: stateActive, LeaderNodeId: 1}, testCfg},
		"no replicas":                  {&arbiterv1.Channel{ChannelId: "c", State: stateHibernated}, testCfg},
		"duplicate replica":            {&arbiterv1.Channel{ChannelId: "c", ReplicaNodeIds: []uint64{1, 1, 2}, State: stateHibernated}, testCfg},
		"no state":                     {channel(arbiterv1.ChannelState_CHANNEL_STATE_UNSPECIFIED, 1, 0, 0), testCfg},
		"active, no leader":            {channel(stateActive, 1, 0, 0), testCfg},
		"active, leader not a replica": {channel(stateActive, 1, 9, 1), testCfg},
		"no hibernate delay":           {channel(stateActive, 1, 1, 1), Config{}},
		"negative attempts":            {channel(stateActive, 1, 1, 1), Config{HibernateAfter: time.Minute, MaxElectionAttempts: -1}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(tc.ch, tc.cfg, t0)
			require.Error(t, err)
		})
	}
}

func TestChannelIsACopy(t *testing.T) {
	ch := channel(stateActive, 10, 1, 5)
	m := newMachine(t, ch)
	ch.LeaderNodeId = 2
	got := m.Channel()
	got.LeaderNodeId = 3
	require.Equal(t, uint64(1), m.Channel().GetLeaderNodeId())
}
