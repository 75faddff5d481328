package raftnet

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	"github.com/triarch-io/triarch/pkg/backoff"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// peer is the outgoing side towards one node: a bounded queue and the goroutine that drains it
// into frames on one stream.
type peer struct {
	t  *Transport
	id uint64

	mu     sync.Mutex
	addr   string
	queue  []multiraft.Envelope
	state  linkState
	wake   chan struct{}
	redial chan struct{}
}

// linkState is the state of the stream to a peer.
type linkState int

const (
	// linkDialing: a connection attempt is under way; messages queue for it, so the first
	// messages to a new peer (often an ordered campaign's votes, which nobody retransmits
	// since followers are never ticked) are not lost to the dial.
	linkDialing linkState = iota
	// linkUp: the stream is open.
	linkUp
	// linkDown: the last attempt failed; messages are dropped and reported until the next.
	linkDown
)

func newPeer(t *Transport, id uint64, addr string) *peer {
	return &peer{t: t, id: id, addr: addr, wake: make(chan struct{}, 1), redial: make(chan struct{}, 1)}
}

func (p *peer) setAddr(addr string) {
	p.mu.Lock()
	changed := p.addr != addr
	p.addr = addr
	p.mu.Unlock()
	if changed {
		select {
		case p.redial <- struct{}{}:
		default:
		}
	}
}

func (p *peer) isConnected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state == linkUp
}

// enqueue adds e unless the queue is full or the peer is down (queueing for a peer we cannot
// reach only delays the unreachable report raft needs).
func (p *peer) enqueue(e multiraft.Envelope) bool {
	p.mu.Lock()
	if p.state == linkDown || len(p.queue) >= p.t.cfg.QueueLen {
		p.mu.Unlock()
		return false
	}
	p.queue = append(p.queue, e)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return true
}

// takeAll removes everything queued; the queue's slice is handed over, not copied.
func (p *peer) takeAll() []multiraft.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.queue
	p.queue = nil
	return out
}

// setState changes the link state; going down hands back what was queued, to report as
// dropped.
func (p *peer) setState(s linkState) []multiraft.Envelope {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = s
	if s != linkDown {
		return nil
	}
	lost := p.queue
	p.queue = nil
	return lost
}

// run keeps a stream to the peer, redialling after a pause that grows while attempts fail
// (jittered, so that peers that lost each other at once do not reconnect in lock step) and
// starts over once a session sent anything.
func (p *peer) run(ctx context.Context) {
	bo := backoff.New(p.t.cfg.MinBackoff, p.t.cfg.MaxBackoff)
	for ctx.Err() == nil {
		if p.session(ctx) {
			bo = backoff.New(p.t.cfg.MinBackoff, p.t.cfg.MaxBackoff)
		}
		select {
		case <-ctx.Done():
		case <-p.redial:
		case <-time.After(bo.Next(0)):
		}
		p.setState(linkDialing)
	}
}

// session dials, streams frames until the stream breaks, and reports whether it ever sent.
// It leaves the link down, with whatever was queued reported as dropped.
func (p *peer) session(ctx context.Context) (sent bool) {
	defer func() { p.t.reportDropped(p.setState(linkDown)) }()
	p.mu.Lock()
	addr := p.addr
	p.mu.Unlock()
	conn, err := p.t.cfg.Dial(addr)
	if err != nil {
		p.t.cfg.Log.Debug("raftnet: dial failed", "peer", p.id, "addr", addr, "err", err)
		return false
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The watchdog ends the session when opening the stream or one Send blocks for longer
	// than StallTimeout: the peer is silent (see Config.StallTimeout).
	watchdog := time.AfterFunc(p.t.cfg.StallTimeout, cancel)
	defer watchdog.Stop()
	stream, err := raftv1.NewRaftTransportServiceClient(conn).Send(sctx, grpc.WaitForReady(false))
	if err != nil {
		p.t.cfg.Log.Debug("raftnet: open stream failed", "peer", p.id, "addr", addr, "err", err)
		return false
	}
	watchdog.Stop()
	p.setState(linkUp)
	select { // what queued while dialling goes out now
	case p.wake <- struct{}{}:
	default:
	}
	for {
		select {
		case <-ctx.Done():
			return sent
		case <-p.redial:
			return sent
		case <-p.wake:
		}
		batch := p.takeAll()
		if p.t.silenced() { // what queued before the silence stays unsent too
			p.t.reportDropped(batch)
			continue
		}
		if tamper := p.t.cfg.Tamper; tamper != nil {
			for i := range batch {
				batch[i] = tamper(p.id, batch[i])
			}
		}
		for len(batch) > 0 {
			frame, n, err := encodeUpTo(p.t.cfg.NodeID, p.id, batch, p.t.cfg.MaxFrameBytes)
			if f := p.t.cfg.Fault; f != nil && err == nil {
				delay, drop := f(p.id)
				if delay > 0 {
					time.Sleep(delay)
				}
				if drop {
					p.t.reportDropped(batch[:n])
					batch = batch[n:]
					continue
				}
			}
			if err == nil {
				watchdog.Reset(p.t.cfg.StallTimeout)
				err = stream.Send(frame)
				watchdog.Stop()
			}
			if err != nil {
				p.t.cfg.Log.Debug("raftnet: stream broken", "peer", p.id, "addr", addr, "err", err)
				p.t.reportDropped(batch)
				return sent
			}
			batch = batch[n:]
			sent = true
		}
	}
}
