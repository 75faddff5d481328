// Package memnet is an in-memory network for multiraft hosts in tests: deterministic, driven
// by the test, and able to partition, drop, delay and reorder messages from a seeded random
// source so that every run of a test is the same run.
package memnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// Node is what the hub needs of a host (a *multiraft.Host is one).
type Node interface {
	Step(envs ...multiraft.Envelope)
	ReportUnreachable(groupID, nodeID uint64)
	ProcessRound() (bool, error)
}

// Options configure a Hub.
type Options struct {
	// Seed seeds the random source of drops, delays and reordering.
	Seed uint64
	// QueueLimit bounds the messages in flight to one node; beyond it Send drops and
	// reports the peer unreachable, as a full transport queue would. Default 65536.
	QueueLimit int
	// ShareMessages hands the sender's message objects to the receiver as they are instead
	// of cloning them (a real transport marshals them), which is faster for benchmarks.
	ShareMessages bool
}

// Stats count what the hub did with messages.
type Stats struct {
	Sent        int // handed to Send
	Delivered   int
	Dropped     int // lost at random, silently
	Unreachable int // dropped on a cut link or full queue, and reported to the sender
}

type flight struct {
	from, to uint64
	env      multiraft.Envelope
	due      uint64
}

type report struct {
	node   Node
	group  uint64
	target uint64
}

// Hub connects the transports of several nodes. It is safe for concurrent use.
type Hub struct {
	opts   Options
	notify chan struct{}

	mu       sync.Mutex
	rng      *rand.Rand
	nodes    map[uint64]Node
	ids      []uint64
	cut      map[[2]uint64]bool
	drop     float64
	minDelay int
	maxDelay int
	reorder  bool
	queue    []flight
	inFlight map[uint64]int
	clock    uint64
	stats    Stats
	hook     func(from uint64, env multiraft.Envelope)
	keep     func(from uint64, env multiraft.Envelope) bool
}

// New returns a hub with no nodes, no faults and no delay.
func New(opts Options) *Hub {
	if opts.QueueLimit == 0 {
		opts.QueueLimit = 1 << 16
	}
	return &Hub{
		opts:     opts,
		notify:   make(chan struct{}, 1),
		rng:      rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9E3779B97F4A7C15)),
		nodes:    make(map[uint64]Node),
		cut:      make(map[[2]uint64]bool),
		inFlight: make(map[uint64]int),
	}
}

// Transport returns the transport node id sends through. Pass it to the node's host, then
// Attach the host.
func (h *Hub) Transport(id uint64) multiraft.Transport { return endpoint{h: h, from: id} }

// Attach connects a node: messages to id are delivered to it.
func (h *Hub) Attach(id uint64, n Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nodes[id] == nil {
		h.ids = append(h.ids, id)
		slices.Sort(h.ids)
	}
	h.nodes[id] = n
}

// Detach disconnects a node (a crash): messages to it are dropped and reported.
func (h *Hub) Detach(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.nodes, id)
	h.ids = slices.DeleteFunc(h.ids, func(x uint64) bool { return x == id })
}

func link(a, b uint64) [2]uint64 {
	if a > b {
		a, b = b, a
	}
	return [2]uint64{a, b}
}

// Partition cuts the link between a and b, both ways. Messages on it, sent or in flight,
// are dropped and reported unreachable to their sender.
func (h *Hub) Partition(a, b uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cut[link(a, b)] = true
}

// Isolate cuts every link of node id, to the nodes attached now.
func (h *Hub) Isolate(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, other := range h.ids {
		if other != id {
			h.cut[link(id, other)] = true
		}
	}
}

// Heal restores every link.
func (h *Hub) Heal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.cut)
}

// SetDropRate makes each message sent from now on silently lost with probability p.
func (h *Hub) SetDropRate(p float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drop = p
}

// SetDelay delays each message sent from now on by a random number of deliveries in
// [min, max]: a message with delay d is delivered by the (d+1)-th DeliverAll after Send.
func (h *Hub) SetDelay(min, max int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.minDelay, h.maxDelay = min, max
}

// SetReorder shuffles the messages of each delivery.
func (h *Hub) SetReorder(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reorder = on
}

// SetHook calls fn for every message handed to Send, before any fault is applied, on the
// sender's goroutine. nil removes it.
func (h *Hub) SetHook(fn func(from uint64, env multiraft.Envelope)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hook = fn
}

// SetFilter drops, silently, every message for which keep returns false: a fault narrower
// than a cut link, such as one group's traffic on a link. nil removes it.
func (h *Hub) SetFilter(keep func(from uint64, env multiraft.Envelope) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.keep = keep
}

// Stats returns the counters so far.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// Pending returns the number of messages in flight.
func (h *Hub) Pending() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.queue)
}

