package tests

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// These tests run three real `triarch replica` processes (testcluster in process mode: built
// from ./cmd/triarch, separate data directories, fixed ports, no arbiter), drive them over
// gRPC as the control tier would, and kill them with SIGKILL.

// replicaProc is one replica process of the cluster, with clients of its current run.
type replicaProc struct {
	t    *testing.T
	c    *testcluster.Cluster
	id   uint64
	addr string

	// The clients of the current run; writers read them while a restart replaces them.
	mu   sync.Mutex
	conn *grpc.ClientConn
	dc   replicav1.ReplicaServiceClient
	cc   replicav1.ReplicaControlServiceClient
}

func (p *replicaProc) data() replicav1.ReplicaServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dc
}

func (p *replicaProc) ctl() replicav1.ReplicaControlServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cc
}

// connect opens fresh clients for the current run (a connection to the dead run would still
// be backing off) and waits until the replica serves gRPC health.
func (p *replicaProc) connect() {
	t := p.t
	t.Helper()
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	p.mu.Lock()
	old := p.conn
	p.conn = conn
	p.dc = replicav1.NewReplicaServiceClient(conn)
	p.cc = replicav1.NewReplicaControlServiceClient(conn)
	p.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	t.Cleanup(func() { _ = conn.Close() })
	var last error
	if !assert.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		last = err
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, time.Minute, 10*time.Millisecond) {
		t.Fatalf("replica %d not serving: %v", p.id, last)
	}
}

// start restarts the replica's process on its directory and port.
func (p *replicaProc) start() {
	p.t.Helper()
	p.c.Restart(testcluster.KindReplica, p.id)
	p.connect()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *replicaProc) kill() {
	p.t.Helper()
	p.c.Kill(testcluster.KindReplica, p.id)
}

// procCluster is three replica processes serving the same channels.
type procCluster struct {
	t        *testing.T
	procs    []*replicaProc
	channels []string
	// leader[i] is the index in procs of the replica that leads channels[i], as the
	// control tier would record it; writers read it on every attempt.
	leader []atomic.Int32
}

func startProcCluster(t *testing.T, nChannels int) *procCluster {
	tc := testcluster.Start(t, testcluster.Processes(), testcluster.Arbiters(0), testcluster.Channelctls(0),
		testcluster.Replicas(3), testcluster.ReplicaTick(20*time.Millisecond), testcluster.Dedup(24*time.Hour, 100_000))
	c := &procCluster{t: t, leader: make([]atomic.Int32, nChannels)}
	for _, id := range tc.IDs(testcluster.KindReplica) {
		p := &replicaProc{t: t, c: tc, id: id, addr: tc.Addr(testcluster.KindReplica, id)}
		p.connect()
		c.procs = append(c.procs, p)
	}
	for i := range nChannels {
		c.channels = append(c.channels, fmt.Sprintf("crash-%02d", i))
	}
	return c
}

func (c *procCluster) specs() []*replicav1.GroupSpec {
	out := make([]*replicav1.GroupSpec, len(c.channels))
	for i, ch := range c.channels {
		sp := &replicav1.GroupSpec{ChannelId: ch, GroupId: uint64(100 + i)}
		for _, p := range c.procs {
			sp.Replicas = append(sp.Replicas, &replicav1.Peer{NodeId: p.id, Address: p.addr})
		}
		out[i] = sp
	}
	return out
}

// load loads every channel on the replica (again, after a restart).
func (c *procCluster) load(p *replicaProc) {
	c.t.Helper()
	resp, err := p.ctl().LoadGroups(testutil.Context(c.t, 20*time.Second), &replicav1.LoadGroupsRequest{Groups: c.specs()})
	require.NoError(c.t, err)
	for _, r := range resp.GetResults() {
		require.Nil(c.t, r.GetError(), "replica %d: load %s", p.id, r.GetChannelId())
	}
}

// status returns the replica's view of the channels, by channel id.
func (c *procCluster) status(p *replicaProc, channels []string) map[string]*replicav1.GroupStatus {
	c.t.Helper()
	resp, err := p.ctl().GetGroupStatus(testutil.Context(c.t, 10*time.Second), &replicav1.GetGroupStatusRequest{ChannelIds: channels})
	require.NoError(c.t, err)
	out := make(map[string]*replicav1.GroupStatus)
	for _, r := range resp.GetResults() {
		require.Nil(c.t, r.GetError(), "replica %d: status of %s", p.id, r.GetChannelId())
		out[r.GetChannelId()] = r.GetStatus()
	}
	return out
}

