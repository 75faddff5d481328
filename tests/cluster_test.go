package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

func TestActivationOnDemandAcrossTiers(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	ctx := testutil.Context(t, 60*time.Second)
	for i := range 20 {
		ch := fmt.Sprintf("act-%d", i)
		acked := map[uint64]string{}
		for j := range 3 {
			id := fmt.Sprintf("%s-m%d", ch, j)
			seq, err := c.Send(ctx, ch, id)
			require.NoError(t, err)
			acked[seq] = id
		}
		c.RequireExactlyOnce(t, ctx, ch, acked)
	}
	// Every leadership was recorded in the arbiter with the leader's term.
	for i := range 20 {
		ch, ok := c.Arbiter(1).FSM().Channel(fmt.Sprintf("act-%d", i))
		require.True(t, ok)
		require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, ch.State)
		require.NotZero(t, ch.Leader)
		require.NotZero(t, ch.LeaderTerm)
	}
}

// The replica that leads the most of 1,000 channels dies while writers keep sending: every
// channel it led gets a new leader among the survivors, none of them one that was behind the
// other survivor when the election ran, and every acknowledged message is still there, once
// and at its acknowledged sequence number. While the writers run, frames to replica 3 are
// delayed, so that at the kill it is behind the other survivor on the channels written last:
// electing it there would break the rule, and the test would say so.
func TestFailoverAfterLeaderReplicaDies(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	const lagging = uint64(3)
	var lag atomic.Bool
	c := testcluster.Start(t)
	c.SetReplicaFault(func(_, to uint64) (time.Duration, bool) {
		if to == lagging && lag.Load() {
			return 50 * time.Millisecond, false
		}
		return 0, false
	})
	// Each phase (creating the channels, writing through the failover, reading back) has its
	// own generous deadline: a bound on a hang, not on speed, on a machine that may be loaded.
	ctx := testutil.Context(t, 5*time.Minute)
	const channels, writers = 1000, 10
	name := func(i int) string { return fmt.Sprintf("f%d", i) }
	var (
		mu    sync.Mutex
		acked = make([]map[uint64]string, channels)
		count atomic.Int64
	)
	for i := range channels {
		acked[i] = map[uint64]string{}
	}
	require.NoError(t, parallel(channels, 4, func(i int) error {
		id := name(i) + "-first"
		seq, err := c.Send(ctx, name(i), id)
		if err != nil {
			return fmt.Errorf("send %s: %w", id, err)
		}
		mu.Lock()
		acked[i][seq] = id
		mu.Unlock()
		return nil
	}))
	// The node (other than the lagging one) leading most channels dies while writers keep
	// sending.
	type record struct{ leader, epoch, term uint64 }
	before := map[string]record{}
	led := map[uint64][]string{}
	for i := range channels {
		ch, _ := c.Arbiter(1).FSM().Channel(name(i))
		before[ch.ID] = record{ch.Leader, ch.Epoch, ch.LeaderTerm}
		led[ch.Leader] = append(led[ch.Leader], ch.ID)
	}
	victim := uint64(1)
	if len(led[2]) > len(led[1]) {
		victim = 2
	}
	orphans := led[victim]
	ctx = testutil.Context(t, 5*time.Minute) // writers, the kill and the election
	lag.Store(true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (w + writers*j) % channels
				id := fmt.Sprintf("%s-w%d-%d", name(i), w, j)
				seq, err := c.Send(ctx, name(i), id)
				if err != nil {
					t.Errorf("send %s: %v", id, err)
					return
				}
				mu.Lock()
				acked[i][seq] = id
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	// awaitWrites waits until the writers have had n more sends acknowledged.
	awaitWrites := func(n int64, what string) {
		from := count.Load()
		require.Eventually(t, func() bool { return count.Load() >= from+n }, 2*time.Minute, 5*time.Millisecond, what)
	}
	awaitWrites(5*writers, "writers get going before the kill")
	c.Stop(testcluster.KindReplica, victim)

	// The positions each election will compare: nothing appends to the orphans' logs until
	// their next leader is elected. A channel whose record moved on before the read finished
	// may have been elected already, so only the channels still recorded under the victim at
	// its epoch after the read are checked against them.
	positions, err := survivorPositions(ctx, c, orphans)
	require.NoError(t, err)
	lag.Store(false)
	for _, id := range orphans {
		if ch, _ := c.Arbiter(1).FSM().Channel(id); ch.Epoch != before[id].epoch {
			delete(positions, id)
		}
	}

	// Every channel the victim led gets a new leader among the survivors.
	require.Eventually(t, func() bool {
		for _, id := range orphans {
			ch, _ := c.Arbiter(1).FSM().Channel(id)
			if ch.Leader == victim || ch.Leader == 0 || ch.State != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
				return false
			}
		}
		return true
	}, 2*time.Minute, 20*time.Millisecond, "every channel the victim led is active under a survivor")
	// Writers go on past the failover before they stop.
	awaitWrites(5*writers, "writers keep sending after the failover")
	close(stop)
	wg.Wait()
	// The arbiter declares the stopped node dead once its lease and margin ran out and its
	// peers confirmed they lost it too.
	require.Eventually(t, func() bool {
		dead, _ := c.Arbiter(1).FSM().Node(victim)
		return dead.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD
	}, 10*time.Second, 10*time.Millisecond)

	// No channel was handed to a replica that was behind: its log, when the election compared
	// them, was at least as up to date as every other survivor's, and its term fences the
	// victim's.
	differed := 0
	for _, id := range orphans {
		ch, _ := c.Arbiter(1).FSM().Channel(id)
		require.NotEqual(t, victim, ch.Leader, id)
		require.Greater(t, ch.LeaderTerm, before[id].term, "%s: the new leader's term fences the old one", id)
		pos, ok := positions[id]
		if !ok {
			continue
		}
		for n, p := range pos {
			require.GreaterOrEqual(t, pos[ch.Leader].compare(p), 0,
				"%s: leader %d was elected at %v, behind replica %d at %v", id, ch.Leader, pos[ch.Leader], n, p)
			if p != pos[ch.Leader] {
				differed++
			}
		}
	}
	t.Logf("victim %d led %d channels; %d messages acknowledged while writing; positions read before the election for %d of them, "+
		"with the survivors at different positions in %d", victim, len(orphans), count.Load(), len(positions), differed)
	readCtx := testutil.Context(t, 5*time.Minute)
	require.NoError(t, parallel(channels, 16, func(i int) error {
		return c.ExactlyOnce(readCtx, name(i), acked[i])
	}))
}

