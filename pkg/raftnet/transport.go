package raftnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Host is the local side the transport delivers to and reports drops to.
type Host interface {
	// Step hands received messages to their groups; it must not block for long.
	Step(envs ...multiraft.Envelope)
	// ReportUnreachable tells a group's leader that a message to nodeID was dropped.
	ReportUnreachable(groupID, nodeID uint64)
}

// Dialer opens a client connection to a peer's address (grpcx.Dial in production).
type Dialer func(addr string) (*grpc.ClientConn, error)

// Config configures a Transport.
type Config struct {
	// NodeID is this node's id, sent in every frame.
	NodeID uint64
	Dial   Dialer
	Log    *slog.Logger
	// QueueLen bounds the messages waiting for one peer (default 4096).
	QueueLen int
	// MaxFrameBytes bounds the raft message bytes of one frame (default 4 MiB).
	MaxFrameBytes int
	// StallTimeout bounds how long opening a stream, or one frame's Send, may block before the
	// stream is given up as dead (default 2 s: past what load alone makes a Send wait on a
	// busy 2-core machine, far below keepalive's 15 s; failover does not wait for it, the
	// arbiter's lease decides that). A
	// peer that is black-holed or paused (SIGSTOP) resets nothing: its connection stays
	// open, the stream's flow-control window fills and Send blocks until keepalive or TCP
	// notices, tens of seconds later. Meanwhile the link would count as up and its queue
	// would hold messages that raft believes in flight; giving up reports them unreachable
	// (raft probes instead) and redials, so the link comes back as soon as the peer does.
	StallTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnects (defaults 50 ms and 2 s).
	MinBackoff, MaxBackoff time.Duration
	// Fault, when set, is asked before each frame goes out to a peer: it may delay the frame
	// or drop it (dropped messages are reported unreachable, as a real loss would be). Tests
	// use it to inject network jitter and loss; production leaves it nil.
	Fault func(to uint64) (delay time.Duration, drop bool)
	// Silenced, when set, is asked on every Send and before every frame: while it says true
	// nothing leaves this node (every message is dropped and reported unreachable), so its
	// peers hear nothing from it and say so to the arbiter. A replica whose disk stalled says
	// true (services/replica/diskstall.go): its raft heartbeats would otherwise keep flowing
	// and its peers would vouch for a node that can commit nothing. Nil: never.
	Silenced func() bool
	// Tamper, when set, may change the messages to a peer before they are encoded (it must
	// change copies: the messages are raft's own). Tests use it to damage entries on their
	// way, as a bad disk or memory would; production leaves it nil.
	Tamper func(to uint64, env multiraft.Envelope) multiraft.Envelope
}

// Transport implements multiraft.Transport over gRPC streams.
type Transport struct {
	cfg  Config
	host Host

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	peers map[uint64]*peer

	heardMu sync.Mutex
	heard   map[uint64]time.Time
	// acked is when each peer last sent a response to a leader's append or heartbeat: an
	// acknowledgement of this node's leadership, which a frame of any other kind (a vote
	// request from a would-be successor, say) is not.
	acked map[uint64]time.Time
}

var _ multiraft.Transport = (*Transport)(nil)

// New returns a transport delivering to host. SetHost may supply the host later (the host
// needs the transport to be built first).
func New(cfg Config, host Host) *Transport {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = 4 << 20
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 2 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Transport{cfg: cfg, host: host, ctx: ctx, cancel: cancel,
		peers: make(map[uint64]*peer), heard: make(map[uint64]time.Time), acked: make(map[uint64]time.Time)}
}

// SetHost sets the host; call it before any message flows.
func (t *Transport) SetHost(h Host) { t.host = h }

// SetPeer records (or changes) the address of a peer node and starts its sender.
func (t *Transport) SetPeer(nodeID uint64, addr string) {
	if nodeID == t.cfg.NodeID {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[nodeID]; ok {
		p.setAddr(addr)
		return
	}
	p := newPeer(t, nodeID, addr)
	t.peers[nodeID] = p
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		p.run(t.ctx)
	}()
}

// Send implements multiraft.Transport. It never blocks.
func (t *Transport) Send(msgs []multiraft.Envelope) {
	if t.silenced() {
		t.reportDropped(msgs)
		return
	}
	var dropped []multiraft.Envelope
	t.mu.Lock()
	for _, e := range msgs {
		p := t.peers[e.Msg.GetTo()]
		if p == nil || !p.enqueue(e) {
			dropped = append(dropped, e)
		}
	}
	t.mu.Unlock()
	t.reportDropped(dropped)
}

func (t *Transport) silenced() bool { return t.cfg.Silenced != nil && t.cfg.Silenced() }

func (t *Transport) reportDropped(envs []multiraft.Envelope) {
	for _, e := range envs {
		t.host.ReportUnreachable(e.GroupID, e.Msg.GetTo())
	}
}

// LastHeard returns when each peer last delivered a frame here.
func (t *Transport) LastHeard() map[uint64]time.Time {
	t.heardMu.Lock()
	defer t.heardMu.Unlock()
	return maps.Clone(t.heard)
}

