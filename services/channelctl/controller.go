package channelctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	"github.com/triarch-io/triarch/services/arbiter/fsm"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// Arbiter is the part of the arbiter client the controller uses.
type Arbiter interface {
	GetChannel(ctx context.Context, req *arbiterv1.GetChannelRequest) (*arbiterv1.GetChannelResponse, error)
	CreateChannel(ctx context.Context, req *arbiterv1.CreateChannelRequest) (*arbiterv1.CreateChannelResponse, error)
	ListChannels(ctx context.Context, req *arbiterv1.ListChannelsRequest) (*arbiterv1.ListChannelsResponse, error)
	CompareAndSetChannels(ctx context.Context, req *arbiterv1.CompareAndSetChannelsRequest) (*arbiterv1.CompareAndSetChannelsResponse, error)
	ListSlots(ctx context.Context, req *arbiterv1.ListSlotsRequest) (*arbiterv1.ListSlotsResponse, error)
	GetClusterStatus(ctx context.Context, req *arbiterv1.GetClusterStatusRequest) (*arbiterv1.GetClusterStatusResponse, error)
	Watch(ctx context.Context, req *arbiterv1.WatchRequest, fn func(*arbiterv1.WatchResponse) error) error
}

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	NodeID  uint64
	Arbiter Arbiter
	// Dial opens a connection to a replica.
	Dial           func(addr string) (*grpc.ClientConn, error)
	Log            *slog.Logger
	HibernateAfter time.Duration
	// RPCTimeout bounds each call to a replica or the arbiter (default 3 s).
	RPCTimeout time.Duration
	// RetryAfter is the pause before a stalled channel is retried (default 200 ms).
	RetryAfter time.Duration
	// ReplaceDeadAfter is how long a replica node stays dead before its channels get a new
	// replica (default 10 minutes).
	ReplaceDeadAfter time.Duration
	// RepairTimeout bounds one ChangeReplicas call, which waits for new replicas to catch up
	// (default 30 s).
	RepairTimeout time.Duration
	// MaxRepairs is how many channels may be repaired at once (default 128).
	MaxRepairs int
	// BalanceDelay is how long after a replica node comes back or joins leaders are balanced
	// (default 5 s), so that it has caught up.
	BalanceDelay time.Duration
	// BalanceMoves is the most leader moves one balance pass orders (default 64).
	BalanceMoves int
	// FailoverBudget is the most channels a dead node's failover elects at once (default
	// 4096); the rest wait for their turn, waiting clients first.
	FailoverBudget int
	Now            func() time.Time
}

// Controller runs the state machines of the channels in the slots this channelctl owns. One
// goroutine (run) owns every machine; the RPCs that carry out their actions run in rounds, in
// parallel, and report back as events, so thousands of channels move with a handful of calls.
type Controller struct {
	cfg ControllerConfig

	events chan posted
	ready  chan struct{}

	mu       sync.Mutex // guards what handlers read: nodes, slots, conns
	nodes    map[uint64]*arbiterv1.Node
	slots    map[uint32]*arbiterv1.SlotAssignment
	conns    map[string]*grpc.ClientConn
	revision uint64

	// Owned by run.
	machines  map[string]*machine.Machine
	channels  map[string]*arbiterv1.Channel // metadata of channels in owned slots
	waiters   map[uint64]chan answer
	nextWaitr uint64
	stalledAt map[string]time.Time

	// Upkeep (maintenance.go), owned by run.
	deadSince      map[uint64]time.Time // replica nodes declared dead, since when (seen here)
	repairTried    map[string]time.Time
	lastRepairPass time.Time
	// lastReconcilePass is when reconciles last scanned for joint records.
	lastReconcilePass time.Time
	// pendingLoads are, per channel, the replica nodes that came back while it was electing
	// or activating: its group is loaded on them once it is active (loadPending).
	pendingLoads map[string][]uint64
	// storeCheck: a replica registered a store, or channel records arrived, since the last
	// repair pass that found every record naming its replicas' current stores; the next pass
	// looks for replicas to rejoin.
	storeCheck    bool
	balanceAt     time.Time // when the next balance pass is due; zero: none
	balancePasses int       // passes since the last trigger
	failovers     []failoverSlice
	// The scans for failed copies (failed_copies.go).
	lastFailedScan time.Time
	failedScanning bool
}

