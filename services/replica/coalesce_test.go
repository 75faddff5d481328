package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// fakeRaft stands for the raft host under a scriptedHost: it commits and applies each
// proposal when the test releases it, one at a time, as the apply stage would.
type fakeRaft struct {
	e *Engine
	// entered gets each proposal as it arrives; the test decides it through its release.
	entered chan *pending

	mu      sync.Mutex
	index   uint64
	entries []*replicav1.LogBatch // committed, in log order
}

// pending is a proposal waiting for the test: nil on release commits it, an error fails it.
type pending struct {
	batch   *replicav1.LogBatch
	release chan error
}

func (f *fakeRaft) propose(ctx context.Context, group uint64, data []byte) (uint64, error) {
	var b replicav1.LogBatch
	if err := proto.Unmarshal(data, &b); err != nil {
		return 0, err
	}
	p := &pending{batch: &b, release: make(chan error, 1)}
	f.entered <- p
	select {
	case err := <-p.release:
		if err != nil {
			return 0, err
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.entries = append(f.entries, &b)
	err := f.e.Apply([]multiraft.Committed{{GroupID: group, Entries: []*raftpb.Entry{{
		Index: proto.Uint64(f.index), Term: proto.Uint64(1), Data: data}}}})
	return f.index, err
}

func (f *fakeRaft) committed() []*replicav1.LogBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*replicav1.LogBatch(nil), f.entries...)
}

// newCoalesceEngine returns an engine leading channel "ch" on a fakeRaft.
func newCoalesceEngine(t *testing.T) (*Engine, *fakeRaft) {
	t.Helper()
	e := NewEngine(EngineConfig{NodeID: 1, Store: raftstore.NewMemory(), Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 10_000}})
	f := &fakeRaft{e: e, entered: make(chan *pending, 1000)}
	e.Attach(&scriptedHost{propose: f.propose}, nil, nil)
	errs := e.Load(context.Background(), []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
	require.NoError(t, errs[0])
	return e, f
}

func (p *coalescer) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(time.Millisecond)
	}
}

// waitEntered waits for the next proposal to reach raft.
func (f *fakeRaft) waitEntered(t *testing.T) *pending {
	t.Helper()
	select {
	case p := <-f.entered:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no proposal reached raft")
		return nil
	}
}

type appendCall struct {
	res []chanlog.Result
	err error
}

// appendAsync starts an Append and returns where its outcome arrives.
func appendAsync(ctx context.Context, e *Engine, in []*triarchv1.MessageInput) <-chan appendCall {
	out := make(chan appendCall, 1)
	go func() {
		res, err := e.Append(ctx, "ch", in)
		out <- appendCall{res, err}
	}()
	return out
}

func await(t *testing.T, c <-chan appendCall) appendCall {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("append never returned")
		return appendCall{}
	}
}

// blockChannel starts an Append that stays in flight until released, so that the Appends
// after it queue.
func blockChannel(t *testing.T, e *Engine, f *fakeRaft) ([]<-chan appendCall, []*pending) {
	t.Helper()
	first := appendAsync(context.Background(), e, msgs("blocker"))
	return []<-chan appendCall{first}, []*pending{f.waitEntered(t)}
}

// releaseAll answers the held proposals, and every proposal from now on, with err.
func (f *fakeRaft) releaseAll(t *testing.T, err error, held ...*pending) {
	for _, p := range held {
		p.release <- err
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case p := <-f.entered:
				p.release <- err
			case <-stop:
				return
			}
		}
	}()
}

