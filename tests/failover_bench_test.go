package tests

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
)

// BenchmarkFailover kills the replica that leads the most of N channels and measures, per
// channel it led, the time from the kill to the channel accepting writes again, split into
// detection (kill to the arbiter's dead declaration, once for all channels) and election
// (declaration to the new leader recorded active in the arbiter, per channel); the first append
// at the recorded leader then shows when writes are accepted. No client sends meanwhile, so the
// failover is driven by the arbiter's declaration alone. Run with -benchtime 1x: each iteration
// is a whole cluster.
//
// Metrics: detect-ms; elect-p50-ms, elect-p99-ms (declaration to recorded); p50-ms, p99-ms,
// max-ms (kill to the first accepted write); channels-moved; setup-s (creating the channels).
var failoverSizes = flag.String("tests.failover-channels", "", "comma-separated channel counts for BenchmarkFailover (default 1,1000,10000)")

func BenchmarkFailover(b *testing.B) {
	sizes := []int{1, 1000, 10000}
	if *failoverSizes != "" {
		sizes = nil
		for _, f := range strings.Split(*failoverSizes, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("-tests.failover-channels: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("channels=%d", n), func(b *testing.B) {
			for range b.N {
				failoverOnce(b, n)
			}
		})
	}
}

func failoverOnce(b *testing.B, channels int) {
	b.StopTimer()
	c := testcluster.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	name := func(i int) string { return fmt.Sprintf("b%d", i) }
	setup := time.Now()
	ids := make([]string, channels)
	for i := range ids {
		ids[i] = name(i)
	}
	if err := createActive(b, ctx, c, ids); err != nil {
		b.Fatal(err)
	}
	setupTook := time.Since(setup)
	led := map[uint64][]string{}
	for i := range channels {
		ch, _ := c.Arbiter(1).FSM().Channel(name(i))
		led[ch.Leader] = append(led[ch.Leader], ch.ID)
	}
	victim := uint64(1)
	for n, ids := range led {
		if len(ids) > len(led[victim]) {
			victim = n
		}
	}
	orphans := led[victim]
	addrs := map[uint64]string{}
	for _, n := range c.IDs(testcluster.KindReplica) {
		if n != victim {
			addrs[n] = c.Addr(testcluster.KindReplica, n)
		}
	}

	// Probes append once at each channel's recorded leader as soon as the arbiter records it,
	// retrying until the leader accepts.
	type probe struct {
		id     string
		leader uint64
	}
	var (
		mu       sync.Mutex
		writable = map[string]time.Duration{}
		probeErr error
		wg       sync.WaitGroup
	)
	work := make(chan probe, len(orphans))
	b.StartTimer()
	killed := time.Now()
	// Enough probes that, with thousands of channels moved, the probing itself does not queue
	// behind one another and show up as unavailability.
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				cl := replicav1.NewReplicaServiceClient(c.Dial(addrs[p.leader]))
				for {
					_, err := cl.Append(ctx, &replicav1.AppendRequest{ChannelId: p.id,
						Messages: []*triarchv1.MessageInput{{ClientMsgId: "probe", Payload: []byte("probe")}}})
					if err == nil {
						mu.Lock()
						writable[p.id] = time.Since(killed)
						mu.Unlock()
						break
					}
					if ctx.Err() != nil {
						mu.Lock()
						probeErr = fmt.Errorf("probe %s at %d: %w", p.id, p.leader, err)
						mu.Unlock()
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	c.Stop(testcluster.KindReplica, victim)
	var declared time.Time
	recorded := map[string]time.Time{}
	for len(recorded) < len(orphans) {
		if time.Since(killed) > 5*time.Minute {
			b.Fatalf("%d of %d channels failed over", len(recorded), len(orphans))
		}
		if declared.IsZero() {
			if n, _ := c.Arbiter(1).FSM().Node(victim); n.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD {
				declared = time.Now()
			}
		}
		for _, id := range orphans {
			if _, ok := recorded[id]; ok {
				continue
			}
			ch, _ := c.Arbiter(1).FSM().Channel(id)
			if ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && ch.Leader != victim && ch.Leader != 0 {
				recorded[id] = time.Now()
				work <- probe{id, ch.Leader}
			}
		}
		time.Sleep(time.Millisecond)
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	if probeErr != nil {
		b.Fatal(probeErr)
	}
	if declared.IsZero() {
		// Every channel was recorded before the declaration was seen; read it once more.
		if n, _ := c.Arbiter(1).FSM().Node(victim); n.Liveness == arbiterv1.NodeState_NODE_STATE_DEAD {
			declared = time.Now()
		}
	}
	var elect, total []time.Duration
	for _, id := range orphans {
		elect = append(elect, recorded[id].Sub(declared))
		total = append(total, writable[id])
	}
	detect := declared.Sub(killed)
	e50, e99, _ := quantiles(elect)
	p50, p99, pmax := quantiles(total)
	b.ReportMetric(float64(detect.Microseconds())/1000, "detect-ms")
	b.ReportMetric(e50, "elect-p50-ms")
	b.ReportMetric(e99, "elect-p99-ms")
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(pmax, "max-ms")
	b.ReportMetric(float64(len(orphans)), "channels-moved")
	b.ReportMetric(setupTook.Seconds(), "setup-s")
}

// createActive creates the channels in the arbiter and has their channelctls activate them
// with batched Instruct calls: activation then runs in the machines' batched rounds, where
// waking each channel with its own first send would take one resolve per channel.
//
// Placement needs every replica registered and alive: testcluster.Start waits for that.
func createActive(tb testing.TB, ctx context.Context, c *testcluster.Cluster, ids []string) error {
	arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, 1)))
	if err := parallel(len(ids), 64, func(i int) error {
		_, err := arb.CreateChannel(ctx, &arbiterv1.CreateChannelRequest{ChannelId: ids[i], ReplicationFactor: 3})
		return err
	}); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	tb.Logf("created %d channels in the arbiter", len(ids))
	for {
		byOwner := map[uint64][]*channelctlv1.Instruction{}
		slots := c.Arbiter(1).FSM().Slots()
		for _, id := range ids {
			ch, _ := c.Arbiter(1).FSM().Channel(id)
			if ch.State == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED {
				owner := slots[ch.Slot].Owner
				byOwner[owner] = append(byOwner[owner], &channelctlv1.Instruction{ChannelId: id,
					Kind: &channelctlv1.Instruction_Activate{Activate: true}})
			}
		}
		if len(byOwner) == 0 && activeCount(c, ids) == len(ids) {
			return nil
		}
		for owner, ins := range byOwner {
			s := c.Channelctl(owner)
			if s == nil {
				return fmt.Errorf("slot owner %d is not a channelctl of this cluster", owner)
			}
			cl := channelctlv1.NewChannelControlServiceClient(c.Dial(s.Advertise()))
			for chunk := range slices.Chunk(ins, 1000) {
				if _, err := cl.Instruct(ctx, &channelctlv1.InstructRequest{Instructions: chunk}); err != nil {
					return fmt.Errorf("activate: %w", err)
				}
			}
		}
		// Activations under way leave HIBERNATED at once; those refused (busy) are asked again
		// if they have not moved within two seconds.
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if activeCount(c, ids) == len(ids) {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func activeCount(c *testcluster.Cluster, ids []string) int {
	n := 0
	for _, id := range ids {
		if ch, _ := c.Arbiter(1).FSM().Channel(id); ch.State == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
			n++
		}
	}
	return n
}