type answer struct {
	resp *ResolveResult
	err  error
}

// ResolveResult is where a channel is served.
type ResolveResult struct {
	Channel       *arbiterv1.Channel
	LeaderAddress string
	Addresses     map[uint64]string
}

// posted is an input for run: a machine event for a channel, or a resolve request.
type posted struct {
	channel string
	event   machine.Event
	// cancel is a waiter that gave up; its reply channel is dropped.
	cancel  uint64
	resolve *resolveReq
	watch   *arbiterv1.WatchResponse
	// ensure creates the channel's machine from its arbiter record when it has none (upkeep
	// and instructions reach channels nobody asked for).
	ensure   bool
	instruct *instructReq
	// failed is a finished scan for failed copies.
	failed *failedScan
}

type resolveReq struct {
	ch    *arbiterv1.Channel
	stale uint64
	reply chan answer
	// id receives the waiter id, so a caller that gives up can cancel it.
	id chan uint64
}

// NewController returns a controller; Run starts it.
func NewController(cfg ControllerConfig) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = 3 * time.Second
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 200 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplaceDeadAfter <= 0 {
		cfg.ReplaceDeadAfter = 10 * time.Minute
	}
	if cfg.RepairTimeout <= 0 {
		cfg.RepairTimeout = 30 * time.Second
	}
	if cfg.MaxRepairs <= 0 {
		cfg.MaxRepairs = 128
	}
	if cfg.BalanceDelay <= 0 {
		cfg.BalanceDelay = 5 * time.Second
	}
	if cfg.BalanceMoves <= 0 {
		cfg.BalanceMoves = 64
	}
	if cfg.FailoverBudget <= 0 {
		cfg.FailoverBudget = 4096
	}
	return &Controller{
		cfg: cfg, events: make(chan posted, 4096), ready: make(chan struct{}),
		nodes: map[uint64]*arbiterv1.Node{}, slots: map[uint32]*arbiterv1.SlotAssignment{}, conns: map[string]*grpc.ClientConn{},
		machines: map[string]*machine.Machine{}, channels: map[string]*arbiterv1.Channel{},
		waiters: map[uint64]chan answer{}, stalledAt: map[string]time.Time{},
		deadSince: map[uint64]time.Time{}, repairTried: map[string]time.Time{}, pendingLoads: map[string][]uint64{},
	}
}

// Ready is closed once the controller has the arbiter's state and follows its changes.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// Run follows the arbiter and drives the machines until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.bootstrap(ctx); err != nil {
		return err
	}
	close(c.ready)
	go c.follow(ctx)
	tick := time.NewTicker(c.cfg.RetryAfter)
	defer tick.Stop()
	defer c.closeConns()
	for {
		var batch []posted
		select {
		case <-ctx.Done():
			c.failAll(status.Error(codes.Unavailable, "channelctl stopping"))
			return nil
		case p := <-c.events:
			batch = append(batch, p)
		drain:
			for len(batch) < 4096 {
				select {
				case p := <-c.events:
					batch = append(batch, p)
				default:
					break drain
				}
			}
		case <-tick.C:
			batch = c.timers()
			c.scanFailedCopies(ctx, c.cfg.Now())
		}
		var actions []machine.Action
		for _, p := range batch {
			actions = append(actions, c.handle(ctx, p)...)
		}
		actions = append(actions, c.releaseFailovers()...)
		if len(actions) > 0 {
			if c.cfg.Log.Enabled(ctx, slog.LevelDebug) {
				for _, a := range actions {
					c.cfg.Log.DebugContext(ctx, "channel action", "action", a.String())
				}
			}
			round := machine.Batch(actions)
			c.settleWaiters(round)
			go c.execute(ctx, round)
		}
	}
}