type endpoint struct {
	h    *Hub
	from uint64
}

// Send implements multiraft.Transport. It never blocks: it only queues, or drops and reports.
func (e endpoint) Send(msgs []multiraft.Envelope) {
	h := e.h
	var reports []report
	h.mu.Lock()
	if hook := h.hook; hook != nil {
		h.mu.Unlock()
		for _, env := range msgs {
			hook(e.from, env)
		}
		h.mu.Lock()
	}
	sender := h.nodes[e.from]
	for _, env := range msgs {
		to := env.Msg.GetTo()
		h.stats.Sent++
		if h.cut[link(e.from, to)] || h.nodes[to] == nil || h.inFlight[to] >= h.opts.QueueLimit {
			h.stats.Unreachable++
			if sender != nil {
				reports = append(reports, report{sender, env.GroupID, to})
			}
			continue
		}
		if h.keep != nil && !h.keep(e.from, env) {
			h.stats.Dropped++
			continue
		}
		if h.drop > 0 && h.rng.Float64() < h.drop {
			h.stats.Dropped++
			continue
		}
		delay := h.minDelay
		if h.maxDelay > h.minDelay {
			delay += h.rng.IntN(h.maxDelay - h.minDelay + 1)
		}
		if !h.opts.ShareMessages {
			env.Msg = proto.Clone(env.Msg).(*raftpb.Message)
		}
		h.queue = append(h.queue, flight{from: e.from, to: to, env: env, due: h.clock + uint64(delay)})
		h.inFlight[to]++
	}
	h.mu.Unlock()
	// Outside the lock: the sender's host takes its own locks to queue the report.
	for _, r := range reports {
		r.node.ReportUnreachable(r.group, r.target)
	}
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// DeliverAll advances the hub's clock by one and delivers every message that is due, per
// destination in send order (shuffled when reordering is on), destinations in id order.
// It returns how many it delivered.
func (h *Hub) DeliverAll() int {
	h.mu.Lock()
	h.clock++
	var due []flight
	rest := h.queue[:0]
	for _, f := range h.queue {
		if f.due < h.clock {
			due = append(due, f)
		} else {
			rest = append(rest, f)
		}
	}
	clear(h.queue[len(rest):])
	h.queue = rest
	if h.reorder {
		h.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	}
	batches := make(map[uint64][]multiraft.Envelope)
	var reports []report
	delivered := 0
	for _, f := range due {
		h.inFlight[f.to]--
		if h.cut[link(f.from, f.to)] || h.nodes[f.to] == nil {
			h.stats.Unreachable++
			if s := h.nodes[f.from]; s != nil {
				reports = append(reports, report{s, f.env.GroupID, f.to})
			}
			continue
		}
		batches[f.to] = append(batches[f.to], f.env)
		delivered++
	}
	h.stats.Delivered += delivered
	targets := make([]Node, 0, len(h.ids))
	var envs [][]multiraft.Envelope
	for _, id := range h.ids {
		if b := batches[id]; len(b) > 0 {
			targets = append(targets, h.nodes[id])
			envs = append(envs, b)
		}
	}
	h.mu.Unlock()

	for i, n := range targets {
		n.Step(envs[i]...)
	}
	for _, r := range reports {
		r.node.ReportUnreachable(r.group, r.target)
	}
	return delivered
}

// Stabilize alternates a round on every attached node (in id order) with a delivery until
// no node has anything to do and no message is in flight. It gives up after maxIter
// iterations (0 means 100,000), which means the system does not settle.
func (h *Hub) Stabilize(maxIter int) error {
	if maxIter == 0 {
		maxIter = 100_000
	}
	for range maxIter {
		h.mu.Lock()
		nodes := make([]Node, 0, len(h.ids))
		for _, id := range h.ids {
			nodes = append(nodes, h.nodes[id])
		}
		h.mu.Unlock()
		moved := false
		for _, n := range nodes {
			worked, err := n.ProcessRound()
			if err != nil {
				return fmt.Errorf("memnet: stabilize: %w", err)
			}
			moved = moved || worked
		}
		if h.DeliverAll() > 0 {
			moved = true
		}
		if !moved && h.Pending() == 0 {
			return nil
		}
	}
	return fmt.Errorf("memnet: not stable after %d iterations", maxIter)
}

// Run delivers messages as they are sent until ctx ends, for hosts driven by their own Run.
// Delays count deliveries, so a delayed message keeps the loop delivering until it is due.
func (h *Hub) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.notify:
		}
		for ctx.Err() == nil {
			n := h.DeliverAll()
			if h.Pending() == 0 {
				break
			}
			if n == 0 {
				runtime.Gosched()
			}
		}
	}
}
