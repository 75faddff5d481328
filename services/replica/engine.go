package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
	"github.com/triarch-io/triarch/pkg/wait"
)

// Store is what the engine needs of the node's storage: raft logs and the channel records
// beside them, in one database.
type Store interface {
	raftstore.Store
	raftstore.StateStore
}

// Lease tells whether this node's lease with the arbiter is current (nodelease.Keeper).
type Lease interface {
	Valid(now time.Time) bool
}

// Proposer is the part of the multi-group host the engine drives.
type Proposer interface {
	LoadGroups(ctx context.Context, specs []multiraft.GroupSpec) error
	UnloadGroup(ctx context.Context, groupID uint64) error
	Campaign(ctx context.Context, groupID uint64) error
	TransferLeader(ctx context.Context, groupID, target uint64) error
	Propose(ctx context.Context, groupID uint64, data []byte) (uint64, error)
	Status(ctx context.Context, groupID uint64) (multiraft.Status, error)
	ProposeConfChange(ctx context.Context, groupID uint64, cc *raftpb.ConfChangeV2) (uint64, error)
	Campaigns(ctx context.Context, groupIDs []uint64) (map[uint64]error, error)
	Statuses(ctx context.Context, groupIDs []uint64) (map[uint64]multiraft.Status, error)
	Admit(ctx context.Context, groupID uint64) error
	ResetGroup(ctx context.Context, groupID uint64) error
	WaitCaughtUp(ctx context.Context, groupID, node uint64) error
	ReadIndex(ctx context.Context, groupID uint64) (uint64, error)
}

// Peers is the part of the transport the engine uses: peer addresses and last contact.
type Peers interface {
	SetPeer(nodeID uint64, addr string)
	LastHeard() map[uint64]time.Time
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	NodeID uint64
	Store  Store
	Log    *slog.Logger
	Dedup  chanlog.Config
	// LeaseTTL is how long a leader keeps serving without a lease renewal or contact with a
	// quorum of its group.
	LeaseTTL time.Duration
	// CheckpointEvery is how many applied entries of a channel go by between checkpoints
	// (default 1024). A smaller value writes more; a larger one re-applies more after a crash.
	CheckpointEvery uint64
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// After waits on the clock Now reads, as time.After does (the default): the control
	// plane's waits (campaigns, transfers) pace their polls with it, so that a test can drive
	// them with a fake clock instead of real time.
	After func(d time.Duration) <-chan time.Time
	// Meter records the engine's metrics (triarch.replica.*); none when nil.
	Meter metric.Meter
	// StoreID identifies Store (raftstore.Badger.StoreID): loads naming another store are
	// refused, and a joining group is admitted by a conf change carrying it (see Load).
	StoreID uint64
	// Space refuses appends while the disk is low on free space (space.go); nil: never.
	Space *SpaceGuard
}

// channel is a loaded channel.
type channel struct {
	id    string
	group uint64
	spec  *replicav1.GroupSpec
	join  bool // loaded with GroupSpec.join: learns its configuration from the leader
	// probation is set while the group may be on probation in the host (a join with a store
	// id); the host may admit it first, so it only saves needless Admit calls.
	probation atomic.Bool
	// epoch is the highest arbiter epoch seen in this channel's orders (loads, replica
	// changes); membership changes under an older one are refused.
	epoch atomic.Uint64
	votMu sync.Mutex
	// voters is the raft configuration's voters as last known here (the load order's replicas,
	// then each applied ChangeReplicas); read through currentVoters.
	voters []uint64

	// log is owned by the apply stage once the group is loaded.
	log            *chanlog.Channel
	checkpointedAt uint64

	// lastSeq and the notify channel let readers and subscribers follow the apply stage:
	// notify is closed and replaced after every apply that took sequence numbers.
	lastSeq      atomic.Uint64
	mu           sync.Mutex
	notify       chan struct{}
	lastActivity atomic.Int64
	unloaded     chan struct{}

	// prop coalesces concurrent Appends into shared entries (coalesce.go).
	prop coalescer

	// appliedTerm is the term of the last entry applied here. A leader serves reads only once
	// it equals the leader's term (see leads).
	appliedTerm atomic.Uint64
	// appliedIndex is the index of the last entry applied here, for reads waiting to reach
	// their confirmed index (see confirmRead).
	appliedIndex atomic.Uint64
	// failed is set, for good, by the apply stage when an entry of the channel could not be
	// applied here (see Engine.Apply); the channel then refuses every operation.
	failed atomic.Pointer[multiraft.GroupFailedError]
	// reset is set while this copy carries the reset mark: it was discarded after a failure
	// and joined again, and is not admitted yet (see reset.go).
	reset atomic.Bool
}

// failure is the error of a failed channel, nil for a healthy one.
func (c *channel) failure() error {
	if f := c.failed.Load(); f != nil {
		return fmt.Errorf("replica: channel %s failed on this replica: %w", c.id, f)
	}
	return nil
}

func (c *channel) changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.notify
}

func (c *channel) publish() {
	c.mu.Lock()
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
}

