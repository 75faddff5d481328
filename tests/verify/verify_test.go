package verify

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/internal/verify"
)

var (
	seed     = flag.Uint64("verify.seed", 1, "seed of the fault schedule and the workload")
	duration = flag.Duration("verify.duration", 0, "how long faults run (0 skips the suite)")
	faults   = flag.String("verify.faults", "kill,pause,wipe", `fault kinds, comma-separated, or "all": `+fmt.Sprint(verify.AllFaults))
	channels = flag.Int("verify.channels", 8, "channels written and read")
	clients  = flag.Int("verify.clients", 6, "concurrent clients")
	rest     = flag.Int("verify.rest", 0, "how many of the clients send and read through the gateway's REST API (the others, the subscriptions and the final checks use gRPC)")
	replicas = flag.Int("verify.replicas", 3, "replica nodes (channels have three replicas; the repair fault needs a fourth, and raises this to 4)")
	logLevel = flag.String("verify.log-level", "warn", "the processes' log level (their logs are kept in the output directory on failure)")
	outDir   = flag.String("verify.out", "", "where the history, schedule and visualizations go (default: a temporary directory, kept on failure)")
	planted  = flag.String("verify.planted", "", "self-test: run a binary built with -tags plantedbug and this bug planted (lost-ack, stale-read); "+
		"the run passes only if a checker catches it")
)

const (
	attemptTimeout = 2 * time.Second
	readLimit      = 1000
	// settle bounds how long the cluster may take, once every fault is healed, to serve every
	// channel again and to bring every replica to the same log.
	settle = 90 * time.Second
)