func TestConcurrentAppendsShareEntriesAndGetTheirOwnSeqs(t *testing.T) {
	e, f := newCoalesceEngine(t)
	ch := e.byID["ch"]
	blockers, held := blockChannel(t, e, f)

	// 50 senders of 1 to 3 messages queue behind the entries in flight.
	const senders = 50
	calls := make([]<-chan appendCall, senders)
	inputs := make([][]*triarchv1.MessageInput, senders)
	for i := range senders {
		for j := range i%3 + 1 {
			inputs[i] = append(inputs[i], msgs(fmt.Sprintf("s%d-m%d", i, j))...)
		}
		calls[i] = appendAsync(context.Background(), e, inputs[i])
	}
	waitFor(t, "all senders queued", func() bool { return ch.prop.queued() == senders })
	held[0].release <- nil // the next round carries the whole queue
	coalesced := f.waitEntered(t)
	total := 0
	for _, in := range inputs {
		total += len(in)
	}
	require.Equal(t, total, len(coalesced.batch.GetMessages()))
	f.releaseAll(t, nil, coalesced)

	seen := map[uint64]bool{}
	for _, c := range blockers {
		r := await(t, c)
		require.NoError(t, r.err)
		seen[r.res[0].Seq] = true
	}
	for i, c := range calls {
		r := await(t, c)
		require.NoError(t, r.err)
		require.Len(t, r.res, len(inputs[i]))
		for j, res := range r.res {
			require.False(t, res.Duplicate)
			require.Equal(t, r.res[0].Seq+uint64(j), res.Seq, "a request's messages have contiguous seqs")
			seq, ok := ch.log.Lookup(inputs[i][j].GetClientMsgId())
			require.True(t, ok)
			require.Equal(t, seq, res.Seq, "each request gets the seqs of its own messages")
			require.False(t, seen[res.Seq], "seq %d handed out twice", res.Seq)
			seen[res.Seq] = true
		}
	}
	require.Len(t, seen, int(ch.log.LastSeq()))
	entries := f.committed()
	require.Len(t, entries, 2, "the 50 queued requests went into one entry")
	require.Equal(t, int64(2), ch.prop.entries.Load())
	require.Equal(t, int64(1+senders), ch.prop.requests.Load())
	ids := map[uint64]bool{}
	for _, b := range entries {
		ids[b.GetProposalId()] = true
	}
	require.Len(t, ids, len(entries), "one proposal id per entry")
}

func TestIdleChannelProposesAtOnce(t *testing.T) {
	e, f := newCoalesceEngine(t)
	first := appendAsync(context.Background(), e, msgs("first"))
	p := f.waitEntered(t) // proposed without waiting for anything
	second := appendAsync(context.Background(), e, msgs("second"))
	waitFor(t, "second queued", func() bool { return e.byID["ch"].prop.queued() == 1 })
	p.release <- nil
	require.Equal(t, []chanlog.Result{{Seq: 1}}, await(t, first).res)
	f.waitEntered(t).release <- nil
	require.Equal(t, []chanlog.Result{{Seq: 2}}, await(t, second).res)
}

func TestDuplicatesWithinAndAcrossCoalescedEntries(t *testing.T) {
	e, f := newCoalesceEngine(t)
	ch := e.byID["ch"]
	blockers, held := blockChannel(t, e, f)

	// A retry of b and of a arrive while the originals wait: all three share one entry.
	r1 := appendAsync(context.Background(), e, msgs("a", "b"))
	waitFor(t, "r1 queued", func() bool { return ch.prop.queued() == 1 })
	r2 := appendAsync(context.Background(), e, msgs("b", "c"))
	waitFor(t, "r2 queued", func() bool { return ch.prop.queued() == 2 })
	r3 := appendAsync(context.Background(), e, msgs("a"))
	waitFor(t, "r3 queued", func() bool { return ch.prop.queued() == 3 })
	held[0].release <- nil          // seq 1
	f.waitEntered(t).release <- nil // the coalesced entry: seqs 2 to 4

	o1, o2, o3 := await(t, r1), await(t, r2), await(t, r3)
	require.NoError(t, errors.Join(o1.err, o2.err, o3.err))
	require.Equal(t, []chanlog.Result{{Seq: 2}, {Seq: 3}}, o1.res)
	require.Equal(t, []chanlog.Result{{Seq: 3, Duplicate: true}, {Seq: 4}}, o2.res)
	require.Equal(t, []chanlog.Result{{Seq: 2, Duplicate: true}}, o3.res)

	// Across entries too.
	require.NoError(t, await(t, blockers[0]).err)
	f.releaseAll(t, nil)
	o4 := await(t, appendAsync(context.Background(), e, msgs("c", "d")))
	require.NoError(t, o4.err)
	require.Equal(t, []chanlog.Result{{Seq: 4, Duplicate: true}, {Seq: 5}}, o4.res)
	require.Len(t, f.committed(), 3)
}

