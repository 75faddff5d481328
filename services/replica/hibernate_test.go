package replica

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// liveHeap is the heap in use after two full collections.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// settledHeap is the least live heap over a few samples: buffers that are in use only
// transiently (a frame being decoded, a response being sent) do not count.
func settledHeap() uint64 {
	least := liveHeap()
	for range 4 {
		time.Sleep(25 * time.Millisecond)
		least = min(least, liveHeap())
	}
	return least
}

// forEach runs f(i) for i in [0, n) on workers goroutines and fails the test if any call
// failed, showing the first few errors.
func forEach(t testing.TB, n, workers int, f func(i int) error) {
	t.Helper()
	var (
		wg     sync.WaitGroup
		next   = make(chan int)
		mu     sync.Mutex
		errs   []error
		failed int
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if failed++; len(errs) < 5 {
						errs = append(errs, fmt.Errorf("item %d: %w", i, err))
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	require.Zero(t, failed, "%d of %d failed, first: %v", failed, n, errs)
}

// readChannel reads a whole channel from seq 1 (safe off the test goroutine).
func readChannel(cl replicav1.ReplicaServiceClient, channel string) ([]*triarchv1.Message, error) {
	var out []*triarchv1.Message
	from := uint64(1)
	for {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, err := readServed(cctx, cl, &replicav1.ReadRequest{ChannelId: channel, FromSeq: from, Limit: 1000})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("read %s from %d: %w", channel, from, err)
		}
		if len(resp.GetMessages()) == 0 {
			return out, nil
		}
		out = append(out, resp.GetMessages()...)
		from = resp.GetMessages()[len(resp.GetMessages())-1].GetSeq() + 1
	}
}

// unloadEverywhere unloads the channels on every replica, retrying the ones that are not yet
// at rest (a follower learns the last commit index from the leader's next heartbeat).
func (c *cluster) unloadEverywhere(names []string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n := range c.ctl {
		pending := names
		for len(pending) > 0 {
			resp, err := c.ctl[n].UnloadGroups(ctx(c.t), &replicav1.UnloadGroupsRequest{ChannelIds: pending})
			require.NoError(c.t, err)
			var again []string
			for _, r := range resp.GetResults() {
				if e := r.GetError(); e != nil {
					require.Equal(c.t, int32(codes.FailedPrecondition), e.GetCode(), "node %d: unload %s: %s", n+1, r.GetChannelId(), e.GetMessage())
					again = append(again, r.GetChannelId())
				}
			}
			pending = again
			if len(pending) > 0 {
				require.True(c.t, time.Now().Before(deadline), "node %d: %d channels never came to rest, e.g. %s", n+1, len(pending), pending[0])
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// electPatiently is elect for many channels at once, with a deadline that also suits the
// race detector: it re-orders the campaigns that have not completed until node leads them
// all.
func (c *cluster) electPatiently(node int, channels []string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	pending := channels
	for len(pending) > 0 {
		require.True(c.t, time.Now().Before(deadline), "node %d never led %d channels, e.g. %s", node, len(pending), pending[0])
		orders := make([]*replicav1.CampaignOrder, len(pending))
		for i, ch := range pending {
			orders[i] = &replicav1.CampaignOrder{ChannelId: ch}
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := c.ctl[node-1].Campaign(cctx, &replicav1.CampaignRequest{Orders: orders})
		cancel()
		require.NoError(c.t, err)
		pending = c.notLeading(node, pending)
	}
}

// channelSet names n channels and their group specs on this cluster.
func (c *cluster) channelSet(prefix string, group0 uint64, n int) ([]string, []*replicav1.GroupSpec) {
	names := make([]string, n)
	specs := make([]*replicav1.GroupSpec, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%04d", prefix, i)
		specs[i] = c.spec(names[i], group0+uint64(i))
	}
	return names, specs
}

// hibernationCycle loads the channels, elects their leaders round robin, gives channel i
// i%3+1 messages, and returns the live heap with them all active, then hibernates them
// everywhere.
func (c *cluster) hibernationCycle(names []string, specs []*replicav1.GroupSpec) (active uint64) {
	c.t.Helper()
	byLeader := make([][]string, 3)
	for i, name := range names {
		byLeader[i%3] = append(byLeader[i%3], name)
	}
	c.load(specs...)
	for node, chs := range byLeader {
		c.electPatiently(node+1, chs)
	}
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	forEach(c.t, len(names), 32, func(i int) error {
		resp, err := c.data[i%3].Append(cctx, &replicav1.AppendRequest{ChannelId: names[i], Messages: msgs(msgIDs(names[i], i%3+1)...)})
		if err == nil && len(resp.GetResults()) != i%3+1 {
			err = fmt.Errorf("%d results for %d messages", len(resp.GetResults()), i%3+1)
		}
		return err
	})
	active = settledHeap()
	c.unloadEverywhere(names)
	return active
}

func msgIDs(channel string, n int) []string {
	ids := make([]string, n)
	for j := range ids {
		ids[j] = fmt.Sprintf("%s-m%d", channel, j)
	}
	return ids
}

// requireNothingLoaded checks that no replica's engine or host holds any channel.
func (c *cluster) requireNothingLoaded() {
	c.t.Helper()
	for i, s := range c.svcs {
		require.Empty(c.t, s.Engine.Loaded(), "node %d engine", i+1)
		groups, err := s.Host.Groups(ctx(c.t))
		require.NoError(c.t, err)
		require.Empty(c.t, groups, "node %d host", i+1)
		require.Zero(c.t, s.Engine.waits.Pending(), "node %d proposals waiting", i+1)
	}
}

// requireMemoryBounds checks what hibernating released and kept per group.
func (c *cluster) requireMemoryBounds(released, kept int64) {
	c.t.Helper()
	// A loaded group holds a RawNode, a chanlog with its dedup window and the store's cache:
	// several KiB. If unloading kept any of it, little would come back.
	require.Greater(c.t, released, int64(1024), "hibernating released too little")
	// 1,000 more hibernated channels must cost (almost) nothing: no state per channel stays.
	require.Less(c.t, kept, int64(256), "hibernated channels still cost memory")
}

// Hibernate and wake 1,000 channels through the engine, on three replicas over gRPC and
// Badger: the memory goes, no per-channel state stays in the engine or the host, and every
// message, sequence number and dedup entry is there after waking under other leaders.
//
// Two sets of 1,000 channels go through the cycle. The first shows what hibernation costs
// the first time (including the maps and stage buffers that grew to the peak and that Go
// does not shrink); the second, measured once those have grown, is what a hibernated
// channel itself still costs, which must be about nothing.
func TestHibernateAndWakeThousandChannels(t *testing.T) {
	if testing.Short() {
		t.Skip("2 x 1,000 channels on three replicas")
	}
	n := 1000
	if raceEnabled {
		n = 150 // same paths, in a time the race detector allows; memory bounds not checked
	}
	c := newCluster(t)
	warmNames, warmSpecs := c.channelSet("warm", 1000, n)
	names, specs := c.channelSet("hib", 5000, n)
	empty := settledHeap()

	activeA := c.hibernationCycle(warmNames, warmSpecs)
	afterA := settledHeap()
	c.requireNothingLoaded()
	activeB := c.hibernationCycle(names, specs)
	afterB := settledHeap()
	c.requireNothingLoaded()

	per := func(a, b uint64) int64 { return (int64(a) - int64(b)) / int64(3*n) }
	t.Logf("heap: %d B with empty replicas; first %d channels: %d B active, %d B hibernated; second set: %d B active, %d B hibernated",
		empty, n, activeA, afterA, activeB, afterB)
	t.Logf("per group on each of 3 replicas: %d B released by hibernating (first set), %d B (second set)",
		per(activeA, afterA), per(activeB, afterB))
	t.Logf("per hibernated group: %d B the first time (peak-sized maps and buffers included), %d B once warm",
		per(afterA, empty), per(afterB, afterA))
	if raceEnabled {
		t.Log("race detector on: memory bounds not checked")
	} else {
		c.requireMemoryBounds(per(activeB, afterB), per(afterB, afterA))
	}

	// Status of a hibernated channel comes from disk.
	st, err := c.ctl[1].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{names[5]}})
	require.NoError(t, err)
	require.False(t, st.GetResults()[0].GetStatus().GetLoaded())
	require.Equal(t, uint64(5%3+1), st.GetResults()[0].GetStatus().GetLastSeq())

	// Wake: load again and elect the next node for each channel.
	c.load(specs...)
	byLeader := make([][]string, 3)
	for i, name := range names {
		byLeader[(i+1)%3] = append(byLeader[(i+1)%3], name)
	}
	for node, chs := range byLeader {
		c.electPatiently(node+1, chs)
	}
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	forEach(t, n, 32, func(i int) error {
		leader := c.data[(i+1)%3]
		got, err := readChannel(leader, names[i])
		if err != nil {
			return err
		}
		want := msgIDs(names[i], i%3+1)
		if len(got) != len(want) {
			return fmt.Errorf("%s: %d messages after waking, want %d", names[i], len(got), len(want))
		}
		for j, m := range got {
			if m.GetSeq() != uint64(j+1) || m.GetClientMsgId() != want[j] {
				return fmt.Errorf("%s: message %d is seq %d id %q", names[i], j, m.GetSeq(), m.GetClientMsgId())
			}
		}
		// The dedup window came back too: a resend is recognised, a new message continues
		// the sequence.
		resp, err := leader.Append(cctx, &replicav1.AppendRequest{ChannelId: names[i], Messages: msgs(want[0], names[i]+"-new")})
		if err != nil {
			return err
		}
		r := resp.GetResults()
		if r[0].GetSeq() != 1 || !r[0].GetDuplicate() || r[1].GetSeq() != uint64(len(want)+1) || r[1].GetDuplicate() {
			return fmt.Errorf("%s: append after waking gave %v", names[i], r)
		}
		return nil
	})
	for i, s := range c.svcs {
		require.Len(t, s.Engine.Loaded(), n, "node %d", i+1)
	}
}