// TestVerify is the suite: see the package documentation.
func TestVerify(t *testing.T) {
	if *duration == 0 {
		t.Skip("set -verify.duration (make verify DURATION=...) to run the verification suite")
	}
	kinds, err := verify.ParseFaults(*faults)
	require.NoError(t, err)
	out := *outDir
	if out == "" {
		out, err = os.MkdirTemp("", "triarch-verify-")
		require.NoError(t, err)
	}
	require.NoError(t, os.MkdirAll(out, 0o755))
	t.Logf("seed %d, %v of faults %v, %d channels, %d clients (%d REST), %d replicas; output in %s", *seed, *duration, kinds, *channels, *clients, min(*rest, *clients), *replicas, out)

	// Network faults need the processes in network namespaces, which need root; the other
	// faults run on loopback as they always did, so that their seeds replay the same cluster.
	mode := testcluster.Processes()
	if slices.ContainsFunc(kinds, verify.Fault.Network) {
		if os.Geteuid() != 0 && *faults == "all" {
			kinds = slices.DeleteFunc(kinds, verify.Fault.Network)
			t.Logf("network faults need root (network namespaces): running %v only", kinds)
		} else {
			mode = testcluster.Netns()
		}
	}
	kinds, lossyOpts := withPowerLoss(t, kinds, *faults == "all")
	nReplicas, repairOpts := withRepairs(kinds, *replicas)
	if nReplicas != *replicas {
		t.Logf("repair faults need a spare replica: running %d replicas", nReplicas)
	}
	opts := []testcluster.Option{mode, testcluster.LogLevel(*logLevel), testcluster.Arbiters(3), testcluster.Channelctls(2),
		testcluster.Replicas(nReplicas), testcluster.WithGateway()}
	opts = append(append(opts, repairOpts...), lossyOpts...)
	if *planted != "" {
		// The processes inherit the variable; only a binary built with the tag reads it.
		t.Setenv("TRIARCH_PLANTED_BUG", *planted)
		opts = append(opts, testcluster.Binary(testcluster.BuildTriarch(t, "plantedbug")))
		t.Logf("self-test: bug %q planted in the gateway; a checker must catch it", *planted)
	}
	c := testcluster.Start(t, opts...)
	// On any failure, a checker's or a liveness bound's (which ends the test at once), the
	// processes' logs go with the history before the cluster's cleanups remove them (this
	// cleanup, registered after Start's, runs before them).
	t.Cleanup(func() {
		if !t.Failed() || *planted != "" {
			return
		}
		if err := copyLogs(c.Logs(), filepath.Join(out, "logs")); err != nil {
			t.Logf("copying the processes' logs: %v", err)
		}
		t.Logf("replay with: make verify SEED=%d DURATION=%v FAULTS=%s CHANNELS=%d CLIENTS=%d REST=%d REPLICAS=%d; history, schedule and logs in %s",
			*seed, *duration, *faults, *channels, *clients, *rest, *replicas, out)
	})
	var targets []verify.Target
	for _, n := range c.Targets() {
		targets = append(targets, verify.Target{Tier: n.Kind.String(), ID: n.ID})
	}
	schedule := verify.Schedule(*seed, *duration, kinds, targets)
	var sched strings.Builder
	for _, e := range schedule {
		fmt.Fprintln(&sched, e)
	}
	require.NoError(t, os.WriteFile(filepath.Join(out, "schedule.txt"), []byte(sched.String()), 0o644))
	t.Logf("schedule (%d faults):\n%s", len(schedule), sched.String())

	// Clients reconnect to a restarted gateway within half a second: gRPC's default backoff
	// (up to two minutes) would measure the client's patience, not the cluster.
	conn, err := grpc.NewClient(c.GatewayAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond,
			Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond}, MinConnectTimeout: time.Second}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	api := triarchv1.NewTriarchServiceClient(conn)
	names := make([]string, *channels)
	for i := range names {
		names[i] = fmt.Sprintf("v%02d", i)
	}

	h := verify.NewHistory()
	w := &workload{api: api, h: h, channels: names, final: *clients, rest: min(*rest, *clients)}
	if w.rest > 0 {
		w.restAPI = newRESTClient(c.GatewayHTTPAddr())
	}
	ctx := testutil.Context(t, *duration+10*time.Minute)
	// One subscription per channel, kept open (and resumed) through everything.
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var subs []*subscriber
	for _, ch := range names {
		s := &subscriber{ch: ch}
		subs = append(subs, s)
		go s.run(subCtx, api)
	}
	var wg sync.WaitGroup
	for i := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx, i, rand.New(rand.NewPCG(*seed, uint64(i))))
		}()
	}

	rep, power := &repairs{}, &powerLosses{}
	runSchedule(t, c, h, schedule, rep, power)
	if slices.ContainsFunc(kinds, verify.Fault.Network) {
		c.Heal() // each fault was healed at its end: this only makes sure
	}
	t.Log("every fault healed; letting the clients finish")
	w.stop.Store(true)
	wg.Wait()
	require.Empty(t, w.fatal(), "clients saw errors that no fault explains")

	// Every channel is writable again within the settle time.
	for _, ch := range names {
		sctx, cancel := context.WithTimeout(ctx, settle)
		op := w.send(sctx, w.final, ch, []string{ch + "-final"})
		cancel()
		require.True(t, op.Known, "%s is not writable %v after the last fault", ch, settle)
	}
	final := map[string][]verify.Entry{}
	for _, ch := range names {
		final[ch] = w.readAll(t, ctx, ch)
	}
	ops := h.Ops()
	writeHistory(t, filepath.Join(out, "history.jsonl"), ops)

	var unavail strings.Builder
	require.NoError(t, verify.WriteUnavailability(&unavail, verify.Unavailability(ops, schedule, 2*time.Second)))
	sends, unknown, reads, restOps := 0, 0, 0, 0
	for _, op := range ops {
		if op.Client < w.rest && (op.Kind == verify.Read || op.Known) {
			restOps++
		}
		switch {
		case op.Kind == verify.Send && op.Known:
			sends++
		case op.Kind == verify.Send:
			unknown++
		default:
			reads++
		}
	}
	t.Logf("%d sends acknowledged, %d with unknown outcome, %d reads; longest gap in acknowledgements per fault:\n%s",
		sends, unknown, reads, unavail.String())
	counts := map[string]int{}
	for _, e := range schedule {
		counts[e.Label()]++
	}
	t.Logf("faults injected: %v", counts)
	if w.rest > 0 {
		t.Logf("of which through REST (clients 0-%d): %d acknowledged sends and reads", w.rest-1, restOps)
	}
	if power.events > 0 {
		t.Logf("power losses: %d, of %d replicas in all, losing %d unsynced bytes", power.events, power.replicas, power.dropped)
	}
	if rep.events > 0 {
		t.Logf("repair faults: %d, on replicas holding %d channels, %d of them repaired away before the replica returned",
			rep.events, rep.listed, rep.moved)
	}

	failed := false
	for name, check := range map[string]func() error{
		"exactly once":   func() error { return verify.ExactlyOnce(ops, final) },
		"stale reads":    func() error { return verify.StaleReads(ops) },
		"linearizable":   func() error { return verify.Linearizable(ops, time.Minute, out) },
		"replicas agree": func() error { return replicasAgree(ctx, c, names) },
		"subscriptions":  func() error { return subscriptionsAgree(subs, final, settle) },
		"repairs made":   rep.check,
	} {
		if err := check(); err != nil {
			failed = true
			if *planted != "" {
				t.Logf("caught the planted bug: %s: %v", name, err)
				continue
			}
			t.Errorf("%s: %v", name, err)
		}
	}
	if *planted != "" {
		if !failed {
			t.Errorf("self-test: no checker caught the planted bug %q", *planted)
		} else if *outDir == "" {
			_ = os.RemoveAll(out)
		}
		return
	}
	if !failed && *outDir == "" {
		_ = os.RemoveAll(out)
	}
}