// bootstrap reads the nodes, the slots and the channels of the owned slots.
func (c *Controller) bootstrap(ctx context.Context) error {
	st, err := c.cfg.Arbiter.GetClusterStatus(ctx, &arbiterv1.GetClusterStatusRequest{})
	if err != nil {
		return fmt.Errorf("channelctl: read cluster status: %w", err)
	}
	c.mu.Lock()
	for _, n := range st.GetNodes() {
		c.nodes[n.GetNodeId()] = n
		if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD {
			// How long it was dead before is unknown here: count from now, which only delays
			// a repair.
			c.deadSince[n.GetNodeId()] = c.cfg.Now()
		}
	}
	for _, s := range st.GetSlots() {
		c.slots[s.GetSlot()] = s
	}
	c.revision = st.GetRevision()
	c.mu.Unlock()
	owned := c.ownedSlots()
	if err := c.loadOwned(ctx, owned); err != nil {
		return err
	}
	c.reloadSlots(ctx, owned)
	return nil
}

func (c *Controller) ownedSlots() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint32
	for s, a := range c.slots {
		if a.GetOwnerNodeId() == c.cfg.NodeID {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// loadOwned lists the channels of slots this channelctl just took over; run is not running
// concurrently or is the caller.
func (c *Controller) loadOwned(ctx context.Context, slots []uint32) error {
	if len(slots) == 0 {
		return nil
	}
	// Records new here may name stores their replicas no longer have.
	c.storeCheck = true
	token := ""
	for {
		page, err := c.cfg.Arbiter.ListChannels(ctx, &arbiterv1.ListChannelsRequest{Slots: slots, PageSize: 1000, PageToken: token})
		if err != nil {
			return fmt.Errorf("channelctl: list channels of %d slots: %w", len(slots), err)
		}
		for _, ch := range page.GetChannels() {
			c.channels[ch.GetChannelId()] = ch
		}
		if token = page.GetNextPageToken(); token == "" {
			return nil
		}
	}
}

// follow feeds the arbiter's changes to run.
func (c *Controller) follow(ctx context.Context) {
	c.mu.Lock()
	from := c.revision
	c.mu.Unlock()
	for ctx.Err() == nil {
		err := c.cfg.Arbiter.Watch(ctx, &arbiterv1.WatchRequest{FromRevision: from, IncludeChannels: true, IncludeNodes: true, IncludeSlots: true},
			func(r *arbiterv1.WatchResponse) error {
				c.cfg.Log.DebugContext(ctx, "arbiter changes", "events", len(r.GetEvents()), "revision", r.GetRevision())
				from = r.GetRevision()
				select {
				case c.events <- posted{watch: r}:
				case <-ctx.Done():
				}
				return nil
			})
		if ctx.Err() != nil {
			return
		}
		c.cfg.Log.WarnContext(ctx, "arbiter watch ended; resuming", "from", from, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(c.cfg.RetryAfter):
		}
	}
}

// handle steps one input and returns the actions it produced.
func (c *Controller) handle(ctx context.Context, p posted) []machine.Action {
	switch {
	case p.watch != nil:
		return c.applyWatch(ctx, p.watch)
	case p.resolve != nil:
		return c.startResolve(p.resolve)
	case p.instruct != nil:
		return c.instruct(p.instruct)
	case p.failed != nil:
		return c.repairFailedCopies(ctx, p.failed.copies)
	default:
		if p.cancel != 0 {
			delete(c.waiters, p.cancel)
		}
		var actions []machine.Action
		if p.ensure {
			var ok bool
			if actions, ok = c.ensureMachine(p.channel); !ok {
				return nil
			}
		}
		return append(actions, c.step(p.channel, p.event)...)
	}
}

func (c *Controller) step(channel string, ev machine.Event) []machine.Action {
	actions, _ := c.stepErr(channel, ev)
	return actions
}

// stepErr steps the channel's machine, keeping the controller's books (stalls, fencing).
func (c *Controller) stepErr(channel string, ev machine.Event) ([]machine.Action, error) {
	m := c.machines[channel]
	if m == nil {
		return nil, fmt.Errorf("channel %s has no machine here", channel)
	}
	actions, err := m.Step(ev)
	// A replica's recent activity can still refuse an idle timeout: routine, not worth a log.
	if err != nil && !errors.Is(err, machine.ErrNotIdle) {
		c.cfg.Log.Debug("channel event refused", "channel", channel, "event", fmt.Sprintf("%T", ev), "err", err)
	}
	if m.Stalled() {
		if _, ok := c.stalledAt[channel]; !ok {
			c.stalledAt[channel] = c.cfg.Now()
		}
	} else {
		delete(c.stalledAt, channel)
	}
	if m.Fenced() {
		delete(c.machines, channel)
	}
	return actions, err
}

// ensureMachine makes sure a channel of the owned slots has a machine, returning the actions
// creating it produced; false when the channel is not in the owned slots.
func (c *Controller) ensureMachine(id string) ([]machine.Action, bool) {
	if c.machines[id] != nil {
		return nil, true
	}
	ch := c.channels[id]
	if ch == nil {
		return nil, false
	}
	_, actions, err := c.machineFor(ch)
	if err != nil {
		c.cfg.Log.Warn("cannot build channel machine", "channel", id, "err", err)
		return nil, false
	}
	return actions, true
}

// machineFor returns the channel's machine, creating it from the arbiter's record. A new
// machine is told which of its replicas are dead; the actions that provokes (a failover when
// its leader is one of them) are returned and must be carried out.
func (c *Controller) machineFor(ch *arbiterv1.Channel) (*machine.Machine, []machine.Action, error) {
	if m := c.machines[ch.GetChannelId()]; m != nil {
		return m, nil, nil
	}
	m, err := machine.New(ch, machine.Config{HibernateAfter: c.cfg.HibernateAfter}, c.cfg.Now())
	if err != nil {
		return nil, nil, err
	}
	c.machines[ch.GetChannelId()] = m
	c.mu.Lock()
	var dead []uint64
	for _, r := range machine.Union(ch) {
		if n := c.nodes[r]; n == nil || n.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD {
			dead = append(dead, r)
		}
	}
	c.mu.Unlock()
	var actions []machine.Action
	for _, d := range dead {
		acts, err := m.Step(machine.NodeDead{Node: d})
		if err != nil {
			c.cfg.Log.Debug("channel event refused", "channel", ch.GetChannelId(), "event", "NodeDead", "err", err)
		}
		actions = append(actions, acts...)
	}
	return m, actions, nil
}

func (c *Controller) startResolve(r *resolveReq) []machine.Action {
	if !c.owns(r.ch.GetSlot()) {
		c.cfg.Log.Debug("resolve for a slot owned elsewhere", "channel", r.ch.GetChannelId(), "slot", r.ch.GetSlot())
		r.reply <- answer{err: c.notOwner(r.ch)}
		return nil
	}
	if known := c.channels[r.ch.GetChannelId()]; known == nil || known.GetEpoch() < r.ch.GetEpoch() {
		c.channels[r.ch.GetChannelId()] = r.ch
	}
	m, actions, err := c.machineFor(c.channels[r.ch.GetChannelId()])
	if err != nil {
		r.reply <- answer{err: status.Error(codes.Internal, err.Error())}
		return nil
	}
	c.nextWaitr++
	id := c.nextWaitr
	c.waiters[id] = r.reply
	r.id <- id
	acts, err := m.Step(machine.Resolve{Waiter: id, At: c.cfg.Now(), StaleLeader: r.stale})
	if err != nil {
		c.cfg.Log.Debug("resolve refused", "channel", r.ch.GetChannelId(), "err", err)
	}
	return append(actions, acts...)
}

// applyWatch follows the arbiter: slot moves, node deaths and returns, channel records.
func (c *Controller) applyWatch(ctx context.Context, r *arbiterv1.WatchResponse) []machine.Action {
	var actions []machine.Action
	var gained []uint32
	for _, ev := range r.GetEvents() {
		switch k := ev.GetKind().(type) {
		case *arbiterv1.WatchEvent_Slot:
			s := k.Slot
			c.mu.Lock()
			prev := c.slots[s.GetSlot()]
			c.slots[s.GetSlot()] = s
			c.mu.Unlock()
			mine, wasMine := s.GetOwnerNodeId() == c.cfg.NodeID, prev.GetOwnerNodeId() == c.cfg.NodeID
			switch {
			case mine && !wasMine:
				gained = append(gained, s.GetSlot())
			case wasMine && !mine:
				c.cfg.Log.InfoContext(ctx, "gave up a slot", "slot", s.GetSlot(), "owner", s.GetOwnerNodeId())
				c.dropSlot(s.GetSlot())
			}
		case *arbiterv1.WatchEvent_Node:
			n := k.Node
			c.mu.Lock()
			prev := c.nodes[n.GetNodeId()]
			c.nodes[n.GetNodeId()] = n
			c.mu.Unlock()
			c.nodeChangedForUpkeep(ctx, prev, n)
			// A node not seen before counts as dead, as machineFor told the machines made
			// meanwhile: its first sighting alive is a return for them (the arbiter can place
			// channels on replicas whose registration this watch has not delivered yet).
			wasDead := prev == nil || prev.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD
			isDead := n.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD
			if n.GetRole() == arbiterv1.NodeRole_NODE_ROLE_REPLICA && isDead != wasDead {
				actions = append(actions, c.nodeChanged(n.GetNodeId(), isDead)...)
			}
		case *arbiterv1.WatchEvent_Channel:
			ch := k.Channel
			if c.owns(ch.GetSlot()) {
				if known := c.channels[ch.GetChannelId()]; known == nil || known.GetEpoch() <= ch.GetEpoch() {
					c.channels[ch.GetChannelId()] = ch
					if !c.storeCheck && c.namesReplacedStore(ch) {
						c.storeCheck = true
					}
					if len(c.pendingLoads[ch.GetChannelId()]) > 0 {
						c.loadPending(ctx, ch)
					}
				}
			}
		}
	}
	if len(gained) > 0 {
		c.cfg.Log.InfoContext(ctx, "took over slots", "slots", len(gained), "revision", r.GetRevision())
		if err := c.loadOwned(ctx, gained); err != nil {
			c.cfg.Log.WarnContext(ctx, "could not list the channels of new slots", "slots", gained, "err", err)
		} else {
			c.reloadSlots(ctx, gained)
		}
		// Channels whose leader died while nobody owned their slot fail over now.
		c.mu.Lock()
		var dead []uint64
		for id, n := range c.nodes {
			if n.GetState() == arbiterv1.NodeState_NODE_STATE_DEAD {
				dead = append(dead, id)
			}
		}
		c.mu.Unlock()
		for _, d := range dead {
			actions = append(actions, c.nodeChanged(d, true)...)
		}
	}
	return actions
}

// nodeChanged tells the machines of every owned channel on the node that it died or returned.
func (c *Controller) nodeChanged(node uint64, dead bool) []machine.Action {
	if dead {
		return c.nodeDied(node)
	}
	var actions []machine.Action
	for id, ch := range c.channels {
		if c.machines[id] != nil && slices.Contains(machine.Union(ch), node) {
			actions = append(actions, c.step(id, machine.NodeAlive{Node: node})...)
		}
	}
	return actions
}

// failoverSlice is a slice of a dead node's channels waiting for its turn to be re-elected.
type failoverSlice struct {
	node     uint64
	channels []string
}

// nodeDied tells every owned channel on the node that it died. The channels it led (those
// without a machine get one: nobody may have asked for them yet) are re-elected in the order
// and slices machine.PlanFailover gives: waiting clients first, at most FailoverBudget channels
// electing at a time, so a node that led tens of thousands of channels does not land on the
// arbiter and the survivors all at once.
func (c *Controller) nodeDied(node uint64) []machine.Action {
	var (
		actions []machine.Action
		led     []machine.ChannelInfo
	)
	for id, ch := range c.channels {
		if !slices.Contains(machine.Union(ch), node) {
			continue
		}
		if m := c.machines[id]; m != nil {
			if info := m.Info(); info.Leader == node {
				led = append(led, info)
				continue
			}
			actions = append(actions, c.step(id, machine.NodeDead{Node: node})...)
			continue
		}
		if ch.GetLeaderNodeId() == node && ch.GetState() == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
			led = append(led, machine.ChannelInfo{ID: id, Replicas: machine.Union(ch), Leader: node})
		}
	}
	for _, st := range machine.PlanFailover(node, led, c.cfg.FailoverBudget).Steps {
		c.failovers = append(c.failovers, failoverSlice{node: node, channels: st.Channels})
	}
	return append(actions, c.releaseFailovers()...)
}

// releaseFailovers starts queued failover slices while fewer than FailoverBudget channels are
// electing. A client resolving a queued channel does not wait for its slice: its machine
// checks the recorded leader and elects at once.
func (c *Controller) releaseFailovers() []machine.Action {
	if len(c.failovers) == 0 {
		return nil
	}
	electing := 0
	for _, m := range c.machines {
		// A stalled election is still electing (the arbiter records it so, and Retry resumes it).
		if m.State() == arbiterv1.ChannelState_CHANNEL_STATE_ELECTING && (m.Busy() || m.Stalled()) {
			electing++
		}
	}
	var actions []machine.Action
	for len(c.failovers) > 0 && electing < c.cfg.FailoverBudget {
		sl := c.failovers[0]
		c.failovers = c.failovers[1:]
		for _, id := range sl.channels {
			ch := c.channels[id]
			if ch == nil {
				continue // its slot moved away meanwhile
			}
			if c.machines[id] == nil {
				// A new machine learns of the dead node (c.nodes has it already) as it is made.
				_, acts, err := c.machineFor(ch)
				if err != nil {
					c.cfg.Log.Warn("cannot fail over channel", "channel", id, "err", err)
				}
				actions = append(actions, acts...)
				continue
			}
			actions = append(actions, c.step(id, machine.NodeDead{Node: sl.node})...)
		}
		electing += len(sl.channels)
	}
	return actions
}

func (c *Controller) dropSlot(slot uint32) {
	for id, ch := range c.channels {
		if ch.GetSlot() != slot {
			continue
		}
		delete(c.channels, id)
		delete(c.machines, id)
		delete(c.stalledAt, id)
		delete(c.repairTried, id)
		delete(c.pendingLoads, id)
	}
}

func (c *Controller) owns(slot uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slots[slot].GetOwnerNodeId() == c.cfg.NodeID
}

// timers fires idle timeouts and retries stalled machines.
func (c *Controller) timers() []posted {
	now := c.cfg.Now()
	out := c.upkeep(now)
	for id, m := range c.machines {
		switch {
		case m.State() == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE && !m.Busy() && m.Waiters() == 0:
			// Offered only once the machine has been idle long enough: on every tick to every
			// active channel it would be thousands of refused events a second on this loop.
			if now.Sub(m.IdleSince()) >= c.cfg.HibernateAfter {
				out = append(out, posted{channel: id, event: machine.IdleTimeout{Now: now}})
			}
		case m.Stalled() && now.Sub(c.stalledAt[id]) >= c.cfg.RetryAfter:
			delete(c.stalledAt, id)
			out = append(out, posted{channel: id, event: machine.Retry{}})
		case m.State() == arbiterv1.ChannelState_CHANNEL_STATE_HIBERNATED && !m.Busy() && m.Waiters() == 0:
			// A hibernated channel costs nothing here either; it comes back on demand.
			delete(c.machines, id)
		}
	}
	return out
}

func (c *Controller) addresses(ids []uint64) map[uint64]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uint64]string, len(ids))
	for _, id := range ids {
		out[id] = c.nodes[id].GetAddress()
	}
	return out
}

