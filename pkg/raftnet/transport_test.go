package raftnet

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// fakeHost records what the transport delivers and reports.
type fakeHost struct {
	mu          sync.Mutex
	stepped     []multiraft.Envelope
	unreachable map[[2]uint64]int
}

func newFakeHost() *fakeHost { return &fakeHost{unreachable: make(map[[2]uint64]int)} }

func (h *fakeHost) Step(envs ...multiraft.Envelope) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stepped = append(h.stepped, envs...)
}

func (h *fakeHost) ReportUnreachable(groupID, nodeID uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unreachable[[2]uint64{groupID, nodeID}]++
}

func (h *fakeHost) steppedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.stepped)
}

func (h *fakeHost) unreachableCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.unreachable {
		n += c
	}
	return n
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// node is one transport with its gRPC server.
type node struct {
	tr   *Transport
	host *fakeHost
	srv  *grpc.Server
	addr string
}

func startNode(t *testing.T, id uint64, addr string) *node {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	h := newFakeHost()
	tr := New(Config{NodeID: id, Dial: dial, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, h)
	srv := grpc.NewServer()
	raftv1.RegisterRaftTransportServiceServer(srv, tr.Server())
	go func() { _ = srv.Serve(lis) }()
	n := &node{tr: tr, host: h, srv: srv, addr: lis.Addr().String()}
	t.Cleanup(func() { srv.Stop(); tr.Close() })
	return n
}

func msg(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MessageType_MsgApp.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Index: proto.Uint64(index), Term: proto.Uint64(1)}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestDeliversManyGroupsInOrder(t *testing.T) {
	a := startNode(t, 1, "127.0.0.1:0")
	b := startNode(t, 2, "127.0.0.1:0")
	a.tr.SetPeer(2, b.addr)
	eventually(t, "a connected to b", func() bool { return a.tr.Connected()[2] })

	const groups, perGroup = 50, 20
	for i := uint64(1); i <= perGroup; i++ {
		envs := make([]multiraft.Envelope, 0, groups)
		for g := uint64(1); g <= groups; g++ {
			envs = append(envs, multiraft.Envelope{GroupID: g, Msg: msg(1, 2, i)})
		}
		a.tr.Send(envs)
	}
	eventually(t, "all messages delivered", func() bool { return b.host.steppedCount() == groups*perGroup })
	require.Zero(t, a.host.unreachableCount())
	// Per group, messages arrive in the order they were sent.
	next := make(map[uint64]uint64)
	b.host.mu.Lock()
	for _, e := range b.host.stepped {
		next[e.GroupID]++
		require.Equal(t, next[e.GroupID], e.Msg.GetIndex(), "group %d", e.GroupID)
		require.Equal(t, uint64(1), e.Msg.GetFrom())
	}
	b.host.mu.Unlock()
	require.Len(t, next, groups)
	require.WithinDuration(t, time.Now(), b.tr.LastHeard()[1], 10*time.Second)
}

func TestUnknownOrDisconnectedPeerIsReportedUnreachable(t *testing.T) {
	a := startNode(t, 1, "127.0.0.1:0")
	a.tr.Send([]multiraft.Envelope{{GroupID: 7, Msg: msg(1, 9, 1)}})
	require.Equal(t, 1, a.host.unreachable[[2]uint64{7, 9}], "no such peer: reported at once")

	// A peer whose address answers nothing: never connected, every send reported.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := lis.Addr().String()
	require.NoError(t, lis.Close())
	a.tr.SetPeer(3, dead)
	// While the first dial is under way messages queue; once it fails they are reported, and
	// from then on every send is reported at once.
	a.tr.Send([]multiraft.Envelope{{GroupID: 8, Msg: msg(1, 3, 1)}, {GroupID: 9, Msg: msg(1, 3, 1)}})
	eventually(t, "queued messages reported after the failed dial", func() bool { return a.host.unreachableCount() == 3 })
	require.False(t, a.tr.Connected()[3])
}

func TestReconnectsAfterPeerRestart(t *testing.T) {
	a := startNode(t, 1, "127.0.0.1:0")
	b := startNode(t, 2, "127.0.0.1:0")
	a.tr.SetPeer(2, b.addr)
	eventually(t, "connected", func() bool { return a.tr.Connected()[2] })
	a.tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 1)}})
	eventually(t, "first delivery", func() bool { return b.host.steppedCount() == 1 })

	b.srv.Stop()
	eventually(t, "disconnect noticed", func() bool {
		a.tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 2)}})
		return !a.tr.Connected()[2]
	})
	require.Positive(t, a.host.unreachableCount(), "messages to the stopped peer were reported")

	b2 := startNode(t, 2, b.addr) // same address, fresh process
	eventually(t, "reconnected", func() bool { return a.tr.Connected()[2] })
	a.tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 3)}})
	eventually(t, "delivery after restart", func() bool { return b2.host.steppedCount() == 1 })
}