// runSchedule injects the faults at their times, on the test goroutine, and ends every one.
func runSchedule(t *testing.T, c *testcluster.Cluster, h *verify.History, schedule []verify.Event, rep *repairs, power *powerLosses) {
	type step struct {
		at    time.Duration
		end   bool
		event verify.Event
	}
	var steps []step
	for _, e := range schedule {
		steps = append(steps, step{e.At, false, e}, step{e.At + e.For, true, e})
	}
	slices.SortStableFunc(steps, func(a, b step) int { return int(a.at - b.at) })
	kind := map[string]testcluster.Kind{}
	for _, k := range []testcluster.Kind{testcluster.KindArbiter, testcluster.KindChannelctl, testcluster.KindReplica, testcluster.KindGateway} {
		kind[k.String()] = k
	}
	// net holds the network faults in force, by event.
	net := map[verify.Event][]*testcluster.NetFault{}
	for _, s := range steps {
		if d := s.at - h.Now(); d > 0 {
			time.Sleep(d) // the schedule is in time: this waits for the next fault, not for a condition
		}
		k, id := kind[s.event.Target.Tier], s.event.Target.ID
		detail := ""
		switch {
		case s.event.Fault.Network() && !s.end:
			net[s.event] = applyNetFault(c, s.event)
			if s.event.Fault == verify.Partition {
				var what []string
				for _, f := range net[s.event] {
					what = append(what, f.String())
				}
				detail = ": " + strings.Join(what, "; ")
			} else {
				detail = fmt.Sprintf(": every link to and from it, %v", testcluster.Netem{Delay: s.event.Delay, Jitter: s.event.Jitter, Loss: s.event.Loss})
			}
		case s.event.Fault.Network():
			for _, f := range net[s.event] {
				f.Heal()
			}
			delete(net, s.event)
		case s.event.Fault == verify.Pause && !s.end:
			c.Pause(k, id)
		case s.event.Fault == verify.Pause:
			c.Resume(k, id)
		case s.event.Fault == verify.Repair && !s.end:
			detail = rep.begin(t.Context(), c, id)
			c.Kill(k, id)
		case s.event.Fault == verify.Repair:
			detail = rep.end(t.Context(), c, id)
			c.Restart(k, id)
		case s.event.Fault == verify.Powerloss && !s.end:
			detail = power.begin(c, s.event)
		case s.event.Fault == verify.Powerloss:
			power.end(c, s.event)
		case !s.end:
			wipe := s.event.Fault == verify.Wipe
			if wipe {
				// One replaced disk at a time, as operators replace them: a second store lost
				// before the first one's channels took it back loses a majority of their
				// copies, which no replicated log survives. Waiting here would hold back the
				// ends of the other tiers' faults, so the wipe becomes a plain kill.
				if err := pendingRejoins(t.Context(), c); err != nil {
					wipe = false
					t.Logf("%v: wipe of %s is a kill: %v", h.Now().Round(time.Millisecond), s.event.Target, err)
				}
			}
			if wipe {
				c.Wipe(k, id)
			} else {
				c.Kill(k, id)
			}
		default:
			c.Restart(k, id)
		}
		verb := "begins"
		if s.end {
			verb = "ends"
		}
		t.Logf("%v: %s %s %s%s", h.Now().Round(time.Millisecond), s.event.Label(), s.event.Target, verb, detail)
	}
}