// elect orders replica p to campaign for the channels (indexes into c.channels), re-ordering
// what did not complete (a lost vote is never retried by raft here: followers are not
// ticked), until p leads them all; then records p as their leader.
func (c *procCluster) elect(p *replicaProc, idx []int) {
	c.t.Helper()
	pi := int32(slices.Index(c.procs, p))
	deadline := time.Now().Add(30 * time.Second)
	pending := slices.Clone(idx)
	for len(pending) > 0 {
		require.True(c.t, time.Now().Before(deadline), "replica %d never led %d channels", p.id, len(pending))
		orders := make([]*replicav1.CampaignOrder, len(pending))
		for k, i := range pending {
			orders[k] = &replicav1.CampaignOrder{ChannelId: c.channels[i]}
		}
		_, err := p.ctl().Campaign(testutil.Context(c.t, 10*time.Second), &replicav1.CampaignRequest{Orders: orders})
		require.NoError(c.t, err)
		for range 30 {
			names := make([]string, len(pending))
			for k, i := range pending {
				names[k] = c.channels[i]
			}
			st := c.status(p, names)
			var still []int
			for _, i := range pending {
				s := st[c.channels[i]]
				if s.GetRole() == replicav1.Role_ROLE_LEADER {
					c.leader[i].Store(pi)
				} else {
					still = append(still, i)
				}
			}
			pending = still
			if len(pending) == 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// electMostUpToDate elects, for every channel, the most up-to-date of the given replicas,
// as channelctl does after a failure: by (last term, last index).
func (c *procCluster) electMostUpToDate(candidates ...*replicaProc) {
	c.t.Helper()
	views := make([]map[string]*replicav1.GroupStatus, len(candidates))
	for k, p := range candidates {
		views[k] = c.status(p, c.channels)
	}
	chosen := make([][]int, len(candidates))
	for i, ch := range c.channels {
		best := 0
		for k := range candidates {
			a, b := views[k][ch], views[best][ch]
			if a.GetLastTerm() > b.GetLastTerm() || (a.GetLastTerm() == b.GetLastTerm() && a.GetLastIndex() > b.GetLastIndex()) {
				best = k
			}
		}
		chosen[best] = append(chosen[best], i)
	}
	for k, p := range candidates {
		if len(chosen[k]) > 0 {
			c.elect(p, chosen[k])
		}
	}
}

func allIdx(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// waitCaughtUp waits until, on every channel's leader, replica p matches the last index.
func (c *procCluster) waitCaughtUp(p *replicaProc) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		behind := 0
		for li, lp := range c.procs {
			var led []string
			for i, ch := range c.channels {
				if int(c.leader[i].Load()) == li {
					led = append(led, ch)
				}
			}
			if len(led) == 0 {
				continue
			}
			for _, st := range c.status(lp, led) {
				for _, pr := range st.GetProgress() {
					if pr.GetNodeId() == p.id && pr.GetMatch() != st.GetLastIndex() {
						behind++
					}
				}
			}
		}
		if behind == 0 {
			return
		}
		require.True(c.t, time.Now().Before(deadline), "replica %d still behind on %d channels", p.id, behind)
		time.Sleep(20 * time.Millisecond)
	}
}

// waitApplied waits until replica p has applied its whole log of every channel (writers
// stopped): a replica elected before that would still be applying old entries.
func (c *procCluster) waitApplied(p *replicaProc) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lagging := 0
		for _, st := range c.status(p, c.channels) {
			if st.GetApplied() != st.GetLastIndex() || st.GetCommit() != st.GetLastIndex() {
				lagging++
			}
		}
		if lagging == 0 {
			return
		}
		require.True(c.t, time.Now().Before(deadline), "replica %d has not applied everything on %d channels", p.id, lagging)
		time.Sleep(20 * time.Millisecond)
	}
}

// ackLog records what the replicas acknowledged.
type ackLog struct {
	mu    sync.Mutex
	seqOf map[string]map[string]uint64 // channel -> client_msg_id -> seq
	n     int
	bad   []string
}

func newAckLog() *ackLog { return &ackLog{seqOf: make(map[string]map[string]uint64)} }