// Engine is the replica's core: the channels loaded on this node, the apply side of their raft
// groups (sequence numbers, dedup, read index) and the data and control operations the gRPC
// handlers expose. It implements multiraft.Applier.
type Engine struct {
	cfg   EngineConfig
	host  Proposer
	peers Peers
	lease Lease

	mu        sync.RWMutex
	byID      map[string]*channel
	byGroup   map[uint64]*channel
	addresses map[uint64]string

	// waits connects an Append to the results of the entry it proposed (pkg/wait: ids from a
	// random start per process, results only from the entry at the proposal's index).
	waits *wait.Registry[[]chanlog.Result]

	// corrupt counts the entries that failed their channel, by reason.
	corrupt metric.Int64Counter
}

// NewEngine returns an engine; Attach connects it to its host before use (the host needs the
// engine as its Applier, so it is built after).
func NewEngine(cfg EngineConfig) *Engine {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = 1024
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	corrupt, err := cfg.Meter.Int64Counter("triarch.replica.corrupt_entries",
		metric.WithDescription("committed entries this replica could not apply (checksum mismatch or undecodable); each fails its channel here"))
	if err != nil {
		// Only an invalid instrument name fails, which is a bug here, not a runtime condition.
		corrupt, _ = noop.NewMeterProvider().Meter("").Int64Counter("triarch.replica.corrupt_entries")
		cfg.Log.Error("register metric", "err", err)
	}
	if cfg.Space != nil {
		if err := cfg.Space.register(cfg.Meter); err != nil {
			cfg.Log.Error("register metric", "err", err)
		}
	}
	e := &Engine{
		cfg:       cfg,
		byID:      make(map[string]*channel),
		byGroup:   make(map[uint64]*channel),
		addresses: make(map[uint64]string),
		waits:     wait.New[[]chanlog.Result](),
		corrupt:   corrupt,
	}
	return e
}

// Attach sets the host, the transport and the lease (nil: the lease never lapses).
func (e *Engine) Attach(host Proposer, peers Peers, lease Lease) {
	e.host, e.peers, e.lease = host, peers, lease
}

// errors the handlers map to gRPC codes.
var (
	// ErrUnknownChannel: the channel is not loaded here.
	ErrUnknownChannel = errors.New("channel not loaded on this replica")
	// ErrLeaseLost: this replica leads the channel but may not serve, see checkLease.
	ErrLeaseLost = errors.New("leader lease lapsed: no arbiter renewal and no quorum contact")
	// ErrInvalid: the request is malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrTermNotApplied: this replica leads but has not yet applied an entry of its own term,
	// so it cannot yet tell what was committed before it (see Engine.leads).
	ErrTermNotApplied = errors.New("leader has not applied an entry of its term yet")
	// ErrStaleOrder: a control order made under an older epoch of the channel than one this
	// replica has already seen (its channelctl lost the slot or its view is old).
	ErrStaleOrder = errors.New("order from an older epoch")
	// ErrStoreReplaced: a load names, for this replica, another store than this one: the
	// store that held the group here is gone (a wiped or replaced disk), and this one must
	// rejoin the group as a new replica before it may load it as a member.
	ErrStoreReplaced = errors.New("store replaced")
)

// NotLeader says which replica leads a channel, as far as this one knows.
type NotLeader struct {
	ChannelID string
	LeaderID  uint64
	Address   string
	Term      uint64
}

func (e *NotLeader) Error() string {
	if e.LeaderID == 0 {
		return fmt.Sprintf("replica does not lead channel %s; no leader known", e.ChannelID)
	}
	return fmt.Sprintf("replica does not lead channel %s; leader is node %d at %s", e.ChannelID, e.LeaderID, e.Address)
}

func (e *Engine) channel(id string) (*channel, error) {
	e.mu.RLock()
	ch := e.byID[id]
	e.mu.RUnlock()
	if ch == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownChannel, id)
	}
	if err := ch.failure(); err != nil {
		return nil, err
	}
	ch.lastActivity.Store(e.cfg.Now().UnixNano())
	return ch, nil
}

func (e *Engine) address(node uint64) string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.addresses[node]
}

// notLeader converts the host's error into one naming the leader's address.
func (e *Engine) notLeader(ch *channel, err error) error {
	var nl *multiraft.NotLeaderError
	if errors.As(err, &nl) {
		return &NotLeader{ChannelID: ch.id, LeaderID: nl.LeaderID, Address: e.address(nl.LeaderID), Term: nl.Term}
	}
	return err
}

// Close checkpoints every loaded channel so a restart re-applies little. The host must have
// stopped applying.
func (e *Engine) Close() error {
	e.mu.RLock()
	var writes []raftstore.StateWrite
	for _, ch := range e.byID {
		if ch.failed.Load() != nil {
			continue // see Apply: a checkpoint would resume past the bad entry
		}
		w, err := checkpointWrite(ch)
		if err != nil {
			e.mu.RUnlock()
			return err
		}
		writes = append(writes, w...)
	}
	e.mu.RUnlock()
	return e.cfg.Store.SaveState(writes)
}

// Loaded lists the loaded channels.
func (e *Engine) Loaded() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]string, 0, len(e.byID))
	for id := range e.byID {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
