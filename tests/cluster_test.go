package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// requireExactlyOnce checks that the channel holds exactly the acknowledged messages at their
// acknowledged sequence numbers, contiguous from 1.
func requireExactlyOnce(t *testing.T, c *cluster, ctx context.Context, channel string, acked map[uint64]string) {
	t.Helper()
	msgs, err := c.readAll(ctx, channel)
	require.NoError(t, err)
	require.Len(t, msgs, len(acked), channel)
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.GetSeq(), channel)
		require.Equal(t, acked[m.GetSeq()], m.GetClientMsgId(), "%s seq %d", channel, m.GetSeq())
	}
}

func TestActivationOnDemandAcrossTiers(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := startCluster(t, time.Hour)
	ctx := testCtx(t, 60*time.Second)
	for i := range 20 {
		ch := fmt.Sprintf("act-%d", i)
		acked := map[uint64]string{}
		for j := range 3 {
			id := fmt.Sprintf("%s-m%d", ch, j)
			seq, err := c.send(ctx, ch, id)
			require.NoError(t, err)
			acked[seq] = id
		}
		requireExactlyOnce(t, c, ctx, ch, acked)
	}
	// Every leadership was recorded in the arbiter with the leader's term.
	for i := range 20 {
		ch, ok := c.arbiter.FSM().Channel(fmt.Sprintf("act-%d", i))
		require.True(t, ok)
		require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE, ch.State)
		require.NotZero(t, ch.Leader)
		require.NotZero(t, ch.LeaderTerm)
	}
}

func TestFailoverAfterLeaderReplicaDies(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := startCluster(t, time.Hour)
	ctx := testCtx(t, 120*time.Second)
	const channels = 200
	acked := make([]map[uint64]string, channels)
	for i := range channels {
		acked[i] = map[uint64]string{}
		id := fmt.Sprintf("f%d-first", i)
		seq, err := c.send(ctx, fmt.Sprintf("f%d", i), id)
		require.NoError(t, err)
		acked[i][seq] = id
	}
	// The node leading most channels dies while writers keep sending.
	led := map[uint64]int{}
	for i := range channels {
		ch, _ := c.arbiter.FSM().Channel(fmt.Sprintf("f%d", i))
		led[ch.Leader]++
	}
	victim := uint64(1)
	for n, k := range led {
		if k > led[victim] {
			victim = n
		}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (w + 10*j) % channels
				id := fmt.Sprintf("f%d-w%d-%d", i, w, j)
				seq, err := c.send(ctx, fmt.Sprintf("f%d", i), id)
				if err != nil {
					t.Errorf("send %s: %v", id, err)
					return
				}
				mu.Lock()
				acked[i][seq] = id
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	c.stopReplica(victim)
	// Every channel gets a new leader among the survivors.
	require.Eventually(t, func() bool {
		for i := range channels {
			ch, _ := c.arbiter.FSM().Channel(fmt.Sprintf("f%d", i))
			if ch.Leader == victim || ch.State != arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
				if _, err := c.resolve(ctx, fmt.Sprintf("f%d", i), victim); err != nil {
					return false
				}
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	// The arbiter declares the stopped node dead once its lease and margin ran out and its
	// peers confirmed they lost it too.
	require.Eventually(t, func() bool {
		dead, _ := c.arbiter.FSM().Node(victim)
		return dead.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD
	}, 10*time.Second, 10*time.Millisecond)
	for i := range channels {
		requireExactlyOnce(t, c, ctx, fmt.Sprintf("f%d", i), acked[i])
	}
}

func TestIdleChannelsHibernateAndWake(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := startCluster(t, time.Second)
	ctx := testCtx(t, 120*time.Second)
	const channels = 100
	for i := range channels {
		_, err := c.send(ctx, fmt.Sprintf("h%d", i), "first")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		for _, r := range c.replicas {
			if len(r.Engine.Loaded()) > 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 100*time.Millisecond, "idle channels leave the replicas' memory")
	for i := range channels {
		ch, _ := c.arbiter.FSM().Channel(fmt.Sprintf("h%d", i))
		require.Equal(t, arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED, ch.State)
	}
	for i := range channels {
		seq, err := c.send(ctx, fmt.Sprintf("h%d", i), "second")
		require.NoError(t, err)
		require.Equal(t, uint64(2), seq, "a woken channel continues its sequence")
		requireExactlyOnce(t, c, ctx, fmt.Sprintf("h%d", i), map[uint64]string{1: "first", 2: "second"})
	}
}

func TestChannelctlLossMovesItsSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := startCluster(t, time.Hour)
	ctx := testCtx(t, 120*time.Second)
	for i := range 40 {
		_, err := c.send(ctx, fmt.Sprintf("s%d", i), "first")
		require.NoError(t, err)
	}
	stopService(t, c.ctls[1])
	delete(c.ctls, 1)
	require.Eventually(t, func() bool {
		for _, s := range c.arbiter.FSM().Slots() {
			if s.Owner != 102 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the surviving channelctl owns every slot")
	// Failover still works under the new owner.
	ch, _ := c.arbiter.FSM().Channel("s0")
	victim := ch.Leader
	c.stopReplica(victim)
	for i := range 40 {
		seq, err := c.send(ctx, fmt.Sprintf("s%d", i), "second")
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
	jitter := func(c *cluster) {
		c.fault = func(uint64) (time.Duration, bool) {
			return time.Duration(rand.N(200)) * time.Millisecond, rand.N(100) < 5
		}
	}
	c := startCluster(t, time.Hour, jitter)
	ctx := testCtx(t, 120*time.Second)
	const channels = 10
	// The arbiter's record (epoch, leader term) and every replica's raft term must not move:
	// a group electing itself would show in the replicas' terms even if nobody recorded it.
	type position struct{ epoch, term uint64 }
	terms := func(id string) []uint64 {
		var out []uint64
		for n := uint64(1); n <= 3; n++ {
			st, err := c.replicas[n].Engine.GroupStatus(ctx, id)
			require.NoError(t, err)
			out = append(out, st.GetTerm())
		}
		return out
	}
	termsBefore := map[string][]uint64{}
	before := map[string]position{}
	for i := range channels {
		id := fmt.Sprintf("j%d", i)
		_, err := c.send(ctx, id, "first")
		require.NoError(t, err)
		ch, _ := c.arbiter.FSM().Channel(id)
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
				_, err := c.send(ctx, fmt.Sprintf("j%d", (w+4*j)%channels), fmt.Sprintf("w%d-%d", w, j))
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for id, p := range before {
		ch, _ := c.arbiter.FSM().Channel(id)
		require.Equal(t, p, position{ch.Epoch, ch.LeaderTerm}, "channel %s was re-elected", id)
		require.Equal(t, termsBefore[id], terms(id), "a replica of %s changed term", id)
		msgs, err := c.readAll(ctx, id)
		require.NoError(t, err)
		sent += len(msgs)
	}
	for _, n := range c.arbiter.FSM().Nodes() {
		require.Equal(t, arbiterv1.NodeState_NODE_STATE_ALIVE, n.Liveness, "node %d", n.ID)
	}
	t.Logf("%d messages committed under jitter, zero elections", sent)
}
