package liveness

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

const (
	alive   = arbiterv1.NodeState_NODE_STATE_ALIVE
	suspect = arbiterv1.NodeState_NODE_STATE_SUSPECT
	dead    = arbiterv1.NodeState_NODE_STATE_DEAD
)

// PeerReport is a node's view of one peer, sent with its heartbeat (PeerReachability on the
// wire).
type PeerReport struct {
	Node      uint64
	Reachable bool
	// Age is how long before the heartbeat the reporter last heard from the peer.
	Age time.Duration
}

// Heartbeat is one heartbeat as the arbiter leader received it.
type Heartbeat struct {
	Node uint64
	// Now is the leader's clock when the heartbeat arrived.
	Now time.Time
	// RTT is the round trip of the node's previous heartbeat, as the node measured it; 0 if
	// unknown.
	RTT   time.Duration
	Peers []PeerReport
}

// Decision is a state change the leader should propose (fsm SetNodeState).
type Decision struct {
	Node   uint64
	State  arbiterv1.NodeState // ALIVE, SUSPECT or DEAD
	Reason string
}

// Tracker is the leader's in-memory lease table. It is safe for concurrent use: heartbeats
// arrive on RPC goroutines while the leader's ticker calls Evaluate.
type Tracker struct {
	cfg   Config
	mu    sync.Mutex
	nodes map[uint64]*node
	// lastEval is when Evaluate last ran; a much longer gap than EvaluateEvery means this
	// process was starved (CPU, GC, a paused VM) and heartbeats waited unprocessed meanwhile.
	lastEval time.Time
}

// stallAfter is the Evaluate gap long enough to count as the arbiter's own stall rather than
// scheduling noise: half a lease. Below it the lease rules run unchanged.
func (t *Tracker) stallAfter() time.Duration { return t.cfg.LeaseTTL / 2 }

type report struct {
	reachable bool
	age       time.Duration
	at        time.Time
}

type node struct {
	id uint64
	// committed is the liveness the FSM holds (draining folded into alive); unspecified until
	// Observe, and such nodes are not judged: the FSM could not apply a decision on them.
	committed arbiterv1.NodeState
	expiry    time.Time
	// grace is true while the lease comes from a grace extension (first sight, ResetAll)
	// rather than from contact: it protects a node from a leader change but must not revive
	// a node already suspect or dead.
	grace     bool
	lastHeard time.Time
	told      time.Duration
	gaps      window
	lateness  window
	rtts      window
	// reports are this node's views of its peers, by peer id.
	reports   map[uint64]report
	pending   arbiterv1.NodeState
	pendingAt time.Time
}

// New returns an empty Tracker.
func New(cfg Config) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Tracker{cfg: cfg, nodes: make(map[uint64]*node)}, nil
}

// Config returns the configuration.
func (t *Tracker) Config() Config { return t.cfg }

func (t *Tracker) get(id uint64, now time.Time) *node {
	n, ok := t.nodes[id]
	if !ok {
		// First sight: a full lease, so learning about a node never declares it.
		n = &node{
			id: id, expiry: now.Add(t.cfg.LeaseTTL), grace: true, told: t.cfg.BaseInterval,
			gaps: newWindow(t.cfg.Window), lateness: newWindow(t.cfg.Window), rtts: newWindow(t.cfg.Window),
			reports: make(map[uint64]report),
		}
		t.nodes[id] = n
	}
	return n
}

// Observe tells the Tracker a node's committed state (fsm Node.State, at start and after
// every applied change). A node seen for the first time gets a full lease from now.
func (t *Tracker) Observe(id uint64, state arbiterv1.NodeState, now time.Time) {
	if state == arbiterv1.NodeState_NODE_STATE_DRAINING {
		// Draining is an operator's intent, orthogonal to liveness: a draining node is alive.
		state = alive
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.get(id, now)
	n.committed = state
	if n.pending == state {
		n.pending = arbiterv1.NodeState_NODE_STATE_UNSPECIFIED
	}
}

// Forget drops a node and every report about it.
func (t *Tracker) Forget(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.nodes, id)
	for _, n := range t.nodes {
		delete(n.reports, id)
	}
}

