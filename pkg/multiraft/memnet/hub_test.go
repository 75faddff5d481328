package memnet_test

import (
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
)

// fakeNode records what the hub does to it.
type fakeNode struct {
	got         []uint64 // Msg.Index of delivered messages, in order
	unreachable [][2]uint64
}

func (f *fakeNode) Step(envs ...multiraft.Envelope) {
	for _, e := range envs {
		f.got = append(f.got, e.Msg.GetIndex())
	}
}
func (f *fakeNode) ReportUnreachable(g, n uint64) {
	f.unreachable = append(f.unreachable, [2]uint64{g, n})
}
func (f *fakeNode) ProcessRound() (bool, error) { return false, nil }

func env(group, to, index uint64) multiraft.Envelope {
	return multiraft.Envelope{GroupID: group, Msg: &raftpb.Message{
		Type: raftpb.MessageType_MsgApp.Enum(), To: proto.Uint64(to), Index: proto.Uint64(index),
	}}
}

func hub(t *testing.T, opts memnet.Options) (*memnet.Hub, *fakeNode, *fakeNode) {
	t.Helper()
	h := memnet.New(opts)
	a, b := &fakeNode{}, &fakeNode{}
	h.Attach(1, a)
	h.Attach(2, b)
	return h, a, b
}

func TestPartitionDropsAndReports(t *testing.T) {
	h, a, b := hub(t, memnet.Options{})
	h.Transport(1).Send([]multiraft.Envelope{env(7, 2, 1)})
	h.Partition(1, 2)
	h.Transport(1).Send([]multiraft.Envelope{env(8, 2, 2)}) // dropped at send
	if n := h.DeliverAll(); n != 0 {                        // the one in flight dropped at delivery
		t.Fatalf("delivered %d across a partition", n)
	}
	if len(b.got) != 0 || !slices.Equal(a.unreachable, [][2]uint64{{8, 2}, {7, 2}}) {
		t.Fatalf("delivered %v, reports %v; want none delivered, reports for groups 8 and 7", b.got, a.unreachable)
	}
	h.Heal()
	h.Transport(1).Send([]multiraft.Envelope{env(9, 2, 3)})
	h.DeliverAll()
	if !slices.Equal(b.got, []uint64{3}) {
		t.Fatalf("after heal delivered %v, want [3]", b.got)
	}
	if s := h.Stats(); s.Sent != 3 || s.Delivered != 1 || s.Unreachable != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestFullQueueDropsAndReports(t *testing.T) {
	h, a, b := hub(t, memnet.Options{QueueLimit: 2})
	h.Transport(1).Send([]multiraft.Envelope{env(1, 2, 1), env(1, 2, 2), env(1, 2, 3)})
	h.DeliverAll()
	if !slices.Equal(b.got, []uint64{1, 2}) || !slices.Equal(a.unreachable, [][2]uint64{{1, 2}}) {
		t.Fatalf("delivered %v, reports %v; want [1 2] and one report", b.got, a.unreachable)
	}
}

func TestDelayCountsDeliveries(t *testing.T) {
	h, _, b := hub(t, memnet.Options{})
	h.SetDelay(2, 2)
	h.Transport(1).Send([]multiraft.Envelope{env(1, 2, 1)})
	for i, want := range []int{0, 0, 1} {
		if n := h.DeliverAll(); n != want {
			t.Fatalf("delivery %d: %d messages, want %d", i+1, n, want)
		}
	}
	if !slices.Equal(b.got, []uint64{1}) {
		t.Fatalf("got %v", b.got)
	}
}

// The same seed gives the same drops and the same order; another seed does not.
func TestFaultsAreSeeded(t *testing.T) {
	run := func(seed uint64) []uint64 {
		h, _, b := hub(t, memnet.Options{Seed: seed})
		h.SetDropRate(0.3)
		h.SetReorder(true)
		h.SetDelay(0, 2)
		for i := range uint64(200) {
			h.Transport(1).Send([]multiraft.Envelope{env(1, 2, i)})
			if i%10 == 0 {
				h.DeliverAll()
			}
		}
		for h.Pending() > 0 {
			h.DeliverAll()
		}
		return b.got
	}
	first, again, other := run(1), run(1), run(2)
	if !slices.Equal(first, again) {
		t.Fatal("two runs with seed 1 differ")
	}
	if slices.Equal(first, other) {
		t.Fatal("seeds 1 and 2 gave the same run")
	}
	if len(first) < 100 || len(first) > 180 || slices.IsSorted(first) {
		t.Fatalf("seed 1 delivered %d of 200 (sorted: %v); want about 70%%, reordered", len(first), slices.IsSorted(first))
	}
}

func TestMessagesAreClonedUnlessShared(t *testing.T) {
	for _, share := range []bool{false, true} {
		h, _, _ := hub(t, memnet.Options{ShareMessages: share})
		var seen *raftpb.Message
		h.Attach(2, stepFunc(func(envs ...multiraft.Envelope) { seen = envs[0].Msg }))
		e := env(1, 2, 5)
		h.Transport(1).Send([]multiraft.Envelope{e})
		h.DeliverAll()
		if (seen == e.Msg) != share || seen.GetIndex() != 5 {
			t.Fatalf("ShareMessages=%v: receiver got the sender's object: %v", share, seen == e.Msg)
		}
	}
}

type stepFunc func(envs ...multiraft.Envelope)

func (f stepFunc) Step(envs ...multiraft.Envelope) { f(envs...) }
func (stepFunc) ReportUnreachable(uint64, uint64)  {}
func (stepFunc) ProcessRound() (bool, error)       { return false, nil }
