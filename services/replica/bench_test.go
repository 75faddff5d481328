package replica

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/raftnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// The benchmarks run three replicas in this process over real gRPC (loopback) and Badger with
// an fsync per append round, 128-byte messages with client_msg_ids, and leaders spread over the
// three nodes (channel i is led by node i%3+1). The load generators run in the same process
// and share its CPUs.
//
// Each benchmark does a fixed amount of wall-clock work and reports its own metrics, so run
// them with -benchtime=1x (b.N is not used) and choose the duration with
// -replica.bench-duration. For example:
//
//	go test ./services/replica -run '^$' -bench 'Committed' -benchtime 1x -count 5 -replica.bench-duration 10s
var (
	benchDuration = flag.Duration("replica.bench-duration", 5*time.Second, "how long each replica benchmark loads the cluster")
	benchClients  = flag.Int("replica.bench-clients", 0, "override the number of concurrent clients of the throughput benchmarks")
	benchRate     = flag.Float64("replica.bench-rate", 0, "messages/s of the open-loop latency benchmark (0: half the peak it measures first)")
	// Experiments only: the store's defaults are what the service runs with.
	benchVlogMB = flag.Int("replica.bench-vlog-mb", 0, "experiment: Badger value log file size in MiB (0: the store's default)")
	benchMemMB  = flag.Int("replica.bench-memtable-mb", 0, "experiment: Badger memtable size in MiB (0: the store's default)")
	// Unlike -test.cpuprofile, this leaves out the cluster's setup and warm-up.
	benchCPUProfile = flag.String("replica.bench-cpuprofile", "", "write a CPU profile of the measured part of BenchmarkCommitted to this file (each sub-benchmark overwrites it: select one)")
)

const benchPayload = 128

// countingStore is the node's Badger store, counting what the append stage makes durable. A
// Save that writes entries (or a snapshot) ends with exactly one db.Sync(); a Save whose
// updates only move commit indexes writes nothing and does not sync (see Badger.Save). Saves
// that change only term or vote also sync; they happen only at elections and are not
// counted here.
type countingStore struct {
	*raftstore.Badger
	saves     atomic.Int64
	syncs     atomic.Int64
	syncNanos atomic.Int64
	entries   atomic.Int64
}

func (s *countingStore) Save(updates []raftstore.Update) error {
	start := time.Now()
	err := s.Badger.Save(updates)
	d := time.Since(start)
	s.saves.Add(1)
	n := 0
	for _, u := range updates {
		n += len(u.Entries)
		if u.Snapshot != nil {
			n++
		}
	}
	if n > 0 {
		s.syncs.Add(1)
		s.syncNanos.Add(int64(d))
		s.entries.Add(int64(n))
	}
	return err
}

// countingTransport counts the raft messages the host sends, and among them heartbeats.
type countingTransport struct {
	multiraft.Transport
	msgs, heartbeats atomic.Int64
}

func (t *countingTransport) Send(envs []multiraft.Envelope) {
	hb := 0
	for _, e := range envs {
		if e.Msg.GetType() == raftpb.MessageType_MsgHeartbeat {
			hb++
		}
	}
	t.msgs.Add(int64(len(envs)))
	t.heartbeats.Add(int64(hb))
	t.Transport.Send(envs)
}

// benchNode is one replica wired as Start wires it (store, host, transport, engine, gRPC
// services, 100 ms ticks, heartbeat every 2 ticks, no arbiter), except that its store is
// wrapped in a countingStore and the host's transport in a countingTransport.
type benchNode struct {
	id        uint64
	store     *countingStore
	engine    *Engine
	host      *multiraft.Host
	transport *raftnet.Transport
	sent      *countingTransport
	proc      *process.Process
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	hostErr   error
	conns     []*grpc.ClientConn
	data      []replicav1.ReplicaServiceClient
	ctl       replicav1.ReplicaControlServiceClient
}

const benchConnsPerNode = 4