func TestFullQueueDropsAndReports(t *testing.T) {
	h := newFakeHost()
	tr := New(Config{NodeID: 1, Dial: dial, QueueLen: 3}, h)
	p := newPeer(tr, 2, "unused")
	p.state = linkUp // no sender goroutine drains it
	tr.peers[2] = p
	envs := make([]multiraft.Envelope, 5)
	for i := range envs {
		envs[i] = multiraft.Envelope{GroupID: uint64(i + 1), Msg: msg(1, 2, 1)}
	}
	tr.Send(envs)
	require.Len(t, p.queue, 3)
	require.Equal(t, 2, h.unreachableCount())
	require.Equal(t, 1, h.unreachable[[2]uint64{4, 2}])
	require.Equal(t, 1, h.unreachable[[2]uint64{5, 2}])
	// Going down hands the queued messages back to be reported too.
	tr.reportDropped(p.setState(linkDown))
	require.Equal(t, 5, h.unreachableCount())
}

func TestFrameRoundTripAndValidation(t *testing.T) {
	envs := []multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 5)}, {GroupID: 99, Msg: msg(1, 2, 6)}}
	req, err := EncodeFrame(1, 2, envs)
	require.NoError(t, err)
	got, err := DecodeFrame(req)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, uint64(99), got[1].GroupID)
	require.True(t, proto.Equal(envs[1].Msg, got[1].Msg))

	// Frame limits split a batch.
	frame, n, err := encodeUpTo(1, 2, envs, 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Len(t, frame.GetMessages(), 1)

	misrouted, err := EncodeFrame(1, 3, envs)
	require.NoError(t, err)
	_, err = DecodeFrame(misrouted)
	require.ErrorContains(t, err, "frame is from 1 to 3")

	_, err = DecodeFrame(&raftv1.SendRequest{FromNodeId: 1, ToNodeId: 2, Messages: []*raftv1.GroupMessage{{GroupId: 1, Message: []byte{0xff}}}})
	require.Error(t, err)
	_, err = DecodeFrame(&raftv1.SendRequest{FromNodeId: 1, ToNodeId: 2, Messages: []*raftv1.GroupMessage{{GroupId: 0}}})
	require.Error(t, err)
}

func FuzzDecodeFrame(f *testing.F) {
	req, _ := EncodeFrame(1, 2, []multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 5)}})
	b, _ := proto.Marshal(req)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r raftv1.SendRequest
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		envs, err := DecodeFrame(&r)
		if err != nil {
			return
		}
		for _, e := range envs {
			require.NotZero(t, e.GroupID)
			require.Equal(t, r.GetToNodeId(), e.Msg.GetTo())
		}
	})
}

func BenchmarkFrameEncodeDecode(b *testing.B) {
	// 100 groups' MsgApp, each with one entry carrying a 100-message batch of 128-byte payloads.
	data := make([]byte, 100*140)
	envs := make([]multiraft.Envelope, 100)
	for i := range envs {
		m := msg(1, 2, uint64(i))
		m.Entries = []*raftpb.Entry{{Index: proto.Uint64(uint64(i)), Term: proto.Uint64(1), Data: data}}
		envs[i] = multiraft.Envelope{GroupID: uint64(i + 1), Msg: m}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(envs) * len(data)))
	for b.Loop() {
		req, err := EncodeFrame(1, 2, envs)
		if err != nil {
			b.Fatal(err)
		}
		wire, _ := proto.Marshal(req)
		var got raftv1.SendRequest
		if err := proto.Unmarshal(wire, &got); err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeFrame(&got); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFaultHookDelaysAndDrops(t *testing.T) {
	b := startNode(t, 2, "127.0.0.1:0")
	h := newFakeHost()
	var calls atomic.Int64
	tr := New(Config{NodeID: 1, Dial: dial, Fault: func(to uint64) (time.Duration, bool) {
		n := calls.Add(1)
		return time.Millisecond, n%2 == 0 // every second frame is lost
	}}, h)
	t.Cleanup(tr.Close)
	tr.SetPeer(2, b.addr)
	eventually(t, "connected", func() bool { return tr.Connected()[2] })
	for i := uint64(1); i <= 10; i++ {
		tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, i)}})
		eventually(t, "frame handled", func() bool { return int64(b.host.steppedCount()+h.unreachableCount()) == int64(i) })
	}
	require.Equal(t, 5, b.host.steppedCount(), "half the frames arrive")
	require.Equal(t, 5, h.unreachableCount(), "the other half are reported lost")
}