// Register records a (re-)registration: contact like a heartbeat, but the history of gaps and
// round trips is dropped, since a restarted node (maybe on another host) starts a new link.
// It returns the interval to tell the node.
func (t *Tracker) Register(id uint64, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.get(id, now)
	n.gaps.reset()
	n.lateness.reset()
	n.rtts.reset()
	n.lastHeard = time.Time{}
	n.contact(now, t.cfg.LeaseTTL)
	n.told = t.interval(n)
	return n.told
}

// Heartbeat renews a node's lease, records its statistics and peer reports, and returns the
// interval to tell the node for its next heartbeat.
func (t *Tracker) Heartbeat(hb Heartbeat) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.get(hb.Node, hb.Now)
	if !n.lastHeard.IsZero() {
		// A gap longer than the TTL is an outage, not jitter: the lease handles it, and
		// letting it into the statistics would shrink the interval for the next 64 beats.
		if gap := hb.Now.Sub(n.lastHeard); gap > 0 && gap <= t.cfg.LeaseTTL {
			n.gaps.add(gap)
			n.lateness.add(gap - n.told)
		}
	}
	if hb.RTT > 0 && hb.RTT <= t.cfg.LeaseTTL {
		n.rtts.add(hb.RTT)
	}
	for _, p := range hb.Peers {
		if p.Node != hb.Node {
			n.reports[p.Node] = report{reachable: p.Reachable, age: max(p.Age, 0), at: hb.Now}
		}
	}
	n.contact(hb.Now, t.cfg.LeaseTTL)
	n.told = t.interval(n)
	return n.told
}

func (n *node) contact(now time.Time, ttl time.Duration) {
	if now.After(n.lastHeard) {
		n.lastHeard = now
	}
	if exp := now.Add(ttl); exp.After(n.expiry) {
		n.expiry = exp
	}
	n.grace = false
}

// ResetAll gives every node a full lease from now. The new leader calls it on taking over: it
// has no heartbeat history, and a leader change must never by itself declare anyone.
func (t *Tracker) ResetAll(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	exp := now.Add(t.cfg.LeaseTTL)
	// The time before taking over was not a stall of this leader's.
	t.lastEval = time.Time{}
	for _, n := range t.nodes {
		if exp.After(n.expiry) {
			n.expiry, n.grace = exp, true
		}
		n.pending = arbiterv1.NodeState_NODE_STATE_UNSPECIFIED
	}
}

// Evaluated tells the Tracker its caller finished acting on an Evaluate at now (proposing the
// decisions can take up to a lease when the arbiter's quorum is slow): that time is the
// caller's work, not a stall, and is not credited to the nodes at the next Evaluate.
func (t *Tracker) Evaluated(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastEval.IsZero() {
		t.lastEval = now
	}
}

// Interval returns the heartbeat interval to tell a node (BaseInterval for an unknown one).
func (t *Tracker) Interval(id uint64) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.nodes[id]; ok {
		return t.interval(n)
	}
	return t.cfg.BaseInterval
}

// interval: room for one lost heartbeat plus JitterSigmas of noise inside the TTL; see the
// package doc.
func (t *Tracker) interval(n *node) time.Duration {
	if n.lateness.n < t.cfg.MinSamples {
		return t.cfg.BaseInterval
	}
	late, sdLate := n.lateness.meanStd()
	rtt, sdRTT := n.rtts.meanStd()
	sigma := math.Max(math.Hypot(sdLate.Seconds(), sdRTT.Seconds()), t.cfg.MinStdDev.Seconds())
	budget := t.cfg.LeaseTTL - rtt - seconds(t.cfg.JitterSigmas*sigma)
	iv := budget/2 - max(late, 0)
	return min(max(iv, t.cfg.MinInterval), t.cfg.MaxInterval)
}

// Lease returns a node's lease expiry (by the leader's clock).
func (t *Tracker) Lease(id uint64) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.nodes[id]
	if !ok {
		return time.Time{}, false
	}
	return n.expiry, true
}

// Stats returns a node's heartbeat statistics.
func (t *Tracker) Stats(id uint64) (Stats, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.nodes[id]
	if !ok {
		return Stats{}, false
	}
	s := Stats{Samples: n.gaps.n, Interval: t.interval(n)}
	s.MeanGap, s.StdDevGap = n.gaps.meanStd()
	s.MeanLateness, s.StdDevLateness = n.lateness.meanStd()
	s.MeanRTT, s.StdDevRTT = n.rtts.meanStd()
	return s, true
}