func startBenchNode(tb testing.TB, id uint64, dir string) *benchNode {
	tb.Helper()
	tel := testutil.Telemetry(tb, "replica-bench", id)
	opts := []raftstore.BadgerOption{raftstore.WithLogger(tel.Logger)}
	if *benchVlogMB > 0 || *benchMemMB > 0 {
		opts = append(opts, raftstore.WithBadgerTuning(func(o *badger.Options) {
			if *benchVlogMB > 0 {
				o.ValueLogFileSize = int64(*benchVlogMB) << 20
			}
			if *benchMemMB > 0 {
				o.MemTableSize = int64(*benchMemMB) << 20
			}
		}))
	}
	bdg, err := raftstore.OpenBadger(dir, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	n := &benchNode{id: id, store: &countingStore{Badger: bdg}}
	dial := func(addr string) (*grpc.ClientConn, error) { return grpcx.Dial(addr, tel) }
	n.transport = raftnet.New(raftnet.Config{NodeID: id, Dial: dial, Log: tel.Logger}, nil)
	cfg := Config{DedupWindow: 24 * time.Hour, DedupMaxIDs: 100_000}
	cfg.Defaults()
	n.engine = NewEngine(EngineConfig{NodeID: id, Store: n.store, Log: tel.Logger,
		Dedup: chanlog.Config{Window: cfg.DedupWindow, MaxIDs: cfg.DedupMaxIDs}, LeaseTTL: cfg.LeaseTTL})
	n.sent = &countingTransport{Transport: n.transport}
	n.host, err = multiraft.New(multiraft.Config{NodeID: id, Store: n.store, Transport: n.sent, Applier: n.engine,
		Logger: tel.Logger, HeartbeatTick: cfg.HeartbeatTicks, ElectionTick: 10 * cfg.HeartbeatTicks})
	if err != nil {
		tb.Fatal(err)
	}
	n.transport.SetHost(n.host)
	h := &handler{e: n.engine}
	n.proc, err = process.Start(process.Common{NodeID: id, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DataDir: dir}, tel,
		process.Options{Register: func(g *grpc.Server) {
			replicav1.RegisterReplicaServiceServer(g, h)
			replicav1.RegisterReplicaControlServiceServer(g, h)
			raftv1.RegisterRaftTransportServiceServer(g, n.transport.Server())
		}})
	if err != nil {
		tb.Fatal(err)
	}
	n.engine.Attach(n.host, n.transport, nil)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Go(func() {
		if err := n.host.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			n.hostErr = err
		}
	})
	n.wg.Go(func() {
		t := time.NewTicker(cfg.TickInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.host.Tick()
			}
		}
	})
	for range benchConnsPerNode {
		conn, err := grpc.NewClient(n.proc.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		n.conns = append(n.conns, conn)
		n.data = append(n.data, replicav1.NewReplicaServiceClient(conn))
	}
	n.ctl = replicav1.NewReplicaControlServiceClient(n.conns[0])
	return n
}

func (n *benchNode) stop(tb testing.TB) {
	n.cancel()
	n.wg.Wait()
	n.transport.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := []error{n.hostErr, n.proc.Stop(ctx), n.engine.Close(), n.store.Close()}
	for _, c := range n.conns {
		_ = c.Close()
	}
	if err := errors.Join(errs...); err != nil {
		tb.Errorf("node %d: stop: %v", n.id, err)
	}
}

type benchCluster struct {
	tb    testing.TB
	nodes []*benchNode
}

func startBenchCluster(tb testing.TB) *benchCluster {
	tb.Helper()
	c := &benchCluster{tb: tb}
	for id := uint64(1); id <= 3; id++ {
		c.nodes = append(c.nodes, startBenchNode(tb, id, tb.TempDir()))
	}
	tb.Cleanup(func() {
		for _, n := range c.nodes {
			n.stop(tb)
		}
	})
	return c
}