// settleWaiters answers or fails the resolve calls a round decided.
func (c *Controller) settleWaiters(r machine.Round) {
	for _, a := range r.Answer {
		m := c.machines[a.ChannelID]
		var ch *arbiterv1.Channel
		if m != nil {
			ch = m.Channel()
		} else {
			ch = c.channels[a.ChannelID]
		}
		// Both sets while the replica set changes: the leader may be one only the next set
		// lists (raft elected it in a configuration the record has not caught up with).
		res := &ResolveResult{Channel: ch, Addresses: c.addresses(machine.Union(ch))}
		res.LeaderAddress = res.Addresses[a.Leader]
		for _, w := range a.Waiters {
			if reply := c.waiters[w]; reply != nil {
				reply <- answer{resp: res}
				delete(c.waiters, w)
			}
		}
	}
	for _, f := range r.Fail {
		err := status.Error(codes.Unavailable, fmt.Sprintf("channel %s has no leader: %v", f.ChannelID, f.Err))
		if errors.Is(f.Err, machine.ErrNotOwner) {
			err = c.notOwner(c.channels[f.ChannelID])
		}
		for _, w := range f.Waiters {
			if reply := c.waiters[w]; reply != nil {
				reply <- answer{err: err}
				delete(c.waiters, w)
			}
		}
	}
}