func TestCancelledWaiterDoesNotDisturbTheOthers(t *testing.T) {
	e, f := newCoalesceEngine(t)
	ch := e.byID["ch"]
	blockers, held := blockChannel(t, e, f)

	// Cancelled while queued: answered with its ctx error and never proposed.
	qctx, qcancel := context.WithCancel(context.Background())
	queued := appendAsync(qctx, e, msgs("gave-up-early"))
	waitFor(t, "queued", func() bool { return ch.prop.queued() == 1 })
	// Cancelled once its entry is proposed: answered with its ctx error; the entry goes on.
	pctx, pcancel := context.WithCancel(context.Background())
	proposed := appendAsync(pctx, e, msgs("gave-up-late"))
	waitFor(t, "queued", func() bool { return ch.prop.queued() == 2 })
	patient := appendAsync(context.Background(), e, msgs("patient"))
	waitFor(t, "queued", func() bool { return ch.prop.queued() == 3 })

	qcancel()
	require.ErrorIs(t, await(t, queued).err, context.Canceled)
	require.Equal(t, 2, ch.prop.queued())
	held[0].release <- nil
	require.Equal(t, []chanlog.Result{{Seq: 1}}, await(t, blockers[0]).res)
	shared := f.waitEntered(t)
	pcancel()
	require.ErrorIs(t, await(t, proposed).err, context.Canceled)
	shared.release <- nil
	o := await(t, patient)
	require.NoError(t, o.err)
	require.Equal(t, []chanlog.Result{{Seq: 3}}, o.res)

	_, ok := ch.log.Lookup("gave-up-early")
	require.False(t, ok, "a request cancelled before it was proposed is not proposed")
	seq, ok := ch.log.Lookup("gave-up-late")
	require.True(t, ok, "a request cancelled after it was proposed may still commit")
	require.Equal(t, uint64(2), seq)

	// When every request of an entry has left, its proposal is abandoned too (a proposal
	// that never commits must not hold up the channel), and the channel goes on.
	actx, acancel := context.WithCancel(context.Background())
	alone := appendAsync(actx, e, msgs("alone"))
	f.waitEntered(t)
	acancel()
	require.ErrorIs(t, await(t, alone).err, context.Canceled)
	next := appendAsync(context.Background(), e, msgs("next"))
	f.waitEntered(t).release <- nil
	o = await(t, next)
	require.NoError(t, o.err)
	require.Equal(t, []chanlog.Result{{Seq: 4}}, o.res)
}

func TestLeaderLossFailsEveryWaiter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		check func(t *testing.T, err error)
	}{
		{"not leader", &multiraft.NotLeaderError{GroupID: 7, LeaderID: 2, Term: 5}, func(t *testing.T, err error) {
			var nl *NotLeader
			require.ErrorAs(t, err, &nl)
			require.Equal(t, uint64(2), nl.LeaderID)
			require.Equal(t, "ch", nl.ChannelID)
		}},
		{"leadership lost", fmt.Errorf("multiraft: group 7: entry 3: %w", multiraft.ErrLeadershipLost), func(t *testing.T, err error) {
			require.ErrorIs(t, err, multiraft.ErrLeadershipLost)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, f := newCoalesceEngine(t)
			ch := e.byID["ch"]
			blockers, held := blockChannel(t, e, f)
			var calls []<-chan appendCall
			for i := range 10 {
				calls = append(calls, appendAsync(context.Background(), e, msgs(fmt.Sprintf("m%d", i))))
			}
			waitFor(t, "queued", func() bool { return ch.prop.queued() == 10 })
			f.releaseAll(t, tc.err, held...)
			for _, c := range append(blockers, calls...) {
				tc.check(t, await(t, c).err)
			}
			require.Empty(t, f.committed())
			require.Equal(t, int64(2), ch.prop.entries.Load(), "the 10 shared one entry")
		})
	}
}