// Phi returns the phi-accrual suspicion level of a node at now (0 without enough history).
// It is for metrics: decisions use the lease, which the node can compute for itself.
func (t *Tracker) Phi(id uint64, now time.Time) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.nodes[id]
	if !ok || n.gaps.n < t.cfg.MinSamples || n.lastHeard.IsZero() {
		return 0
	}
	mean, std := n.gaps.meanStd()
	return phi(now.Sub(n.lastHeard), mean, max(std, t.cfg.MinStdDev))
}

// Evaluate returns the state changes due at now, in node id order. peersOf returns the nodes
// a node shares channels with (fsm.FSM.Peers); it is only called for nodes whose lease is
// past TTL + margin. A decision is returned once and again only after ResendAfter if Observe
// has not shown it committed by then.
func (t *Tracker) Evaluate(now time.Time, peersOf func(node uint64) []uint64) []Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastEval.IsZero() {
		if gap := now.Sub(t.lastEval); gap > t.stallAfter() {
			// The time the arbiter was not looking does not count against the nodes: their
			// heartbeats may be sitting in its own queues. Without this, an overloaded arbiter
			// declares healthy nodes dead, which moves their work onto the survivors and
			// overloads them in turn.
			// At most a lease is credited: a longer gap is not a stall this rule can judge
			// (a leader that just took over gets ResetAll instead).
			stall := min(gap-t.cfg.EvaluateEvery, t.cfg.LeaseTTL)
			for _, n := range t.nodes {
				if n.committed != dead {
					n.expiry = n.expiry.Add(stall)
				}
			}
		}
	}
	t.lastEval = now
	ids := make([]uint64, 0, len(t.nodes))
	for id := range t.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)

	var out []Decision
	for _, id := range ids {
		n := t.nodes[id]
		if n.committed == arbiterv1.NodeState_NODE_STATE_UNSPECIFIED {
			continue
		}
		var (
			want   arbiterv1.NodeState
			reason string
		)
		expiredFor := now.Sub(n.expiry)
		switch {
		case expiredFor < 0: // lease current
			if n.committed == alive || n.grace {
				continue
			}
			want, reason = alive, "heartbeats again"
		case expiredFor <= t.cfg.DriftMargin:
			if n.committed != alive {
				continue
			}
			want, reason = suspect, fmt.Sprintf("lease expired %v ago", expiredFor)
		default:
			if n.committed == dead {
				continue
			}
			confirmed, why := t.confirmed(n, peersOf(id), now)
			switch {
			case confirmed:
				want = dead
			case n.committed == suspect:
				continue
			default:
				want = suspect
			}
			reason = fmt.Sprintf("lease expired %v ago; %s", expiredFor, why)
		}
		if n.pending == want && now.Sub(n.pendingAt) < t.cfg.ResendAfter {
			continue
		}
		n.pending, n.pendingAt = want, now
		out = append(out, Decision{Node: id, State: want, Reason: reason})
	}
	return out
}

// confirmed applies the peer rule: a strict majority of the node's live peers must report,
// freshly, that they cannot reach it. Peers whose own lease is not current are left out: what
// they would say is unknown, and counting them as "reachable" would keep a node undead after
// a correlated failure while counting them as "unreachable" would let an arbiter that is cut
// off from everyone declare everyone.
func (t *Tracker) confirmed(n *node, peers []uint64, now time.Time) (bool, string) {
	total, live, cannot := 0, 0, 0
	for i, p := range peers {
		if p == n.id || slices.Contains(peers[:i], p) {
			continue
		}
		total++
		w, ok := t.nodes[p]
		if !ok || !now.Before(w.expiry) || w.committed == dead {
			continue
		}
		live++
		r, ok := w.reports[n.id]
		if ok && now.Sub(r.at) <= t.cfg.ReportMaxAge && (!r.reachable || r.age >= t.cfg.PeerSilence) {
			cannot++
		}
	}
	switch {
	case total == 0:
		return true, "no peers to ask"
	case live == 0:
		return false, fmt.Sprintf("none of %d peers is live to confirm", total)
	case 2*cannot > live:
		return true, fmt.Sprintf("%d of %d live peers cannot reach it", cannot, live)
	default:
		return false, fmt.Sprintf("only %d of %d live peers cannot reach it", cannot, live)
	}
}