func (c *benchCluster) specs(names []string, group0 uint64) []*replicav1.GroupSpec {
	out := make([]*replicav1.GroupSpec, len(names))
	for i, name := range names {
		sp := &replicav1.GroupSpec{ChannelId: name, GroupId: group0 + uint64(i)}
		for _, n := range c.nodes {
			sp.Replicas = append(sp.Replicas, &replicav1.Peer{NodeId: n.id, Address: n.proc.Advertise()})
		}
		out[i] = sp
	}
	return out
}

func benchCtx(tb testing.TB, d time.Duration) context.Context { return testutil.Context(tb, d) }

// setup loads the channels on every node (in slices, as channelctl batches) and elects
// channel i's leader on node i%3+1.
func (c *benchCluster) setup(names []string, group0 uint64) {
	c.tb.Helper()
	specs := c.specs(names, group0)
	for _, n := range c.nodes {
		for lo := 0; lo < len(specs); lo += 2000 {
			resp, err := n.ctl.LoadGroups(benchCtx(c.tb, time.Minute), &replicav1.LoadGroupsRequest{Groups: specs[lo:min(lo+2000, len(specs))]})
			if err != nil {
				c.tb.Fatal(err)
			}
			for _, r := range resp.GetResults() {
				if r.GetError() != nil {
					c.tb.Fatalf("node %d: load %s: %v", n.id, r.GetChannelId(), r.GetError())
				}
			}
		}
	}
	byLeader := make([][]string, 3)
	for i, name := range names {
		byLeader[i%3] = append(byLeader[i%3], name)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for ni, pending := range byLeader {
		for len(pending) > 0 {
			if time.Now().After(deadline) {
				c.tb.Fatalf("node %d never led %d channels", ni+1, len(pending))
			}
			var again []string
			for lo := 0; lo < len(pending); lo += 2000 {
				part := pending[lo:min(lo+2000, len(pending))]
				orders := make([]*replicav1.CampaignOrder, len(part))
				for k, name := range part {
					orders[k] = &replicav1.CampaignOrder{ChannelId: name}
				}
				resp, err := c.nodes[ni].ctl.Campaign(benchCtx(c.tb, time.Minute), &replicav1.CampaignRequest{Orders: orders})
				if err != nil {
					c.tb.Fatal(err)
				}
				for _, r := range resp.GetResults() {
					if !r.GetLeader() {
						again = append(again, r.GetChannelId())
					}
				}
			}
			pending = again
		}
	}
}

func channelNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

// counters is a snapshot of the cluster's store counters and the process's CPU time.
type counters struct {
	at                         time.Time
	saves, syncs, syncNanos, e int64
	cpu                        time.Duration
	// machineCPU is the busy time of all CPUs (from /proc/stat), to tell how much of the
	// machine other processes used during a run: their load skews the figures.
	machineCPU time.Duration
}

// machineBusy returns the time all CPUs spent busy since boot, or 0 where /proc/stat is
// missing.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}

func (c *benchCluster) counters() counters {
	var out counters
	out.at = time.Now()
	for _, n := range c.nodes {
		out.saves += n.store.saves.Load()
		out.syncs += n.store.syncs.Load()
		out.syncNanos += n.store.syncNanos.Load()
		out.e += n.store.entries.Load()
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		out.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	out.machineCPU = machineBusy()
	return out
}

// loadResult is what one load run measured.
type loadResult struct {
	msgs, appends, errs int64
	lastErr             string
	elapsed             time.Duration
	lat                 []time.Duration // per Append
	before, after       counters
}

func (r *loadResult) msgsPerSec() float64 { return float64(r.msgs) / r.elapsed.Seconds() }

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report turns a load result into benchmark metrics and a log line.
func (r *loadResult) report(b *testing.B, label string) {
	slices.Sort(r.lat)
	syncs := r.after.syncs - r.before.syncs
	secs := r.elapsed.Seconds()
	perNodeSyncs := float64(syncs) / 3
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(r.msgsPerSec(), "msgs/s")
	b.ReportMetric(float64(r.appends)/secs, "appends/s")
	b.ReportMetric(ms(percentile(r.lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(r.lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(r.lat, 0.999)), "p99.9-ms")
	b.ReportMetric(float64(syncs)/secs, "fsyncs/s")
	if perNodeSyncs > 0 {
		b.ReportMetric(float64(r.msgs)/perNodeSyncs, "msgs/fsync")
		b.ReportMetric(float64(r.after.e-r.before.e)/float64(syncs), "entries/fsync")
		b.ReportMetric(float64(r.after.syncNanos-r.before.syncNanos)/float64(syncs)/1e6, "save-ms")
	}
	if ents := float64(r.after.e-r.before.e) / 3; ents > 0 {
		// Raft's own entries (elections) are few: this is how many messages an entry carries.
		b.ReportMetric(float64(r.msgs)/ents, "msgs/entry")
	}
	b.ReportMetric(float64(r.after.cpu-r.before.cpu)/float64(r.elapsed), "cpus")
	if cpu := (r.after.cpu - r.before.cpu).Seconds(); cpu > 0 {
		// What a run costs, whatever share of the machine it got: on a machine shared with
		// other work msgs/s follows that share, this much less.
		b.ReportMetric(float64(r.msgs)/cpu, "msgs/cpu-s")
	}
	other := float64((r.after.machineCPU-r.before.machineCPU)-(r.after.cpu-r.before.cpu)) / float64(r.elapsed)
	b.ReportMetric(max(other, 0), "other-cpus")
	b.ReportMetric(float64(r.errs), "errors")
	b.Logf("%s: %d msgs in %v = %.0f msgs/s, %d appends, latency p50 %.2f ms p99 %.2f ms p99.9 %.2f ms max %.2f ms; "+
		"%d fsyncs on 3 nodes (%.0f/s), %.1f msgs per fsync per node; CPU %.2f cores (other processes %.2f); %d errors %s",
		label, r.msgs, r.elapsed.Round(time.Millisecond), r.msgsPerSec(), r.appends, ms(percentile(r.lat, 0.5)),
		ms(percentile(r.lat, 0.99)), ms(percentile(r.lat, 0.999)), ms(percentile(r.lat, 1)), syncs, float64(syncs)/secs,
		float64(r.msgs)/max(perNodeSyncs, 1), float64(r.after.cpu-r.before.cpu)/float64(r.elapsed), max(other, 0), r.errs, r.lastErr)
}

// batchOf builds a batch of n new 128-byte messages with unique client_msg_ids.
func batchOf(prefix string, k, n int, payload []byte) []*triarchv1.MessageInput {
	in := make([]*triarchv1.MessageInput, n)
	for j := range in {
		in[j] = &triarchv1.MessageInput{ClientMsgId: fmt.Sprintf("%s-%d-%d", prefix, k, j), Sender: "bench", Payload: payload}
	}
	return in
}

// closedLoop runs clients that each send to channels[(client + k*clients) % len] at its
// leader, one Append of batch messages at a time, for d.
func (c *benchCluster) closedLoop(names []string, batch, clients int, d time.Duration) *loadResult {
	payload := make([]byte, benchPayload)
	r := &loadResult{}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		stop atomic.Bool
		msgs atomic.Int64
		apps atomic.Int64
		errs atomic.Int64
	)
	lastErr := atomic.Value{}
	r.before = c.counters()
	start := time.Now()
	for cl := range clients {
		wg.Go(func() {
			var lat []time.Duration
			prefix := fmt.Sprintf("c%d-%d", cl, start.UnixNano())
			for k := 0; !stop.Load(); k++ {
				ci := (cl + k*clients) % len(names)
				node := c.nodes[ci%3]
				in := batchOf(prefix, k, batch, payload)
				t0 := time.Now()
				resp, err := node.data[cl%benchConnsPerNode].Append(context.Background(), &replicav1.AppendRequest{ChannelId: names[ci], Messages: in})
				if err != nil || len(resp.GetResults()) != batch {
					errs.Add(1)
					if err != nil {
						lastErr.Store(err.Error())
					}
					continue
				}
				lat = append(lat, time.Since(t0))
				msgs.Add(int64(batch))
				apps.Add(1)
			}
			mu.Lock()
			r.lat = append(r.lat, lat...)
			mu.Unlock()
		})
	}
	time.Sleep(d)
	stop.Store(true)
	r.after = c.counters()
	r.elapsed = r.after.at.Sub(start)
	// Only what was acknowledged within the window counts.
	r.msgs, r.appends, r.errs = msgs.Load(), apps.Load(), errs.Load()
	wg.Wait()
	if s, ok := lastErr.Load().(string); ok {
		r.lastErr = s
	}
	return r
}

// openLoop sends Appends of batch messages at rate appends/s, on schedule whatever the
// replies, spread over the channels; each latency is measured from the send's scheduled
// time, so queueing in the client counts.
func (c *benchCluster) openLoop(names []string, batch int, rate float64, d time.Duration) *loadResult {
	payload := make([]byte, benchPayload)
	r := &loadResult{}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		msgs atomic.Int64
		apps atomic.Int64
		errs atomic.Int64
	)
	lastErr := atomic.Value{}
	interval := time.Duration(float64(time.Second) / rate)
	r.before = c.counters()
	start := time.Now()
	total := int(d.Seconds() * rate)
	for k := 0; k < total; k++ {
		due := start.Add(time.Duration(k) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		ci := k % len(names)
		wg.Go(func() {
			node := c.nodes[ci%3]
			in := batchOf(fmt.Sprintf("o%d", start.UnixNano()), k, batch, payload)
			resp, err := node.data[k%benchConnsPerNode].Append(context.Background(), &replicav1.AppendRequest{ChannelId: names[ci], Messages: in})
			lat := time.Since(due)
			if err != nil || len(resp.GetResults()) != batch {
				errs.Add(1)
				if err != nil {
					lastErr.Store(err.Error())
				}
				return
			}
			msgs.Add(int64(batch))
			apps.Add(1)
			mu.Lock()
			r.lat = append(r.lat, lat)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.after = c.counters()
	r.elapsed = r.after.at.Sub(start)
	r.msgs, r.appends, r.errs = msgs.Load(), apps.Load(), errs.Load()
	if s, ok := lastErr.Load().(string); ok {
		r.lastErr = s
	}
	return r
}

type loadCase struct {
	channels, batch, clients int
}

func (lc loadCase) String() string {
	return fmt.Sprintf("channels=%d/batch=%d/clients=%d", lc.channels, lc.batch, lc.clients)
}

// BenchmarkCommitted measures acknowledged (committed on a majority, fsynced, applied)
// messages per second, closed loop: each client sends its next Append when the previous one
// is acknowledged.
func BenchmarkCommitted(b *testing.B) {
	for _, lc := range []loadCase{
		{channels: 1, batch: 100, clients: 32},
		{channels: 100, batch: 100, clients: 64},
		{channels: 1000, batch: 100, clients: 64},
		{channels: 1000, batch: 100, clients: 256},
		{channels: 10000, batch: 100, clients: 64},
		{channels: 10000, batch: 100, clients: 256},
		{channels: 1000, batch: 1, clients: 256},
		// Many senders per channel: what coalescing concurrent sends into shared entries is for.
		{channels: 10, batch: 1, clients: 256},
		{channels: 1, batch: 1, clients: 256},
	} {
		if *benchClients > 0 {
			lc.clients = *benchClients
		}
		b.Run(lc.String(), func(b *testing.B) {
			c := startBenchCluster(b)
			names := channelNames("bench", lc.channels)
			c.setup(names, 1)
			// A short warm-up connects the peers' streams and fills the pools.
			c.closedLoop(names, lc.batch, lc.clients, 500*time.Millisecond)
			stopProfile := startCPUProfile(b)
			b.ResetTimer()
			r := c.closedLoop(names, lc.batch, lc.clients, *benchDuration)
			b.StopTimer()
			stopProfile()
			r.report(b, lc.String())
		})
	}
}

// startCPUProfile starts the -replica.bench-cpuprofile profile, if asked for, and returns
// what stops it.
func startCPUProfile(b *testing.B) (stop func()) {
	if *benchCPUProfile == "" {
		return func() {}
	}
	f, err := os.Create(*benchCPUProfile)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkLatencyHalfLoad measures Append latency open loop at half the peak rate: it first
// measures the peak closed loop (as BenchmarkCommitted), then sends at 50% of it on a fixed
// schedule and measures each Append from its scheduled time.
func BenchmarkLatencyHalfLoad(b *testing.B) {
	for _, lc := range []loadCase{
		{channels: 1000, batch: 1, clients: 256},
		{channels: 1000, batch: 100, clients: 64},
		{channels: 1, batch: 100, clients: 32},
	} {
		b.Run(lc.String(), func(b *testing.B) {
			c := startBenchCluster(b)
			names := channelNames("lat", lc.channels)
			c.setup(names, 1)
			c.closedLoop(names, lc.batch, lc.clients, 500*time.Millisecond)
			rate := *benchRate
			if rate == 0 {
				peak := c.closedLoop(names, lc.batch, lc.clients, *benchDuration)
				rate = peak.msgsPerSec() / 2
				b.Logf("%s: peak %.0f msgs/s closed loop (p99 %.2f ms); open loop at %.0f msgs/s", lc, peak.msgsPerSec(),
					ms(percentile(slices.Sorted(slices.Values(peak.lat)), 0.99)), rate)
			}
			b.ResetTimer()
			r := c.openLoop(names, lc.batch, rate/float64(lc.batch), *benchDuration)
			b.StopTimer()
			b.ReportMetric(rate, "target-msgs/s")
			r.report(b, fmt.Sprintf("%s open loop at %.0f msgs/s", lc, rate))
		})
	}
}

// BenchmarkGroupHeap measures the live heap per loaded idle group (elected, msgs messages
// each, all committed and applied everywhere) and per hibernated group, over 3 replicas x
// groups. The first hibernation includes the peak-sized maps and buffers Go does not give
// back; a second set of as many groups then measures what a hibernated group itself costs.
// With more messages per group the dedup window (one entry per client_msg_id) shows.
func BenchmarkGroupHeap(b *testing.B) {
	for _, hc := range []struct{ groups, msgs int }{{1000, 1}, {10000, 1}, {1000, 1000}} {
		b.Run(fmt.Sprintf("groups=%d/msgs=%d", hc.groups, hc.msgs), func(b *testing.B) {
			c := startBenchCluster(b)
			setA, setB := channelNames("heapA", hc.groups), channelNames("heapB", hc.groups)
			empty := settledHeap()
			activeA := c.heapCycle(setA, 1, hc.msgs)
			afterA := settledHeap()
			activeB := c.heapCycle(setB, 1_000_000, hc.msgs)
			afterB := settledHeap()
			per := func(x, y uint64) float64 { return float64(int64(x)-int64(y)) / float64(3*hc.groups) }
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(per(activeA, afterA), "B/active-group")
			b.ReportMetric(per(activeB, afterB), "B/active-group-2nd")
			b.ReportMetric(per(afterA, empty), "B/hibernated-group-first")
			b.ReportMetric(per(afterB, afterA), "B/hibernated-group-warm")
			b.Logf("heap: empty %d; first %d groups: active %d, hibernated %d; second set: active %d, hibernated %d",
				empty, hc.groups, activeA, afterA, activeB, afterB)
		})
	}
}

// heapCycle loads and elects the channels, appends msgs messages to each (in Appends of up
// to 100), waits until every replica has them committed and applied, measures the heap, and
// hibernates them all.
func (c *benchCluster) heapCycle(names []string, group0 uint64, msgs int) (active uint64) {
	c.tb.Helper()
	c.setup(names, group0)
	c.fill(names, msgs)
	c.waitIdle(names)
	active = settledHeap()
	c.hibernate(names)
	return active
}

func (c *benchCluster) fill(names []string, msgs int) {
	c.tb.Helper()
	payload := make([]byte, benchPayload)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(names) {
					return
				}
				for k := 0; k*100 < msgs; k++ {
					in := batchOf(names[i], k, min(100, msgs-k*100), payload)
					_, err := c.nodes[i%3].data[w%benchConnsPerNode].Append(context.Background(), &replicav1.AppendRequest{ChannelId: names[i], Messages: in})
					if err != nil {
						c.tb.Errorf("append to %s: %v", names[i], err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// waitIdle waits until every follower has learnt the last commit (next heartbeat) and
// applied it.
func (c *benchCluster) waitIdle(names []string) {
	c.tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, n := range c.nodes {
		for {
			lagging := 0
			for lo := 0; lo < len(names); lo += 2000 {
				resp, err := n.ctl.GetGroupStatus(benchCtx(c.tb, time.Minute), &replicav1.GetGroupStatusRequest{ChannelIds: names[lo:min(lo+2000, len(names))]})
				if err != nil {
					c.tb.Fatal(err)
				}
				for _, r := range resp.GetResults() {
					if st := r.GetStatus(); st.GetApplied() != st.GetLastIndex() || st.GetCommit() != st.GetLastIndex() {
						lagging++
					}
				}
			}
			if lagging == 0 {
				break
			}
			if time.Now().After(deadline) {
				c.tb.Fatalf("node %d: %d groups not idle", n.id, lagging)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// hibernate unloads the channels everywhere, retrying those not yet at rest.
func (c *benchCluster) hibernate(names []string) {
	c.tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, n := range c.nodes {
		pending := names
		for len(pending) > 0 {
			var again []string
			for lo := 0; lo < len(pending); lo += 2000 {
				resp, err := n.ctl.UnloadGroups(benchCtx(c.tb, time.Minute), &replicav1.UnloadGroupsRequest{ChannelIds: pending[lo:min(lo+2000, len(pending))]})
				if err != nil {
					c.tb.Fatal(err)
				}
				for _, r := range resp.GetResults() {
					if r.GetError() != nil {
						again = append(again, r.GetChannelId())
					}
				}
			}
			if len(again) > 0 {
				if time.Now().After(deadline) {
					c.tb.Fatalf("node %d: %d groups never hibernated", n.id, len(again))
				}
				time.Sleep(20 * time.Millisecond)
			}
			pending = again
		}
		if loaded := n.engine.Loaded(); len(loaded) != 0 {
			c.tb.Fatalf("node %d: %d channels still loaded", n.id, len(loaded))
		}
	}
}

// BenchmarkIdleGroups measures what loaded, elected groups cost when nobody writes: CPU,
// raft messages (leaders heartbeat every 2 ticks of 100 ms, per group) and fsyncs.
func BenchmarkIdleGroups(b *testing.B) {
	for _, groups := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			c := startBenchCluster(b)
			names := channelNames("idle", groups)
			c.setup(names, 1)
			c.fill(names, 1)
			c.waitIdle(names)
			sent := func() (msgs, hbs int64) {
				for _, n := range c.nodes {
					msgs += n.sent.msgs.Load()
					hbs += n.sent.heartbeats.Load()
				}
				return msgs, hbs
			}
			before := c.counters()
			m0, h0 := sent()
			time.Sleep(*benchDuration)
			after := c.counters()
			m1, h1 := sent()
			secs := after.at.Sub(before.at).Seconds()
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(after.cpu-before.cpu)/float64(after.at.Sub(before.at)), "cpus")
			b.ReportMetric(float64((after.machineCPU-before.machineCPU)-(after.cpu-before.cpu))/float64(after.at.Sub(before.at)), "other-cpus")
			b.ReportMetric(float64(m1-m0)/secs, "raft-msgs/s")
			b.ReportMetric(float64(h1-h0)/secs, "heartbeats/s")
			b.ReportMetric(float64(after.syncs-before.syncs)/secs, "fsyncs/s")
		})
	}
}