// applyNetFault cuts or degrades the links a network event names.
func applyNetFault(c *testcluster.Cluster, e verify.Event) []*testcluster.NetFault {
	node := func(t verify.Target) testcluster.Target {
		for _, n := range c.Targets() {
			if n.Kind.String() == t.Tier && n.ID == t.ID {
				return n
			}
		}
		panic(fmt.Sprintf("no %v in the cluster", t))
	}
	self := node(e.Target)
	var others []testcluster.Target
	for _, n := range c.Targets() {
		if n != self {
			others = append(others, n)
		}
	}
	// both cuts the links between self and each of peers, both ways.
	both := func(peers ...testcluster.Target) []*testcluster.NetFault {
		out := []*testcluster.NetFault{c.Cut(self, peers...)}
		for _, p := range peers {
			out = append(out, c.Cut(p, self))
		}
		return out
	}
	switch {
	case e.Fault == verify.Netem:
		l := testcluster.Netem{Delay: e.Delay, Jitter: e.Jitter, Loss: e.Loss}
		out := []*testcluster.NetFault{c.Degrade(l, self, others...)}
		for _, o := range others {
			out = append(out, c.Degrade(l, o, self))
		}
		return out
	case e.Shape == verify.Isolate:
		return []*testcluster.NetFault{c.Isolate(self)}
	case e.Shape == verify.CutOut:
		return []*testcluster.NetFault{c.Cut(self, others...)}
	case e.Shape == verify.CutIn:
		var out []*testcluster.NetFault
		for _, o := range others {
			out = append(out, c.Cut(o, self))
		}
		return out
	case e.Shape == verify.FromArbiters:
		var arbiters []testcluster.Target
		for _, id := range c.IDs(testcluster.KindArbiter) {
			arbiters = append(arbiters, testcluster.Target{Kind: testcluster.KindArbiter, ID: id})
		}
		return both(arbiters...)
	case e.Shape == verify.GatewayReplica, e.Shape == verify.Ring:
		return both(node(e.Peer))
	}
	panic(fmt.Sprintf("unknown network fault %v", e))
}

// workload is the clients: each sends batches of 1-3 new messages (retrying a batch under the
// same ids until it is acknowledged, as a client should) or reads a channel from its start or
// from the middle.
type workload struct {
	api triarchv1.TriarchServiceClient
	// restAPI serves clients 0..rest-1 (REST through the gateway's HTTP port).
	restAPI  *restClient
	rest     int
	h        *verify.History
	channels []string
	// final is the client id of the checks after the faults (one past the workload's).
	final int
	stop  atomic.Bool

	mu     sync.Mutex
	errs   []error
	lastOK map[string]uint64
}

func (w *workload) run(ctx context.Context, client int, rng *rand.Rand) {
	for n := 0; !w.stop.Load() && ctx.Err() == nil; n++ {
		ch := w.channels[rng.IntN(len(w.channels))]
		if rng.IntN(4) == 0 {
			from := uint64(1)
			if rng.IntN(2) == 0 {
				w.mu.Lock()
				if last := w.lastOK[ch]; last > 1 {
					from = 1 + rng.Uint64N(last)
				}
				w.mu.Unlock()
			}
			w.read(ctx, client, ch, from)
			continue
		}
		ids := make([]string, 1+rng.IntN(3))
		for i := range ids {
			ids[i] = fmt.Sprintf("c%d-%d-%d", client, n, i)
		}
		w.send(ctx, client, ch, ids)
	}
}

// send sends ids until acknowledged; once the workload stops, a send not acknowledged within
// one more minute is given up and recorded with an unknown outcome.
func (w *workload) send(ctx context.Context, client int, ch string, ids []string) verify.Op {
	op := verify.Op{Client: client, Channel: ch, Kind: verify.Send, IDs: ids, Call: w.h.Now()}
	msgs := make([]*triarchv1.MessageInput, len(ids))
	for i, id := range ids {
		msgs[i] = &triarchv1.MessageInput{ClientMsgId: id, Payload: []byte(id)}
	}
	var giveUp time.Time
	for ctx.Err() == nil {
		if w.stop.Load() && giveUp.IsZero() {
			giveUp = time.Now().Add(time.Minute)
		}
		if !giveUp.IsZero() && time.Now().After(giveUp) {
			break
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		resp, err := w.client(client).SendMessages(actx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: msgs})
		cancel()
		if err == nil {
			op.Return, op.Known = w.h.Now(), true
			for _, r := range resp.GetResults() {
				op.Seqs = append(op.Seqs, r.GetSeq())
			}
			w.mu.Lock()
			if w.lastOK == nil {
				w.lastOK = map[string]uint64{}
			}
			w.lastOK[ch] = max(w.lastOK[ch], slices.Max(op.Seqs))
			w.mu.Unlock()
			break
		}
		if bad(err) {
			w.fail(fmt.Errorf("send %v to %s: %w", ids, ch, err))
			break
		}
		time.Sleep(20 * time.Millisecond) // a pause between attempts, as a client backs off
	}
	w.h.Add(op)
	return op
}