func TestCoalescedEntriesKeepTheLimits(t *testing.T) {
	e, f := newCoalesceEngine(t)
	ch := e.byID["ch"]
	blockers, held := blockChannel(t, e, f)

	// Three requests of 400 messages: 800 fit in one entry, the third needs another.
	var calls []<-chan appendCall
	for i := range 3 {
		in := make([]*triarchv1.MessageInput, 400)
		for j := range in {
			in[j] = &triarchv1.MessageInput{ClientMsgId: fmt.Sprintf("n%d-%d", i, j), Payload: []byte("x")}
		}
		calls = append(calls, appendAsync(context.Background(), e, in))
	}
	waitFor(t, "queued", func() bool { return ch.prop.queued() == 3 })
	// Two requests of 3 MiB: each is within 4 MiB, together they are not.
	big := make([]byte, 1<<20)
	for i := range 2 {
		in := make([]*triarchv1.MessageInput, 3)
		for j := range in {
			in[j] = &triarchv1.MessageInput{ClientMsgId: fmt.Sprintf("big%d-%d", i, j), Payload: big}
		}
		calls = append(calls, appendAsync(context.Background(), e, in))
	}
	waitFor(t, "queued", func() bool { return ch.prop.queued() == 5 })
	f.releaseAll(t, nil, held...)
	for _, c := range append(blockers, calls...) {
		require.NoError(t, await(t, c).err)
	}
	entries := f.committed()
	// The blocker; 800 messages; 400 messages and a 3 MiB request; the other 3 MiB request.
	require.Len(t, entries, 4)
	for _, b := range entries {
		size := 0
		for _, m := range b.GetMessages() {
			size += proto.Size(m)
		}
		require.LessOrEqual(t, len(b.GetMessages()), MaxBatchLen)
		require.LessOrEqual(t, size, MaxBatchBytes)
	}
}

// Over real raft, gRPC and Badger: many concurrent senders to one channel are acknowledged with
// distinct, committed seqs in fewer entries than requests, and readers see exactly them.
func TestConcurrentSendersToOneChannel(t *testing.T) {
	c := newCluster(t)
	c.load(c.spec("hot", 1))
	c.elect(1, "hot")
	const senders, each = 64, 5
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		acks = map[string]uint64{}
	)
	for s := range senders {
		wg.Go(func() {
			for k := range each {
				id := fmt.Sprintf("s%d-%d", s, k)
				resp, err := c.data[0].Append(ctx(t), &replicav1.AppendRequest{ChannelId: "hot", Messages: msgs(id)})
				if !assert.NoError(t, err) || !assert.Len(t, resp.GetResults(), 1) {
					return
				}
				mu.Lock()
				acks[id] = resp.GetResults()[0].GetSeq()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, acks, senders*each)
	got := readAll(t, c.data[0], "hot")
	requireContiguous(t, got, senders*each)
	for _, m := range got {
		require.Equal(t, acks[m.GetClientMsgId()], m.GetSeq(), "read seq differs from the acknowledged one")
	}
	st, err := c.ctl[0].GetGroupStatus(ctx(t), &replicav1.GetGroupStatusRequest{ChannelIds: []string{"hot"}})
	require.NoError(t, err)
	entries := st.GetResults()[0].GetStatus().GetLastIndex()
	t.Logf("%d requests in %d raft entries", senders*each, entries)
	require.Less(t, entries, uint64(senders*each), "concurrent sends were not coalesced")
}