// 1,000 channels go idle and hibernate (nothing of them left in any replica's memory), then a
// send to each wakes it: the send gets the next sequence number and the channel holds exactly
// its two messages.
func TestIdleChannelsHibernateAndWake(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t, testcluster.HibernateAfter(time.Second))
	// Each phase has its own generous deadline: it is a bound on a hang, not on speed, and
	// a loaded machine slows every phase (3,000 activations and 2,000 hibernations in all).
	phase := func() context.Context { return testutil.Context(t, 5*time.Minute) }
	ctx := phase()
	const channels = 1000
	name := func(i int) string { return fmt.Sprintf("h%d", i) }
	require.NoError(t, parallel(channels, 8, func(i int) error {
		seq, err := c.Send(ctx, name(i), "first")
		if err == nil && seq != 1 {
			err = fmt.Errorf("first message at seq %d", seq)
		}
		return err
	}))
	require.Eventually(t, func() bool {
		for _, r := range c.Replicas() {
			if len(r.Engine.Loaded()) > 0 {
				return false
			}
		}
		return true
	}, 2*time.Minute, 100*time.Millisecond, "idle channels leave the replicas' memory")
	for i := range channels {
		ch, _ := c.Arbiter(1).FSM().Channel(name(i))
		require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED, ch.State, ch.ID)
	}
	ctx = phase()
	require.NoError(t, parallel(channels, 8, func(i int) error {
		seq, err := c.Send(ctx, name(i), "second")
		if err != nil {
			return err
		}
		if seq != 2 {
			return fmt.Errorf("%s: a woken channel continues its sequence: got seq %d, want 2", name(i), seq)
		}
		return nil
	}))
	ctx = phase()
	require.NoError(t, parallel(channels, 16, func(i int) error {
		return c.ExactlyOnce(ctx, name(i), map[uint64]string{1: "first", 2: "second"})
	}))
}

func TestChannelctlLossMovesItsSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	ctx := testutil.Context(t, 120*time.Second)
	for i := range 40 {
		_, err := c.Send(ctx, fmt.Sprintf("s%d", i), "first")
		require.NoError(t, err)
	}
	c.Stop(testcluster.KindChannelctl, 101)
	require.Eventually(t, func() bool {
		for _, s := range c.Arbiter(1).FSM().Slots() {
			if s.Owner != 102 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the surviving channelctl owns every slot")
	// Failover still works under the new owner.
	ch, _ := c.Arbiter(1).FSM().Channel("s0")
	victim := ch.Leader
	c.Stop(testcluster.KindReplica, victim)
	for i := range 40 {
		seq, err := c.Send(ctx, fmt.Sprintf("s%d", i), "second")
		require.NoError(t, err, "s%d", i)
		require.Equal(t, uint64(2), seq)
	}
}

// Jitter between the replicas (0-200 ms delays, 5% of frames lost) for the whole test, with no
// node down, causes no election: groups never elect themselves, and nobody orders one.
func TestNetworkJitterCausesNoElections(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t)
	c.SetReplicaFault(func(_, _ uint64) (time.Duration, bool) {
		return time.Duration(rand.N(200)) * time.Millisecond, rand.N(100) < 5
	})
	ctx := testutil.Context(t, 120*time.Second)
	const channels = 10
	// The arbiter's record (epoch, leader term) and every replica's raft term must not move:
	// a group electing itself would show in the replicas' terms even if nobody recorded it.
	type position struct{ epoch, term uint64 }
	terms := func(id string) []uint64 {
		var out []uint64
		for n := uint64(1); n <= 3; n++ {
			st, err := c.Replica(n).Engine.GroupStatus(ctx, id)
			require.NoError(t, err)
			out = append(out, st.GetTerm())
		}
		return out
	}
	termsBefore := map[string][]uint64{}
	before := map[string]position{}
	for i := range channels {
		id := fmt.Sprintf("j%d", i)
		_, err := c.Send(ctx, id, "first")
		require.NoError(t, err)
		ch, _ := c.Arbiter(1).FSM().Channel(id)
		before[id] = position{ch.Epoch, ch.LeaderTerm}
	}
	for id := range before {
		// Followers learn the leader's term with its first append; wait for that, once.
		require.Eventually(t, func() bool {
			ts := terms(id)
			return ts[0] == ts[1] && ts[1] == ts[2]
		}, 30*time.Second, 10*time.Millisecond)
		termsBefore[id] = terms(id)
	}
	deadline := time.Now().Add(5 * time.Second)
	sent := 0
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; time.Now().Before(deadline); j++ {
				_, err := c.Send(ctx, fmt.Sprintf("j%d", (w+4*j)%channels), fmt.Sprintf("w%d-%d", w, j))
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for id, p := range before {
		ch, _ := c.Arbiter(1).FSM().Channel(id)
		require.Equal(t, p, position{ch.Epoch, ch.LeaderTerm}, "channel %s was re-elected", id)
		require.Equal(t, termsBefore[id], terms(id), "a replica of %s changed term", id)
		msgs, err := c.ReadAll(ctx, id)
		require.NoError(t, err)
		sent += len(msgs)
	}
	for _, n := range c.Arbiter(1).FSM().Nodes() {
		require.Equal(t, arbiterv1.NodeState_NODE_STATE_ALIVE, n.Liveness, "node %d", n.ID)
	}
	t.Logf("%d messages committed under jitter, zero elections", sent)
}