// read reads one page; a failed read observed nothing and is not recorded.
func (w *workload) read(ctx context.Context, client int, ch string, from uint64) ([]*triarchv1.Message, bool) {
	op := verify.Op{Client: client, Channel: ch, Kind: verify.Read, From: from, Limit: readLimit, Call: w.h.Now()}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	resp, err := w.client(client).ReadMessages(actx, &triarchv1.ReadMessagesRequest{ChannelId: ch, FromSeq: from, Limit: readLimit})
	cancel()
	if err != nil {
		if bad(err) {
			w.fail(fmt.Errorf("read %s from %d: %w", ch, from, err))
		}
		return nil, false
	}
	op.Return = w.h.Now()
	for _, m := range resp.GetMessages() {
		op.Got = append(op.Got, m.GetClientMsgId())
	}
	w.h.Add(op)
	return resp.GetMessages(), true
}

// readAll reads a channel's whole log, page by page (each page is a read of the history).
func (w *workload) readAll(t *testing.T, ctx context.Context, ch string) []verify.Entry {
	var out []verify.Entry
	deadline := time.Now().Add(settle)
	for from := uint64(1); ; {
		msgs, ok := w.read(ctx, w.final, ch, from)
		if !ok {
			require.True(t, time.Now().Before(deadline), "%s: no read succeeded for %v", ch, settle)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for _, m := range msgs {
			out = append(out, verify.Entry{Seq: m.GetSeq(), ID: m.GetClientMsgId()})
		}
		if len(msgs) < readLimit {
			return out
		}
		from = msgs[len(msgs)-1].GetSeq() + 1
	}
}

// client is the API client number client calls: REST for the first w.rest, gRPC otherwise.
func (w *workload) client(client int) messageAPI {
	if client < w.rest {
		return w.restAPI
	}
	return w.api
}

func (w *workload) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

func (w *workload) fatal() []error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

// bad reports errors no fault explains: a correct cluster under faults answers Unavailable,
// DeadlineExceeded, NotFound (a channel being created or loaded) or Aborted and the like,
// never that the request was invalid or that it lost data.
func bad(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.DataLoss, codes.Internal, codes.Unimplemented, codes.OutOfRange:
		return true
	}
	return false
}

// copyLogs keeps the processes' logs (warn level, one file per node and run) with the history.
func copyLogs(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(to, e.Name()), b, 0o644)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func writeHistory(t *testing.T, path string, ops []verify.Op) {
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, op := range ops {
		require.NoError(t, enc.Encode(op))
	}
}

// pendingRejoins asks the arbiter members in turn (some may be down or paused) for the nodes'
// stores and the channels' records, and names a channel still waiting for a rejoin.
func pendingRejoins(ctx context.Context, c *testcluster.Cluster) error {
	var errs []error
	for _, id := range c.Running(testcluster.KindArbiter) {
		err := func() error {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			arb := arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, id)))
			st, err := arb.GetClusterStatus(actx, &arbiterv1.GetClusterStatusRequest{})
			if err != nil {
				return err
			}
			stores := map[uint64]uint64{}
			for _, n := range st.GetNodes() {
				if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA {
					stores[n.GetNodeId()] = n.GetStoreId()
				}
			}
			for token := ""; ; {
				page, err := arb.ListChannels(actx, &arbiterv1.ListChannelsRequest{PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				for _, ch := range page.GetChannels() {
					for node, store := range ch.GetReplicaStoreIds() {
						if now := stores[node]; now != 0 && now != store {
							return fmt.Errorf("%s still records store %x of node %d, which now runs %x", ch.GetChannelId(), store, node, now)
						}
					}
				}
				if token = page.GetNextPageToken(); token == "" {
					return nil
				}
			}
		}()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("arbiter %d: %w", id, err))
	}
	return errors.Join(errs...)
}