// LastAcked returns when each peer last answered an append or heartbeat of this node's (any
// group's: a caller with one group, like the arbiter, gets exactly its followers' acks).
func (t *Transport) LastAcked() map[uint64]time.Time {
	t.heardMu.Lock()
	defer t.heardMu.Unlock()
	return maps.Clone(t.acked)
}

// Connected reports which peers currently have an open outgoing stream.
func (t *Transport) Connected() map[uint64]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uint64]bool, len(t.peers))
	for id, p := range t.peers {
		out[id] = p.isConnected()
	}
	return out
}

// Close stops every sender and waits for them.
func (t *Transport) Close() {
	t.cancel()
	t.wg.Wait()
}

// Server returns the gRPC service receiving frames from peers.
func (t *Transport) Server() raftv1.RaftTransportServiceServer { return &server{t: t} }

type server struct {
	raftv1.UnimplementedRaftTransportServiceServer
	t *Transport
}

// Send receives one peer's frames until it closes the stream or this transport closes (so a
// stopping node's graceful shutdown does not wait for its peers to hang up).
func (s *server) Send(stream grpc.ClientStreamingServer[raftv1.SendRequest, raftv1.SendResponse]) error {
	frames := make(chan *raftv1.SendRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case frames <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case <-s.t.ctx.Done():
			return nil
		case err := <-errc:
			if errors.Is(err, io.EOF) || stream.Context().Err() != nil {
				return nil
			}
			return err
		case req := <-frames:
			envs, err := DecodeFrame(req)
			if err != nil {
				// A peer speaking garbage is a bug or an attack; drop the stream, keep the process.
				return fmt.Errorf("raftnet: frame from node %d: %w", req.GetFromNodeId(), err)
			}
			now := time.Now()
			s.t.heardMu.Lock()
			s.t.heard[req.GetFromNodeId()] = now
			if acknowledgesLeader(envs) {
				s.t.acked[req.GetFromNodeId()] = now
			}
			s.t.heardMu.Unlock()
			if len(envs) > 0 && s.t.host != nil {
				s.t.host.Step(envs...)
			}
		}
	}
}

// acknowledgesLeader reports whether envs hold a follower's answer to a leader.
func acknowledgesLeader(envs []multiraft.Envelope) bool {
	for _, e := range envs {
		switch e.Msg.GetType() {
		case raftpb.MessageType_MsgAppResp, raftpb.MessageType_MsgHeartbeatResp:
			return true
		}
	}
	return false
}

// EncodeFrame builds the frame carrying all of envs from one node to another.
func EncodeFrame(from, to uint64, envs []multiraft.Envelope) (*raftv1.SendRequest, error) {
	req, _, err := encodeUpTo(from, to, envs, 0)
	return req, err
}

// encodeUpTo encodes a prefix of envs into one frame, stopping once the frame holds maxBytes
// of messages (0: no limit), and returns how many it took (at least one). Encoding happens on
// the peer's goroutine, never on the raft loops that queued the messages.
func encodeUpTo(from, to uint64, envs []multiraft.Envelope, maxBytes int) (*raftv1.SendRequest, int, error) {
	req := &raftv1.SendRequest{FromNodeId: from, ToNodeId: to, Messages: make([]*raftv1.GroupMessage, 0, len(envs))}
	size := 0
	for _, e := range envs {
		if maxBytes > 0 && size >= maxBytes {
			break
		}
		b, err := proto.Marshal(e.Msg)
		if err != nil {
			return nil, 0, fmt.Errorf("raftnet: encode message of group %d: %w", e.GroupID, err)
		}
		size += len(b)
		req.Messages = append(req.Messages, &raftv1.GroupMessage{GroupId: e.GroupID, Message: b})
	}
	return req, len(req.Messages), nil
}

// DecodeFrame turns a received frame back into envelopes. Messages not addressed to the frame's
// receiver are refused: a misrouted frame must not be stepped into the wrong node's groups.
func DecodeFrame(req *raftv1.SendRequest) ([]multiraft.Envelope, error) {
	envs := make([]multiraft.Envelope, len(req.GetMessages()))
	for i, gm := range req.GetMessages() {
		m := new(raftpb.Message)
		if err := proto.Unmarshal(gm.GetMessage(), m); err != nil {
			return nil, fmt.Errorf("decode message %d of group %d: %w", i, gm.GetGroupId(), err)
		}
		if gm.GetGroupId() == 0 {
			return nil, fmt.Errorf("message %d has group id 0", i)
		}
		if m.GetTo() != req.GetToNodeId() || m.GetFrom() != req.GetFromNodeId() {
			return nil, fmt.Errorf("message %d of group %d is from %d to %d, frame is from %d to %d",
				i, gm.GetGroupId(), m.GetFrom(), m.GetTo(), req.GetFromNodeId(), req.GetToNodeId())
		}
		envs[i] = multiraft.Envelope{GroupID: gm.GetGroupId(), Msg: m}
	}
	return envs, nil
}