func (c *Controller) failAll(err error) {
	for id, reply := range c.waiters {
		reply <- answer{err: err}
		delete(c.waiters, id)
	}
}

func (c *Controller) closeConns() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// notOwner is the error for a channel whose slot another channelctl owns.
func (c *Controller) notOwner(ch *arbiterv1.Channel) error {
	c.mu.Lock()
	owner := c.slots[ch.GetSlot()].GetOwnerNodeId()
	addr := c.nodes[owner].GetAddress()
	c.mu.Unlock()
	if owner == 0 || addr == "" {
		// The slot is between owners (its channelctl was declared dead and the arbiter has not
		// handed it on yet, or this one has not heard): a moment later someone owns it.
		return status.Errorf(codes.Unavailable, "channel %s: slot %d has no live channelctl right now", ch.GetChannelId(), ch.GetSlot())
	}
	st, _ := status.New(codes.FailedPrecondition,
		fmt.Sprintf("channel %s is handled by channelctl %d", ch.GetChannelId(), owner)).WithDetails(
		&channelctlv1.NotOwner{OwnerNodeId: owner, OwnerAddress: addr})
	return st.Err()
}

// Resolve returns the channel's leader, activating or electing one first if needed.
func (c *Controller) Resolve(ctx context.Context, channelID string, create bool, rf uint32, stale uint64) (*ResolveResult, error) {
	if !fsm.ValidChannelID(channelID) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid channel id %q: want [A-Za-z0-9_.:@-]{1,128}", channelID)
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.RPCTimeout)
	defer cancel()
	got, err := c.cfg.Arbiter.GetChannel(actx, &arbiterv1.GetChannelRequest{ChannelId: channelID})
	ch := got.GetChannel()
	if status.Code(err) == codes.NotFound && create {
		var cr *arbiterv1.CreateChannelResponse
		cr, err = c.cfg.Arbiter.CreateChannel(actx, &arbiterv1.CreateChannelRequest{ChannelId: channelID, ReplicationFactor: rf})
		ch = cr.GetChannel()
	}
	if err != nil {
		return nil, err
	}
	req := &resolveReq{ch: ch, stale: stale, reply: make(chan answer, 1), id: make(chan uint64, 1)}
	select {
	case c.events <- posted{resolve: req}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case a := <-req.reply:
		return a.resp, a.err
	case <-ctx.Done():
		select {
		case id := <-req.id:
			c.events <- posted{channel: channelID, event: machine.CancelWaiter{Waiter: id}, cancel: id}
		default:
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}
