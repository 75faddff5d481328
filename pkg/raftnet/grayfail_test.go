package raftnet

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// freezer is a TCP proxy in front of a peer that can stop forwarding without closing anything:
// what a black-holed or paused (SIGSTOP) peer looks like to its senders. Connections stay
// open, no reset comes back, and bytes simply stop moving, so the sender's stream fills its
// flow-control window and its Send blocks.
type freezer struct {
	lis    net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	thaw   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &freezer{lis: lis, target: target, thaw: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() { _ = lis.Close(); f.unfreeze() })
	return f
}

func (f *freezer) addr() string { return f.lis.Addr().String() }

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen.Swap(true) {
		f.thaw = make(chan struct{})
	}
}

func (f *freezer) unfreeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen.Swap(false) {
		close(f.thaw)
	}
}

func (f *freezer) wait() {
	f.mu.Lock()
	c, frozen := f.thaw, f.frozen.Load()
	f.mu.Unlock()
	if frozen {
		<-c
	}
}

func (f *freezer) serve() {
	for {
		c, err := f.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		go f.pipe(up, c)
		go f.pipe(c, up)
	}
}

// pipe copies src to dst in small chunks, holding each chunk while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 4096)
	for {
		f.wait()
		n, err := src.Read(buf)
		if n > 0 {
			f.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// A peer that goes silent (black-holed, paused) must not slow the others: its sender blocks
// on its own stream only, so the messages of every group to the live peer keep flowing, and
// once the silent peer's queue is full its messages are reported unreachable at once instead
// of piling up. This is the replica-tier half of "one dead replica must not slow anybody
// else" (failover issue item 2).
func TestSilentPeerDoesNotBlockTheOthers(t *testing.T) {
	h := newFakeHost()
	tr := New(Config{NodeID: 1, Dial: dial, QueueLen: 64}, h)
	t.Cleanup(tr.Close)
	b := startNode(t, 2, "127.0.0.1:0")
	c := startNode(t, 3, "127.0.0.1:0")
	fz := newFreezer(t, c.addr)
	tr.SetPeer(2, b.addr)
	tr.SetPeer(3, fz.addr())
	eventually(t, "connected to both", func() bool { return tr.Connected()[2] && tr.Connected()[3] })

	fz.freeze()
	// Large messages, so that the silent peer's stream exhausts its flow-control window and
	// socket buffers quickly and its sender blocks in Send.
	big := make([]byte, 64<<10)
	const rounds = 200
	for i := uint64(1); i <= rounds; i++ {
		m2, m3 := msg(1, 2, i), msg(1, 3, i)
		m3.Context = big
		tr.Send([]multiraft.Envelope{{GroupID: i, Msg: m2}, {GroupID: i, Msg: m3}})
		// Each message to the live peer arrives while the silent one holds its stream.
		eventually(t, "delivery to the live peer", func() bool { return b.host.steppedCount() == int(i) })
	}
	require.Less(t, c.host.steppedCount(), rounds, "the frozen peer cannot have taken everything")
	require.Positive(t, h.unreachableCount(), "messages beyond the silent peer's queue are reported")
	for k := range h.unreachable {
		require.Equal(t, uint64(3), k[1], "only messages to the silent peer are dropped")
	}
}

// A silenced transport (a replica whose disk stalled) sends nothing at all, reports every
// message unreachable, and sends again once the silence ends.
func TestSilencedTransportSendsNothing(t *testing.T) {
	var silent atomic.Bool
	h := newFakeHost()
	tr := New(Config{NodeID: 1, Dial: dial, Silenced: silent.Load}, h)
	t.Cleanup(tr.Close)
	b := startNode(t, 2, "127.0.0.1:0")
	tr.SetPeer(2, b.addr)
	eventually(t, "connected", func() bool { return tr.Connected()[2] })
	tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 1)}})
	eventually(t, "delivered", func() bool { return b.host.steppedCount() == 1 })

	silent.Store(true)
	tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 2)}, {GroupID: 2, Msg: msg(1, 2, 2)}})
	require.Equal(t, 2, h.unreachableCount(), "dropped and reported at once")

	silent.Store(false)
	tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 2, 3)}})
	eventually(t, "delivered again", func() bool { return b.host.steppedCount() == 2 })
	b.host.mu.Lock()
	defer b.host.mu.Unlock()
	require.Equal(t, uint64(3), b.host.stepped[1].Msg.GetIndex(), "nothing sent during the silence arrives")
}

// A stream to a peer that went silent is given up once a Send has blocked for StallTimeout:
// the link counts as down (so the replica reports the peer unreachable to the arbiter) and
// what was queued is reported, instead of the stream hanging until keepalive or TCP gives up.
// When the peer answers again the link comes back.
func TestStuckStreamIsGivenUpAndRedialled(t *testing.T) {
	h := newFakeHost()
	tr := New(Config{NodeID: 1, Dial: dial, StallTimeout: 200 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, h)
	t.Cleanup(tr.Close)
	c := startNode(t, 3, "127.0.0.1:0")
	fz := newFreezer(t, c.addr)
	tr.SetPeer(3, fz.addr())
	eventually(t, "connected", func() bool { return tr.Connected()[3] })

	fz.freeze()
	big := make([]byte, 64<<10)
	var i uint64
	eventually(t, "the stuck stream given up", func() bool {
		i++
		m := msg(1, 3, i)
		m.Context = big
		tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: m}})
		return !tr.Connected()[3]
	})
	require.Positive(t, h.unreachableCount())

	fz.unfreeze()
	delivered := c.host.steppedCount()
	eventually(t, "delivery after the peer answers again", func() bool {
		i++
		tr.Send([]multiraft.Envelope{{GroupID: 1, Msg: msg(1, 3, i)}})
		return tr.Connected()[3] && c.host.steppedCount() > delivered
	})
}
