package tests

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/suite"
)

// BenchmarkActivation measures the first send to a hibernated channel: the client resolves the
// channel at the channelctl that owns it (which activates it: claim, load, decide, campaign,
// confirm, record) and appends at the leader it is given. 1,000 channels are created and left to
// hibernate (hibernate-after 1 s), then each gets one send, one at a time or from 16 clients at
// once. Channels woken earlier in the pass hibernate again 1 s later, so the pass runs beside a
// steady stream of hibernations, as a real cluster would. Run with -benchtime 1x.
//
// Metrics: p50-ms, p99-ms, max-ms of the whole first send; resolve-p50-ms, resolve-p99-ms and
// append-p99-ms of its two calls; retries (sends that needed more than one resolve and append).
func BenchmarkActivation(b *testing.B) {
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("channels=1000/concurrency=%d", conc), func(b *testing.B) {
			for range b.N {
				activationOnce(b, 1000, conc)
			}
		})
	}
	// The same first send through the gateway of the one-process suite, with every RPC span
	// recorded: the time of one activation split into the calls on its path.
	b.Run("channels=200/breakdown", func(b *testing.B) {
		for range b.N {
			activationBreakdown(b, 200)
		}
	})
}

func activationOnce(b *testing.B, channels, conc int) {
	b.StopTimer()
	c := testcluster.Start(b, testcluster.HibernateAfter(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	name := func(i int) string { return fmt.Sprintf("a%d", i) }
	if err := parallel(channels, 32, func(i int) error {
		_, err := c.Send(ctx, name(i), "first")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	owners := ctlOwners(c)
	awaitHibernated(b, c, channels, name)

	var (
		mu                      sync.Mutex
		total, resolve, appends []time.Duration
		retries                 int
	)
	b.StartTimer()
	err := parallel(channels, conc, func(i int) error {
		id := name(i)
		ch, _ := c.Arbiter(1).FSM().Channel(id)
		start := time.Now()
		res, err := ownerResolve(ctx, c, owners[ch.Slot], id)
		resolved := time.Now()
		if err == nil {
			_, err = replicav1.NewReplicaServiceClient(c.Dial(res.GetLeaderAddress())).Append(ctx, &replicav1.AppendRequest{ChannelId: id,
				Messages: []*triarchv1.MessageInput{{ClientMsgId: "second", Payload: []byte("second")}}})
		}
		retried := err != nil
		if retried {
			// Whatever went wrong, the client retries as the gateway would.
			if _, err = c.Send(ctx, id, "second"); err != nil {
				return err
			}
		}
		done := time.Now()
		mu.Lock()
		defer mu.Unlock()
		total = append(total, done.Sub(start))
		if retried {
			retries++
		} else {
			resolve = append(resolve, resolved.Sub(start))
			appends = append(appends, done.Sub(resolved))
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	p50, p99, pmax := quantiles(total)
	r50, r99, _ := quantiles(resolve)
	_, a99, _ := quantiles(appends)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(pmax, "max-ms")
	b.ReportMetric(r50, "resolve-p50-ms")
	b.ReportMetric(r99, "resolve-p99-ms")
	b.ReportMetric(a99, "append-p99-ms")
	b.ReportMetric(float64(retries), "retries")
}

// ctlOwners maps each slot to the address of the channelctl that owns it, as a gateway learns
// it from NotOwner answers.
func ctlOwners(c *testcluster.Cluster) map[uint32]string {
	out := map[uint32]string{}
	for _, s := range c.Arbiter(1).FSM().Slots() {
		if ctl := c.Channelctl(s.Owner); ctl != nil {
			out[s.Slot] = ctl.Advertise()
		}
	}
	return out
}

func ownerResolve(ctx context.Context, c *testcluster.Cluster, ctl, channel string) (*channelctlv1.ResolveChannelResponse, error) {
	if ctl == "" {
		return c.Resolve(ctx, channel, 0)
	}
	return channelctlv1.NewChannelControlServiceClient(c.Dial(ctl)).ResolveChannel(ctx,
		&channelctlv1.ResolveChannelRequest{ChannelId: channel, CreateIfMissing: true, ReplicationFactor: 3})
}

// awaitHibernated waits until every channel is recorded hibernated and no replica holds any.
func awaitHibernated(b *testing.B, c *testcluster.Cluster, channels int, name func(int) string) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		done := true
		for _, r := range c.Replicas() {
			done = done && len(r.Engine.Loaded()) == 0
		}
		for i := 0; done && i < channels; i++ {
			ch, _ := c.Arbiter(1).FSM().Channel(name(i))
			done = ch.State == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("channels did not hibernate")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// activationBreakdown sends the first message to each of the channels through the suite's
// gateway, one at a time, after they all hibernated; hibernate-after is long enough that none
// hibernates again during the pass, so every RPC span that starts within a send belongs to it.
// It reports, per send, the median count and time of each kind of call on the path.
func activationBreakdown(b *testing.B, channels int) {
	b.StopTimer()
	rec := tracetest.NewSpanRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "activation-bench", NodeID: 1, LogWriter: io.Discard,
		SpanProcessors: []sdktrace.SpanProcessor{rec}, Getenv: sampleEverything})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	const hibernate = 10 * time.Second
	s, err := suite.Start(ctx, suite.Config{DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", HibernateAfter: hibernate}, tel)
	if err != nil {
		b.Fatal(err)
	}
	defer testutil.Stop(b, s)
	conn, err := grpcx.Dial(s.GRPCAddr(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	cl := triarchv1.NewTriarchServiceClient(conn)
	name := func(i int) string { return fmt.Sprintf("z%d", i) }
	send := func(i int, msg string) error {
		_, err := cl.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: name(i),
			Messages: []*triarchv1.MessageInput{{ClientMsgId: msg, Payload: []byte(msg)}}})
		return err
	}
	if err := parallel(channels, 32, func(i int) error { return send(i, "first") }); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(hibernate + 2*time.Minute)
	for {
		done := true
		for _, r := range s.Replicas {
			done = done && len(r.Engine.Loaded()) == 0
		}
		for i := 0; done && i < channels; i++ {
			ch, _ := s.Arbiter.FSM().Channel(name(i))
			done = ch.State == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("channels did not hibernate")
		}
		time.Sleep(100 * time.Millisecond)
	}

	type window struct{ start, end time.Time }
	windows := make([]window, channels)
	b.StartTimer()
	passStart := time.Now()
	for i := range channels {
		windows[i].start = time.Now()
		if err := send(i, "second"); err != nil {
			b.Fatal(err)
		}
		windows[i].end = time.Now()
	}
	b.StopTimer()
	if pass := time.Since(passStart); pass >= hibernate {
		b.Logf("the pass took %v, longer than hibernate-after %v: late windows may hold hibernation calls", pass, hibernate)
	}
	// Let the last spans end, then file every RPC span under the send whose window holds its
	// start. Client spans show the caller's view (the channelctl's calls to the arbiter and the
	// replicas, the gateway's to the channelctl and the leader); raft traffic between replicas
	// is streamed and has no per-call spans.
	time.Sleep(200 * time.Millisecond)
	spans := rec.Ended()
	type key struct{ kind, name string }
	per := make([]map[key][]time.Duration, channels)
	failed := map[string]int{}
	for i := range per {
		per[i] = map[key][]time.Duration{}
	}
	for _, sp := range spans {
		if sp.SpanKind() != trace.SpanKindClient && sp.SpanKind() != trace.SpanKindServer {
			continue
		}
		if strings.Contains(sp.Name(), "RaftTransport") || strings.Contains(sp.Name(), "Watch") {
			continue
		}
		st := sp.StartTime()
		j := sort.Search(channels, func(j int) bool { return !windows[j].end.Before(st) })
		if j == channels || st.Before(windows[j].start) {
			continue
		}
		k := key{sp.SpanKind().String(), sp.Name()}
		per[j][k] = append(per[j][k], sp.EndTime().Sub(st))
		if sp.Status().Code == codes.Error {
			failed[k.kind+" "+k.name+": "+strings.TrimSuffix(sp.Status().Description, name(j))]++
		}
	}
	var total []time.Duration
	for _, w := range windows {
		total = append(total, w.end.Sub(w.start))
	}
	p50, p99, pmax := quantiles(total)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(pmax, "max-ms")
	// Per kind of call: median calls per send and median of their summed time per send.
	kinds := map[key]bool{}
	for _, m := range per {
		for k := range m {
			kinds[k] = true
		}
	}
	var lines []string
	for k := range kinds {
		var counts []int
		var sums, each []time.Duration
		for _, m := range per {
			counts = append(counts, len(m[k]))
			var sum time.Duration
			for _, d := range m[k] {
				sum += d
				each = append(each, d)
			}
			sums = append(sums, sum)
		}
		sort.Ints(counts)
		s50, s99, _ := quantiles(sums)
		e50, e99, _ := quantiles(each)
		lines = append(lines, fmt.Sprintf("%-6s %-72s calls/send p50 %d max %d; time/send p50 %6.2f ms p99 %6.2f ms; per call p50 %6.2f ms p99 %6.2f ms",
			k.kind, k.name, counts[len(counts)/2], counts[len(counts)-1], s50, s99, e50, e99))
	}
	sort.Strings(lines)
	for f, n := range failed {
		lines = append(lines, fmt.Sprintf("failed %d times: %s", n, f))
	}
	b.Logf("first send to %d hibernated channels through the gateway, one at a time: p50 %.2f ms p99 %.2f ms max %.2f ms\n%s",
		channels, p50, p99, pmax, strings.Join(lines, "\n"))
}