func (a *ackLog) record(ch, id string, seq uint64, dup bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.seqOf[ch]
	if m == nil {
		m = make(map[string]uint64)
		a.seqOf[ch] = m
	}
	if prev, ok := m[id]; ok && prev != seq {
		a.bad = append(a.bad, fmt.Sprintf("%s/%s acknowledged at seq %d and again at %d (duplicate=%v)", ch, id, prev, seq, dup))
		return
	}
	if seq == 0 {
		a.bad = append(a.bad, fmt.Sprintf("%s/%s acknowledged at seq 0", ch, id))
	}
	m[id] = seq
	a.n++
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// writers keep appending batches of 1-4 new messages to random channels at their current
// leader, retrying a failed batch with the same client_msg_ids (so a batch that did commit
// comes back as duplicates with its original seqs), until stopped.
type writers struct {
	stop    atomic.Bool
	wg      sync.WaitGroup
	errs    atomic.Int64
	lastErr atomic.Value
}

func (c *procCluster) startWriters(acks *ackLog, n int, prefix string) *writers {
	w := &writers{}
	for wi := range n {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(wi), 42))
			payload := bytes.Repeat([]byte{'x'}, 128)
			for k := 0; !w.stop.Load(); k++ {
				ci := rng.IntN(len(c.channels))
				ch := c.channels[ci]
				in := make([]*triarchv1.MessageInput, 1+rng.IntN(4))
				for j := range in {
					in[j] = &triarchv1.MessageInput{ClientMsgId: fmt.Sprintf("%s-w%d-%d-%d", prefix, wi, k, j), Sender: "crash-test", Payload: payload}
				}
				for !w.stop.Load() {
					p := c.procs[c.leader[ci].Load()]
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					resp, err := p.data().Append(ctx, &replicav1.AppendRequest{ChannelId: ch, Messages: in})
					cancel()
					if err == nil && len(resp.GetResults()) != len(in) {
						err = fmt.Errorf("%d results for %d messages", len(resp.GetResults()), len(in))
					}
					if err == nil {
						for j, r := range resp.GetResults() {
							acks.record(ch, in[j].GetClientMsgId(), r.GetSeq(), r.GetDuplicate())
						}
						break
					}
					w.errs.Add(1)
					w.lastErr.Store(err.Error())
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	return w
}

func (w *writers) halt() {
	w.stop.Store(true)
	w.wg.Wait()
}

// waitAcks waits until at least n more messages are acknowledged.
func (c *procCluster) waitAcks(acks *ackLog, n int, w *writers) {
	c.t.Helper()
	target := acks.count() + n
	deadline := time.Now().Add(30 * time.Second)
	for acks.count() < target {
		if time.Now().After(deadline) {
			c.t.Fatalf("only %d of %d acknowledgements; %d errors, last: %v", acks.count(), target, w.errs.Load(), w.lastErr.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// verify reads every channel from replica p, which must lead them, and checks that every
// acknowledged message is there exactly once at its seq, that seqs run from 1 without gaps
// and that no client_msg_id was stored twice; then resends every acknowledged id and checks
// that each comes back as a duplicate with its original seq.
func (c *procCluster) verify(p *replicaProc, acks *ackLog) {
	c.t.Helper()
	acks.mu.Lock()
	require.Empty(c.t, acks.bad, "inconsistent acknowledgements")
	acks.mu.Unlock()
	total := 0
	for _, ch := range c.channels {
		var got []*triarchv1.Message
		from := uint64(1)
		for {
			resp, err := p.data().Read(testutil.Context(c.t, 10*time.Second), &replicav1.ReadRequest{ChannelId: ch, FromSeq: from, Limit: 1000})
			require.NoError(c.t, err, "replica %d: read %s from %d", p.id, ch, from)
			if len(resp.GetMessages()) == 0 {
				break
			}
			got = append(got, resp.GetMessages()...)
			from = got[len(got)-1].GetSeq() + 1
		}
		where := make(map[string]uint64, len(got))
		for i, m := range got {
			require.Equal(c.t, uint64(i+1), m.GetSeq(), "replica %d: %s: seqs not contiguous from 1", p.id, ch)
			_, dup := where[m.GetClientMsgId()]
			require.False(c.t, dup, "replica %d: %s: %s stored twice", p.id, ch, m.GetClientMsgId())
			where[m.GetClientMsgId()] = m.GetSeq()
		}
		acks.mu.Lock()
		want := acks.seqOf[ch]
		acks.mu.Unlock()
		var ids []string
		for id, seq := range want {
			at, ok := where[id]
			require.True(c.t, ok, "replica %d: %s: acknowledged %s (seq %d) is missing", p.id, ch, id, seq)
			require.Equal(c.t, seq, at, "replica %d: %s: acknowledged %s at seq %d is stored at %d", p.id, ch, id, seq, at)
			ids = append(ids, id)
		}
		total += len(want)
		// Resend everything acknowledged: each is a duplicate with its original seq.
		for len(ids) > 0 {
			n := min(len(ids), 500)
			in := make([]*triarchv1.MessageInput, n)
			for j, id := range ids[:n] {
				in[j] = &triarchv1.MessageInput{ClientMsgId: id, Sender: "crash-test", Payload: []byte("resent")}
			}
			resp, err := p.data().Append(testutil.Context(c.t, 10*time.Second), &replicav1.AppendRequest{ChannelId: ch, Messages: in})
			require.NoError(c.t, err, "replica %d: resend to %s", p.id, ch)
			require.Len(c.t, resp.GetResults(), n)
			for j, r := range resp.GetResults() {
				require.True(c.t, r.GetDuplicate(), "replica %d: %s: resent %s not recognised", p.id, ch, ids[j])
				require.Equal(c.t, want[ids[j]], r.GetSeq(), "replica %d: %s: resent %s", p.id, ch, ids[j])
			}
			ids = ids[n:]
		}
	}
	c.t.Logf("replica %d holds all %d acknowledged messages of %d channels", p.id, total, len(c.channels))
}

// SIGKILL the leader mid-write, elect another replica, keep writing, restart the killed one
// on its directory and port and reload its groups; then SIGKILL a follower mid-write,
// restart it, and elect it once it has caught up. No acknowledged message may be lost,
// duplicated or moved, and a resend of any of them returns its original seq.
func TestReplicaSIGKILLKeepsAcknowledgedMessages(t *testing.T) {
	c := startProcCluster(t, 20)
	p1, p2, p3 := c.procs[0], c.procs[1], c.procs[2]
	for _, p := range c.procs {
		c.load(p)
	}
	c.elect(p1, allIdx(len(c.channels)))

	acks := newAckLog()
	w := c.startWriters(acks, 8, "a")
	c.waitAcks(acks, 1500, w)

	// The leader dies mid-write.
	p1.kill()
	t.Logf("killed leader 1 after %d acknowledgements", acks.count())
	c.electMostUpToDate(p2, p3)
	c.waitAcks(acks, 1500, w)

	p1.start()
	c.load(p1)
	c.waitAcks(acks, 1000, w)
	c.waitCaughtUp(p1)

	// Move every leadership to replica 2, then kill replica 3, a follower everywhere.
	var on3 []int
	for i := range c.channels {
		if c.leader[i].Load() == 2 {
			on3 = append(on3, i)
		}
	}
	if len(on3) > 0 {
		c.elect(p2, on3)
	}
	c.waitAcks(acks, 500, w)
	p3.kill()
	t.Logf("killed follower 3 after %d acknowledgements", acks.count())
	c.waitAcks(acks, 1500, w)
	p3.start()
	c.load(p3)
	c.waitAcks(acks, 1000, w)
	w.halt()
	t.Logf("%d messages acknowledged; %d failed attempts (retried), last: %v", acks.count(), w.errs.Load(), w.lastErr.Load())

	c.verify(p2, acks)
	c.waitCaughtUp(p3)
	c.waitApplied(p3)
	c.elect(p3, allIdx(len(c.channels)))
	c.verify(p3, acks)
}

// The whole cluster dies at once (SIGKILL, no checkpoint written) and comes back; the
// replica elected first re-applies the entries it had proposed before the crash while new
// appends wait for their results.
//
// Regression: proposal ids used to restart at 1 in every process, so the re-applied
// entries answered new appends with their own seqs ("acknowledged after-w5-0-0 at seq 3
// is stored at 90"); see services/replica TestAppendAfterRestartGetsItsOwnResults.
func TestReplicaWholeClusterSIGKILLThenAppends(t *testing.T) {
	c := startProcCluster(t, 20)
	for _, p := range c.procs {
		c.load(p)
	}
	c.elect(c.procs[0], allIdx(len(c.channels)))
	acks := newAckLog()
	// Many appends, so that many entries are re-applied after the restart, while the new
	// appends wait (with ids restarting at 1 this failed in 6 runs out of 6).
	w := c.startWriters(acks, 8, "before")
	c.waitAcks(acks, 6000, w)
	for _, p := range c.procs {
		p.kill()
	}
	w.halt()
	t.Logf("killed all three after %d acknowledgements", acks.count())

	for _, p := range c.procs {
		p.start()
	}
	for _, p := range c.procs {
		c.load(p)
	}
	// Writers hammer the replicas while the most up-to-date one of each channel is elected
	// (mostly replica 1, the leader before the crash; a follower can be ahead of it, since
	// the leader sends entries before its own fsync).
	w = c.startWriters(acks, 32, "after")
	c.electMostUpToDate(c.procs...)
	c.waitAcks(acks, 1000, w)
	w.halt()
	for i := range c.channels {
		c.leader[i].Store(0)
	}
	c.waitApplied(c.procs[0])
	c.elect(c.procs[0], allIdx(len(c.channels)))
	c.verify(c.procs[0], acks)
}
