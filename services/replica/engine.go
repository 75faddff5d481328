package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
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
	// Meter records the engine's metrics (triarch.replica.*); none when nil.
	Meter metric.Meter
	// StoreID identifies Store (raftstore.Badger.StoreID): loads naming another store are
	// refused, and a joining group is admitted by a conf change carrying it (see Load).
	StoreID uint64
}

// Record kinds in a group's state key space; group 0 holds node-wide records.
const (
	kindSeq        = 's' // 's' | first seq (big-endian) -> SeqIndexRecord
	kindCheckpoint = 'c' // 'c' -> ChannelCheckpoint
	kindDedup      = 'd' // 'd' | first id counter (big-endian) -> DedupChunk (chanlog.Checkpoint)
	kindSpec       = 'g' // 'g' -> GroupSpec (channel id, peers)
	kindChannelID  = 'n' // group 0: 'n' | channel id -> group id (big-endian)
)

func seqKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindSeq
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func channelKey(channelID string) []byte { return append([]byte{kindChannelID}, channelID...) }

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
	prop proposer

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

var _ multiraft.Applier = (*Engine)(nil)

// Applied implements multiraft.Applier: the applied index of the checkpoint the channel was
// restored from at load.
func (e *Engine) Applied(groupID uint64) (uint64, error) {
	e.mu.RLock()
	ch := e.byGroup[groupID]
	e.mu.RUnlock()
	if ch == nil {
		return 0, fmt.Errorf("replica: group %d is not being loaded by the engine", groupID)
	}
	return ch.log.AppliedIndex(), nil
}

// Apply implements multiraft.Applier: it numbers the messages of committed entries, records
// where each entry's numbers start, checkpoints now and then, and wakes readers and the
// requests waiting for their results.
//
// An entry that fails its checksum or does not decode fails its channel here (see
// failChannel): skipping it would make this replica number every later message of the
// channel differently from its peers if the corruption is local, and stopping the host would
// stop every channel of the node. The other channels of the batch are applied as usual.
func (e *Engine) Apply(batch []multiraft.Committed) error {
	var (
		writes     []raftstore.StateWrite
		touched    []*channel
		results    []func()
		failures   []*multiraft.GroupFailedError
		readmitted []*channel
	)
	for _, c := range batch {
		e.mu.RLock()
		ch := e.byGroup[c.GroupID]
		e.mu.RUnlock()
		if ch == nil {
			return fmt.Errorf("replica: entries for group %d, which is not loaded", c.GroupID)
		}
		if f := ch.failed.Load(); f != nil {
			// The host hands nothing more of a failed group; if it did, say so again rather
			// than apply past the bad entry.
			failures = append(failures, f)
			continue
		}
		before := ch.log.LastSeq()
		var term uint64 // of the last entry applied in this batch
		for _, ent := range c.Entries {
			if ent.GetType() != raftpb.EntryType_EntryNormal || len(ent.GetData()) == 0 {
				ch.log.Skip(ent.GetIndex())
				term = ent.GetTerm()
				continue
			}
			var (
				a   chanlog.Applied
				err = checkBatch(ent.GetData())
			)
			if err == nil {
				a, err = ch.log.Apply(ent.GetIndex(), ent.GetData())
			}
			if err != nil {
				failures = append(failures, e.failChannel(ch, ent.GetIndex(), err))
				break
			}
			term = ent.GetTerm()
			if a.Record != nil {
				v, err := proto.Marshal(a.Record)
				if err != nil {
					return fmt.Errorf("replica: encode seq record: %w", err)
				}
				writes = append(writes, raftstore.StateWrite{GroupID: c.GroupID, Key: seqKey(a.FirstSeq), Value: v})
			}
			if a.ProposerNodeID == e.cfg.NodeID {
				id, index, res := a.ProposalID, ent.GetIndex(), a.Results
				results = append(results, func() { e.waits.Trigger(id, index, res) })
			}
		}
		if term != 0 {
			ch.appliedTerm.Store(term)
		}
		if w := e.readmitted(ch, c.Entries); w != nil && ch.failed.Load() == nil {
			writes = append(writes, w...)
			readmitted = append(readmitted, ch)
		}
		ch.appliedIndex.Store(ch.log.AppliedIndex())
		// A failed channel's log has counted the bad entry applied (chanlog.Apply): it must
		// never be checkpointed again, or a reload would resume past the entry.
		if ch.failed.Load() == nil && ch.log.AppliedIndex()-ch.checkpointedAt >= e.cfg.CheckpointEvery {
			w, err := checkpointWrite(ch)
			if err != nil {
				return err
			}
			writes = append(writes, w...)
		}
		if ch.log.LastSeq() != before {
			touched = append(touched, ch)
		}
	}
	if len(writes) > 0 {
		if err := e.cfg.Store.SaveState(writes); err != nil {
			return fmt.Errorf("replica: save channel records: %w", err)
		}
	}
	for _, ch := range readmitted {
		ch.reset.Store(false)
	}
	// Readers may look up the records only once they are saved.
	for _, ch := range touched {
		ch.lastSeq.Store(ch.log.LastSeq())
		ch.publish()
	}
	for _, f := range results {
		f()
	}
	if len(failures) > 0 {
		return &multiraft.FailedGroupsError{Groups: failures}
	}
	return nil
}

// failChannel marks a channel failed at the entry at index, loudly: an error line naming the
// channel, its group and the index, and the corrupt-entries metric. The channel stays loaded
// in the engine, failed, so that every operation on it (status included) reports the failure
// and the channel control tier moves leadership and elections away from this replica.
func (e *Engine) failChannel(ch *channel, index uint64, cause error) *multiraft.GroupFailedError {
	reason := "undecodable"
	if errors.Is(cause, errChecksum) {
		reason = "checksum"
	}
	f := &multiraft.GroupFailedError{GroupID: ch.group, Index: index, Err: cause}
	ch.failed.Store(f)
	e.cfg.Log.Error("corrupt entry: the channel fails on this replica and must be repaired from its peers",
		"channel", ch.id, "group", ch.group, "index", index, "reason", reason, "err", cause)
	e.corrupt.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	// Subscribers wake and find the channel failed.
	ch.publish()
	return f
}

// The checksum trailer of an encoded LogBatch: field crc32c (fixed32), encoded last.
const (
	fieldBatchCRC  = 5
	batchCRCLength = 1 + 4 // a one-byte tag (field number below 16) and the fixed32
)

var (
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
	batchCRCTag = protowire.AppendTag(nil, fieldBatchCRC, protowire.Fixed32Type)
	errChecksum = errors.New("entry checksum mismatch")
)

// sealBatch encodes lb with its checksum appended as its last field, so that a replica checks
// the bytes exactly as proposed without re-encoding anything (proto encoding is not
// canonical). lb.Crc32C must be unset.
func sealBatch(lb *replicav1.LogBatch) ([]byte, error) {
	body, err := proto.Marshal(lb)
	if err != nil {
		return nil, err
	}
	out := protowire.AppendTag(body, fieldBatchCRC, protowire.Fixed32Type)
	return protowire.AppendFixed32(out, crc32.Checksum(body, castagnoli)), nil
}

// checkBatch verifies the checksum sealBatch appended. An entry that does not end with the
// checksum field was proposed by a replica of an earlier version (a rolling upgrade) and is
// checked only by decoding; an unsealed batch cannot end that way by chance, since its last
// field is the proposal id, a varint of about 8 bytes whose last 5 bytes but one all have the
// high bit set, which the tag byte does not.
func checkBatch(data []byte) error {
	n := len(data)
	if n < batchCRCLength || data[n-batchCRCLength] != batchCRCTag[0] {
		return nil
	}
	want := binary.LittleEndian.Uint32(data[n-4:])
	if got := crc32.Checksum(data[:n-batchCRCLength], castagnoli); got != want {
		return fmt.Errorf("%w: crc32c %08x, sealed %08x", errChecksum, got, want)
	}
	return nil
}

// checkpointWrite returns the writes of a checkpoint of the channel, in the order they must be
// saved (chanlog.Checkpoint): the records that changed, the header, then the deletions.
func checkpointWrite(ch *channel) ([]raftstore.StateWrite, error) {
	cp := ch.log.Checkpoint()
	writes := make([]raftstore.StateWrite, 0, len(cp.Chunks)+1+len(cp.Deleted))
	for _, c := range cp.Chunks {
		v, err := proto.Marshal(c.Data)
		if err != nil {
			return nil, fmt.Errorf("replica: encode dedup record of %s: %w", ch.id, err)
		}
		writes = append(writes, raftstore.StateWrite{GroupID: ch.group, Key: dedupKey(c.Start), Value: v})
	}
	v, err := proto.Marshal(cp.Header)
	if err != nil {
		return nil, fmt.Errorf("replica: encode checkpoint of %s: %w", ch.id, err)
	}
	writes = append(writes, raftstore.StateWrite{GroupID: ch.group, Key: []byte{kindCheckpoint}, Value: v})
	for _, d := range cp.Deleted {
		writes = append(writes, raftstore.StateWrite{GroupID: ch.group, Key: dedupKey(d)})
	}
	ch.checkpointedAt = cp.Header.GetAppliedIndex()
	return writes, nil
}

func dedupKey(start uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindDedup
	binary.BigEndian.PutUint64(k[1:], start)
	return k
}

// dedupRecords reads every DedupChunk record of a group, by first counter: one seek each,
// and chanlog keeps their number small (live ids / 1024 + 2).
func (e *Engine) dedupRecords(group uint64) (map[uint64][]byte, error) {
	out := map[uint64][]byte{}
	key := dedupKey(math.MaxUint64)
	for {
		k, v, err := e.cfg.Store.SeekStateLE(group, key)
		if err != nil || k == nil {
			return out, err
		}
		if len(k) != len(key) {
			return nil, fmt.Errorf("dedup record key %x", k)
		}
		start := binary.BigEndian.Uint64(k[1:])
		out[start] = v
		if start == 0 {
			return out, nil
		}
		key = dedupKey(start - 1)
	}
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

// checkLease enforces the serving half of the one-leader rule: a leader may serve only while
// its node lease is current or a quorum of its group (itself included) acknowledged its
// leadership within the lease TTL. A leader cut off from the arbiter alone keeps serving; one
// cut off from everyone stops before the arbiter may replace it (the arbiter waits TTL plus a
// margin).
//
// acked is the group's own record of its peers' answers (multiraft.Status.LastAcked): what a
// read must count, since only the group's voters can depose its leader, and a peer may well
// answer other groups of this node while it follows another leader of this one. With acked
// nil (an append, which checks before it has the group's status) any frame from the peer
// counts: an append commits only on a quorum's acknowledgements anyway, so the check only
// spares it a proposal that cannot succeed.
func (e *Engine) checkLease(ch *channel, acked map[uint64]time.Time) error {
	if e.lease == nil || e.cfg.LeaseTTL <= 0 {
		return nil
	}
	now := e.cfg.Now()
	if e.lease.Valid(now) {
		return nil
	}
	heard := acked
	if heard == nil {
		heard = e.peers.LastHeard()
	}
	n := 1 // this replica
	voters := ch.currentVoters()
	for _, v := range voters {
		if v != e.cfg.NodeID && now.Sub(heard[v]) < e.cfg.LeaseTTL {
			n++
		}
	}
	if n > len(voters)/2 {
		return nil
	}
	return fmt.Errorf("%w (channel %s)", ErrLeaseLost, ch.id)
}

// Limits on appends (DESIGN.md: payload <= 1 MiB, batch <= 1,000 messages and 4 MiB).
const (
	MaxPayloadBytes = 1 << 20
	MaxBatchBytes   = 4 << 20
	MaxBatchLen     = 1000
)

// validateBatch checks an append before anything is proposed and returns its size: the sum
// of its messages' encoded sizes, which MaxBatchBytes bounds.
func validateBatch(msgs []*triarchv1.MessageInput) (int, error) {
	if len(msgs) == 0 {
		return 0, fmt.Errorf("%w: empty batch", ErrInvalid)
	}
	if len(msgs) > MaxBatchLen {
		return 0, fmt.Errorf("%w: %d messages in one batch, at most %d", ErrTooLarge, len(msgs), MaxBatchLen)
	}
	total := 0
	for i, m := range msgs {
		if n := len(m.GetPayload()); n > MaxPayloadBytes {
			return 0, fmt.Errorf("%w: message %d payload is %d bytes, at most %d", ErrTooLarge, i, n, MaxPayloadBytes)
		}
		if len(m.GetClientMsgId()) > 256 {
			return 0, fmt.Errorf("%w: message %d client_msg_id is longer than 256 bytes", ErrInvalid, i)
		}
		total += proto.Size(m)
	}
	if total > MaxBatchBytes {
		return 0, fmt.Errorf("%w: batch is %d bytes, at most %d", ErrTooLarge, total, MaxBatchBytes)
	}
	return total, nil
}

// ErrTooLarge: a message or batch exceeds the limits.
var ErrTooLarge = errors.New("too large")

// Append appends msgs to the channel and returns each message's result once they are
// committed on a majority and applied here. Concurrent Appends to one channel may share an
// entry (see proposer); msgs stay together and in order in it. It is AppendWithNonce with no
// nonce: a message whose id was taken before is a duplicate, whoever sent it.
func (e *Engine) Append(ctx context.Context, channelID string, msgs []*triarchv1.MessageInput) ([]chanlog.Result, error) {
	return e.AppendWithNonce(ctx, channelID, 0, msgs)
}

// AppendWithNonce is Append for one client send that its gateway identifies by nonce
// (AppendRequest.nonce, kept across the gateway's retries of the send; 0 for none). The nonce
// goes into the entry with each message, and a message whose id was taken by a message with
// the same non-zero nonce (this send's earlier attempt, committed though its answer was lost)
// answers the original seq without Duplicate: the client sent it once (see pkg/chanlog). A
// message whose id an earlier message of msgs carries is a duplicate all the same: the client
// sent that id twice.
func (e *Engine) AppendWithNonce(ctx context.Context, channelID string, nonce uint64, msgs []*triarchv1.MessageInput) ([]chanlog.Result, error) {
	size, err := validateBatch(msgs)
	if err != nil {
		return nil, err
	}
	ch, err := e.channel(channelID)
	if err != nil {
		return nil, err
	}
	if err := e.checkLease(ch, nil); err != nil {
		return nil, err
	}
	res, err := ch.prop.append(ctx, e, ch, msgs, size, nonce)
	if err != nil || nonce == 0 {
		// Without a nonce the state machine has marked repeats within msgs already.
		return res, err
	}
	return repeatsAreDuplicates(msgs, res), nil
}

// repeatsAreDuplicates marks Duplicate the results of messages whose client_msg_id an earlier
// message of the same send carries. Within one send the state machine cannot tell them from a
// retry of the send (they have its nonce), and the client did send them twice.
func repeatsAreDuplicates(msgs []*triarchv1.MessageInput, res []chanlog.Result) []chanlog.Result {
	if len(msgs) < 2 {
		return res
	}
	seen := make(map[string]struct{}, len(msgs))
	for i, m := range msgs {
		id := m.GetClientMsgId()
		if id == "" {
			continue
		}
		if _, again := seen[id]; again {
			res[i].Duplicate = true
			continue
		}
		seen[id] = struct{}{}
	}
	return res
}

// propose proposes msgs to the channel as one entry and returns each message's result once
// the entry is committed on a majority and applied here. nonces[i] is message i's send's
// nonce (nil when no message has one).
func (e *Engine) propose(ctx context.Context, ch *channel, msgs []*triarchv1.MessageInput, nonces []uint64) ([]chanlog.Result, error) {
	w := e.waits.Register()
	defer w.Close()
	data, err := sealBatch(&replicav1.LogBatch{
		Messages:       msgs,
		ProposeTime:    timestamppb.New(e.cfg.Now()),
		ProposerNodeId: e.cfg.NodeID,
		ProposalId:     w.ID(),
		Nonces:         nonces,
	})
	if err != nil {
		return nil, fmt.Errorf("replica: encode batch: %w", err)
	}
	index, err := e.host.Propose(ctx, ch.group, data)
	if err != nil {
		return nil, e.notLeader(ch, err)
	}
	return w.Wait(ctx, index)
}

// leads checks that this replica leads the channel and may serve it.
func (e *Engine) leads(ctx context.Context, ch *channel) error {
	if err := ch.failure(); err != nil {
		return err
	}
	st, err := e.host.Status(ctx, ch.group)
	if err != nil {
		return err
	}
	if st.Leader != e.cfg.NodeID {
		return &NotLeader{ChannelID: ch.id, LeaderID: st.Leader, Address: e.address(st.Leader), Term: st.Term}
	}
	// A new leader holds every committed entry (raft's election rule) but may not know which
	// of its entries are committed, nor have applied them, until an entry of its own term is
	// committed: the empty entry raft appends on election. Before it has applied that entry it
	// could answer with fewer messages than an earlier leader acknowledged.
	if applied := ch.appliedTerm.Load(); applied < st.Term {
		return fmt.Errorf("%w: channel %s leads in term %d, has applied only up to term %d", ErrTermNotApplied, ch.id, st.Term, applied)
	}
	acked := st.LastAcked
	if acked == nil {
		acked = map[uint64]time.Time{} // a leader that no peer answered yet
	}
	return e.checkLease(ch, acked)
}

// ErrReadUnconfirmed: this replica leads the channel as far as it knows, but a quorum of the
// group did not confirm it in time; another replica may have been elected behind its back.
var ErrReadUnconfirmed = errors.New("leadership not confirmed by a quorum of the group")

// confirmRead makes a read linearizable: the leader has a quorum of its group confirm that it
// still leads (raft's ReadIndex: a leader deposed behind its back, by a transfer, a move or an
// election its partition hid, gets no confirmation), then waits until it has applied up to the
// commit index as of the confirmation, which covers every write acknowledged before the read
// began. The node lease and the own-term rule (leads) do not suffice: a transfer or an ordered
// election elects a new leader while the old one's node lease is current. The wait for the
// confirmation is bounded by the lease TTL, after which the read fails Unavailable and the
// client looks for the leader again.
func (e *Engine) confirmRead(ctx context.Context, ch *channel) error {
	cctx := ctx
	if e.cfg.LeaseTTL > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, e.cfg.LeaseTTL)
		defer cancel()
	}
	idx, err := e.host.ReadIndex(cctx, ch.group)
	switch {
	case err != nil && ctx.Err() == nil && cctx.Err() != nil:
		return fmt.Errorf("%w: channel %s within %v", ErrReadUnconfirmed, ch.id, e.cfg.LeaseTTL)
	case err != nil:
		return e.notLeader(ch, err)
	}
	for ch.appliedIndex.Load() < idx {
		if err := ch.failure(); err != nil {
			return err
		}
		// Entries without messages (raft's own, conf changes) publish nothing: poll as well.
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-ch.changed():
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Read returns committed messages from seq from on: at most limit messages and about maxBytes
// of payload (at least one message when any is available).
func (e *Engine) Read(ctx context.Context, channelID string, from uint64, limit int, maxBytes int) ([]*triarchv1.Message, uint64, error) {
	ch, err := e.channel(channelID)
	if err != nil {
		return nil, 0, err
	}
	if err := e.leads(ctx, ch); err != nil {
		return nil, 0, err
	}
	if err := e.confirmRead(ctx, ch); err != nil {
		return nil, 0, err
	}
	msgs, err := e.readFrom(ch, max(from, 1), limit, maxBytes)
	return msgs, ch.lastSeq.Load(), err
}

// readFrom reads messages with seq >= from, up to what has been applied.
func (e *Engine) readFrom(ch *channel, from uint64, limit, maxBytes int) ([]*triarchv1.Message, error) {
	last := ch.lastSeq.Load()
	if from > last || limit <= 0 {
		return nil, nil
	}
	log, err := e.cfg.Store.Open(ch.group)
	if err != nil {
		return nil, fmt.Errorf("replica: open log of %s: %w", ch.id, err)
	}
	var (
		out   []*triarchv1.Message
		bytes int
	)
	for from <= last && len(out) < limit && (bytes < maxBytes || len(out) == 0) {
		k, v, err := e.cfg.Store.SeekStateLE(ch.group, seqKey(from))
		if err != nil {
			return nil, fmt.Errorf("replica: seq index of %s: %w", ch.id, err)
		}
		if k == nil {
			return nil, fmt.Errorf("replica: channel %s has no index record for seq %d", ch.id, from)
		}
		first := binary.BigEndian.Uint64(k[1:])
		var rec replicav1.SeqIndexRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return nil, fmt.Errorf("replica: decode seq record of %s: %w", ch.id, err)
		}
		ents, err := log.Entries(rec.GetIndex(), rec.GetIndex()+1, 0)
		if err != nil {
			return nil, fmt.Errorf("replica: entry %d of %s: %w", rec.GetIndex(), ch.id, err)
		}
		msgs, err := chanlog.Messages(ch.id, first, &rec, ents[0].GetData(), from, limit-len(out))
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.GetSeq() > last || (bytes >= maxBytes && len(out) > 0) {
				break
			}
			bytes += len(m.GetPayload())
			out = append(out, m)
		}
		from = first + uint64(rec.GetCount())
		if len(out) > 0 {
			from = out[len(out)-1].GetSeq() + 1
		}
	}
	return out, nil
}

// Subscribe sends committed messages from seq from on to send, in order, as they are applied,
// until ctx ends, send fails, or this replica stops leading the channel (then a NotLeader
// error says where to resume).
func (e *Engine) Subscribe(ctx context.Context, channelID string, from uint64, send func([]*triarchv1.Message) error) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	from = max(from, 1)
	// The catch-up starts from a confirmed view; what is applied after it is committed anyway.
	if err := e.confirmRead(ctx, ch); err != nil {
		return err
	}
	for {
		if err := e.leads(ctx, ch); err != nil {
			return err
		}
		changed := ch.changed()
		msgs, err := e.readFrom(ch, from, 1000, 1<<20)
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			if err := send(msgs); err != nil {
				return err
			}
			from = msgs[len(msgs)-1].GetSeq() + 1
			continue
		}
		// Wake on new messages, and now and then to notice a lost leadership.
		select {
		case <-ctx.Done():
			return nil
		case <-ch.unloaded:
			return fmt.Errorf("%w: %s was unloaded", ErrUnknownChannel, ch.id)
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// Load loads channels' groups (creating them when new), restoring each channel's state from
// its checkpoint. Per channel errors are returned in order; a nil entry means loaded.
func (e *Engine) Load(ctx context.Context, specs []*replicav1.GroupSpec) []error {
	errs := make([]error, len(specs))
	var (
		hostSpecs []multiraft.GroupSpec
		loading   []int
	)
	var writes []raftstore.StateWrite
	for i, sp := range specs {
		if sp.GetJoin() {
			// The control tier rejoins a copy that failed here: it is discarded first, and
			// loads below as a new replica would (see reset.go).
			e.mu.RLock()
			failed := e.byID[sp.GetChannelId()]
			e.mu.RUnlock()
			if failed != nil && failed.failed.Load() != nil {
				if err := e.resetFailed(ctx, failed); err != nil {
					errs[i] = err
					continue
				}
			}
		}
		ch, w, err := e.prepare(sp)
		if err != nil {
			errs[i] = err
			continue
		}
		if ch == nil { // already loaded
			errs[i] = e.failure(sp.GetChannelId())
			if errs[i] == nil && !sp.GetJoin() {
				errs[i] = e.admit(ctx, sp.GetChannelId())
			}
			continue
		}
		writes = append(writes, w...)
		spec := multiraft.GroupSpec{GroupID: ch.group, Voters: ch.currentVoters()}
		if ch.join {
			spec = multiraft.GroupSpec{GroupID: ch.group, Join: true}
			if e.cfg.StoreID != 0 {
				// Whether this node is new to the group or its store replaced an earlier one
				// the configuration still counts, it takes no part in elections until the
				// leader's conf change adding this store admits it (see multiraft.GroupSpec).
				spec.AdmitToken = multiraft.StoreToken(e.cfg.StoreID)
				ch.probation.Store(true)
			}
		}
		hostSpecs = append(hostSpecs, spec)
		loading = append(loading, i)
	}
	if len(writes) > 0 {
		if err := e.cfg.Store.SaveState(writes); err != nil {
			for _, i := range loading {
				errs[i] = fmt.Errorf("replica: record group spec: %w", err)
				e.forget(specs[i].GetChannelId())
			}
			return errs
		}
	}
	if len(hostSpecs) > 0 {
		// Not cancellable: an install the host has queued runs even after the caller gives
		// up, so the load must see it through and learn its outcome. Forgetting a channel
		// whose group then lands in the host would fail its first Apply, and with it the host.
		ctx := context.WithoutCancel(ctx)
		if err := e.host.LoadGroups(ctx, hostSpecs); err != nil {
			// The host reports failures together; find out which groups made it.
			for _, i := range loading {
				if _, serr := e.host.Status(ctx, specs[i].GetGroupId()); serr != nil {
					errs[i] = fmt.Errorf("replica: load %s: %w", specs[i].GetChannelId(), err)
					e.forget(specs[i].GetChannelId())
				}
			}
		}
	}
	return errs
}

// admit ends the probation of a loaded channel that joined its group (see Load): a load that
// is not a join, which names this store or none, comes from a record that counts this store
// as the channel's replica here.
func (e *Engine) admit(ctx context.Context, channelID string) error {
	ch, err := e.channel(channelID)
	if err != nil || !ch.probation.Load() {
		return nil // unloaded since, or not on probation
	}
	if err := e.host.Admit(context.WithoutCancel(ctx), ch.group); err != nil {
		return fmt.Errorf("replica: admit %s: %w", channelID, err)
	}
	ch.probation.Store(false)
	return nil
}

// prepare registers a channel about to be loaded: its spec, peers and restored state.
func (e *Engine) prepare(sp *replicav1.GroupSpec) (*channel, []raftstore.StateWrite, error) {
	if sp.GetChannelId() == "" || sp.GetGroupId() == 0 || len(sp.GetReplicas()) == 0 {
		return nil, nil, fmt.Errorf("%w: group spec needs a channel id, a group id and replicas", ErrInvalid)
	}
	if id := sp.GetStoreId(); id != 0 && e.cfg.StoreID != 0 && id != e.cfg.StoreID {
		// Checked before anything, the loaded case included: a group this store joined is
		// not yet the one the record counts, so it must not report a position for elections.
		return nil, nil, fmt.Errorf("%w: the record of %s names store %016x on node %d, this is store %016x: the node rejoins the group as a new replica",
			ErrStoreReplaced, sp.GetChannelId(), id, e.cfg.NodeID, e.cfg.StoreID)
	}
	voters := make([]uint64, 0, len(sp.GetReplicas()))
	for _, p := range sp.GetReplicas() {
		voters = append(voters, p.GetNodeId())
	}
	slices.Sort(voters)
	if _, ok := slices.BinarySearch(voters, e.cfg.NodeID); !ok {
		return nil, nil, fmt.Errorf("%w: node %d is not a replica of %s", ErrInvalid, e.cfg.NodeID, sp.GetChannelId())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ch := e.byID[sp.GetChannelId()]; ch != nil && ch.group != sp.GetGroupId() {
		return nil, nil, fmt.Errorf("%w: %s is loaded as group %d, not %d", ErrInvalid, ch.id, ch.group, sp.GetGroupId())
	}
	// Addresses are refreshed even for a loaded channel: a peer that restarted elsewhere is
	// found again through the next load order.
	for _, p := range sp.GetReplicas() {
		if p.GetAddress() != "" && p.GetNodeId() != e.cfg.NodeID {
			e.addresses[p.GetNodeId()] = p.GetAddress()
			if e.peers != nil {
				e.peers.SetPeer(p.GetNodeId(), p.GetAddress())
			}
		}
	}
	if ch := e.byID[sp.GetChannelId()]; ch != nil {
		if ch.reset.Load() && !sp.GetJoin() {
			return nil, nil, fmt.Errorf("%w: %s", ErrCopyReset, sp.GetChannelId())
		}
		ch.seeEpoch(sp.GetEpoch())
		return nil, nil, nil
	}
	reset, err := e.isReset(sp.GetGroupId())
	if err != nil {
		return nil, nil, err
	}
	if reset && !sp.GetJoin() {
		return nil, nil, fmt.Errorf("%w: %s", ErrCopyReset, sp.GetChannelId())
	}
	log := chanlog.New(e.cfg.Dedup)
	cpData, err := e.cfg.Store.GetState(sp.GetGroupId(), []byte{kindCheckpoint})
	if err != nil {
		return nil, nil, fmt.Errorf("replica: read checkpoint of %s: %w", sp.GetChannelId(), err)
	}
	if cpData != nil {
		var cp replicav1.ChannelCheckpoint
		if err := proto.Unmarshal(cpData, &cp); err != nil {
			return nil, nil, fmt.Errorf("replica: decode checkpoint of %s: %w", sp.GetChannelId(), err)
		}
		records, err := e.dedupRecords(sp.GetGroupId())
		if err != nil {
			return nil, nil, fmt.Errorf("replica: read dedup records of %s: %w", sp.GetChannelId(), err)
		}
		if log, err = chanlog.Restore(e.cfg.Dedup, &cp, records); err != nil {
			return nil, nil, fmt.Errorf("replica: restore %s: %w", sp.GetChannelId(), err)
		}
	}
	// The epoch fence starts at the newest epoch known for the channel: this load's, or the
	// one the previous load stored (a late order of an earlier hibernation must stay refused
	// after an unload or a restart). The spec is stored with it.
	fence := sp.GetEpoch()
	if prev, err := e.cfg.Store.GetState(sp.GetGroupId(), []byte{kindSpec}); err != nil {
		return nil, nil, fmt.Errorf("replica: read spec of %s: %w", sp.GetChannelId(), err)
	} else if prev != nil {
		var old replicav1.GroupSpec
		if err := proto.Unmarshal(prev, &old); err != nil {
			return nil, nil, fmt.Errorf("replica: decode spec of %s: %w", sp.GetChannelId(), err)
		}
		fence = max(fence, old.GetEpoch())
	}
	if fence != sp.GetEpoch() {
		sp = proto.Clone(sp).(*replicav1.GroupSpec)
		sp.Epoch = fence
	}
	ch := &channel{id: sp.GetChannelId(), group: sp.GetGroupId(), spec: sp, join: sp.GetJoin(), voters: voters, log: log,
		checkpointedAt: log.AppliedIndex(), notify: make(chan struct{}), unloaded: make(chan struct{})}
	ch.lastSeq.Store(log.LastSeq())
	ch.appliedIndex.Store(log.AppliedIndex())
	ch.epoch.Store(fence)
	ch.reset.Store(reset)
	ch.lastActivity.Store(e.cfg.Now().UnixNano())
	e.byID[ch.id] = ch
	e.byGroup[ch.group] = ch
	specData, err := proto.Marshal(sp)
	if err != nil {
		return nil, nil, fmt.Errorf("replica: encode spec: %w", err)
	}
	gid := make([]byte, 8)
	binary.BigEndian.PutUint64(gid, ch.group)
	return ch, []raftstore.StateWrite{
		{GroupID: ch.group, Key: []byte{kindSpec}, Value: specData},
		{GroupID: 0, Key: channelKey(ch.id), Value: gid},
	}, nil
}

// failure is the error of a loaded channel that failed, nil otherwise.
func (e *Engine) failure(channelID string) error {
	e.mu.RLock()
	ch := e.byID[channelID]
	e.mu.RUnlock()
	if ch == nil {
		return nil
	}
	return ch.failure()
}

func (e *Engine) forget(channelID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ch := e.byID[channelID]; ch != nil {
		delete(e.byID, channelID)
		delete(e.byGroup, ch.group)
	}
}

// Unload hibernates a channel here: refused unless its group is at rest (see
// multiraft.Host.UnloadGroup); its state is checkpointed so a later load resumes exactly.
func (e *Engine) Unload(ctx context.Context, channelID string) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	if err := e.host.UnloadGroup(ctx, ch.group); err != nil {
		return fmt.Errorf("replica: unload %s: %w", channelID, err)
	}
	// The group is out of the host: nothing applies to ch.log any more.
	w, err := checkpointWrite(ch)
	if err == nil {
		err = e.cfg.Store.SaveState(w)
	}
	e.forget(channelID)
	close(ch.unloaded)
	if err != nil {
		return fmt.Errorf("replica: checkpoint %s: %w", channelID, err)
	}
	return nil
}

// Campaign orders this replica to campaign for a channel's group.
func (e *Engine) Campaign(ctx context.Context, channelID string) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	return e.host.Campaign(ctx, ch.group)
}

// CampaignOutcome is the result of one ordered campaign.
type CampaignOutcome struct {
	Status *replicav1.GroupStatus
	Err    error
}

// CampaignAndWait orders this replica to campaign for the channels and waits, up to wait,
// until each either leads here or sees another leader. A campaign that stalls with no leader
// at all (its vote requests were lost: followers are never ticked, so nobody sends them
// again) is ordered again; one that lost to a known leader is not, since with CheckQuorum off
// a second campaign could unseat that leader.
func (e *Engine) CampaignAndWait(ctx context.Context, channelIDs []string, wait time.Duration) []CampaignOutcome {
	out := make([]CampaignOutcome, len(channelIDs))
	pending := map[int]*channel{}
	for i, id := range channelIDs {
		ch, err := e.channel(id)
		if err != nil {
			out[i].Err = err
			continue
		}
		pending[i] = ch
	}
	// Orders and status reads go to the host in one batch per sweep (one queued operation
	// per shard): a failover campaigns thousands of groups here at once, and one round trip
	// to the worker per group would take longer than the elections themselves.
	campaign := func(idx []int) {
		groups := make([]uint64, len(idx))
		for k, i := range idx {
			groups[k] = pending[i].group
		}
		errs, err := e.host.Campaigns(ctx, groups)
		for k, i := range idx {
			gerr := err
			if gerr == nil {
				gerr = errs[groups[k]]
			}
			if gerr != nil {
				out[i].Err = gerr
				delete(pending, i)
			}
		}
	}
	// A campaign that fell back to follower with no leader (its pre-vote was refused or lost)
	// is ordered again soon; one still (pre-)campaigning only after stall, long enough for
	// a slow round trip: ordering again restarts the campaign and, past the pre-vote, takes a
	// new term, so re-ordering faster than votes come back would never elect anyone.
	const poll, again, stall = 2 * time.Millisecond, 50 * time.Millisecond, 300 * time.Millisecond
	deadline := e.cfg.Now().Add(wait)
	e.confirmLeaders(ctx, pending, out, wait)
	ordered := map[int]time.Time{}
	first := make([]int, 0, len(pending))
	confirmed := map[int]bool{}
	for i := range pending {
		if out[i].Status != nil {
			confirmed[i] = true // leads already, confirmed: nothing to campaign for
			continue
		}
		first = append(first, i)
		ordered[i] = e.cfg.Now()
	}
	campaign(first)
	for len(pending) > 0 {
		groups := make([]uint64, 0, len(pending))
		for _, ch := range pending {
			groups = append(groups, ch.group)
		}
		sts, err := e.host.Statuses(ctx, groups)
		if err != nil {
			for i := range pending {
				out[i].Err = err
			}
			return out
		}
		var reorder []int
		for i, ch := range pending {
			st, ok := sts[ch.group]
			if !ok {
				out[i].Err = fmt.Errorf("%w: %s", ErrUnknownChannel, ch.id)
				delete(pending, i)
				continue
			}
			out[i].Status = e.statusProto(ch, st)
			// This replica won and can serve (it applied an entry of its term, see leads),
			// or another one leads: the channel control tier records a leader that serves
			// at once, and clients routed to it do not meet a refusal first.
			if (st.Leader == e.cfg.NodeID && ch.appliedTerm.Load() >= st.Term) || (st.Leader != 0 && st.Leader != e.cfg.NodeID) {
				delete(pending, i)
				continue
			}
			if since := e.cfg.Now().Sub(ordered[i]); !confirmed[i] && ((st.Role == raft.StateFollower && since >= again) || since >= stall) {
				reorder = append(reorder, i)
				ordered[i] = e.cfg.Now()
			}
		}
		if len(reorder) > 0 {
			campaign(reorder)
		}
		if len(pending) == 0 || !e.cfg.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(poll):
		}
	}
	return out
}

// confirmLeaders handles the channels of a campaign order that this replica already leads:
// raft ignores a leader's campaign, so the term stays the one the control tier recorded, and
// the leader may have been deposed behind its back. It must show that a quorum still follows
// it in that term (ReadIndex) before it is reported as leader; a channel that cannot is
// reported with ErrReadUnconfirmed. Confirmed channels get a status in out and stay pending
// (the wait for an entry of the term applies as for any winner). It is the rare case of an
// election whose chosen replica never stopped leading, so it confirms one channel at a time
// in parallel, not in batches.
func (e *Engine) confirmLeaders(ctx context.Context, pending map[int]*channel, out []CampaignOutcome, wait time.Duration) {
	groups := make([]uint64, 0, len(pending))
	for _, ch := range pending {
		groups = append(groups, ch.group)
	}
	sts, err := e.host.Statuses(ctx, groups)
	if err != nil {
		return // the campaign loop reports it
	}
	bound := wait
	if e.cfg.LeaseTTL > 0 {
		bound = min(bound, e.cfg.LeaseTTL)
	}
	type leader struct {
		i   int
		ch  *channel
		st  multiraft.Status
		err error
	}
	var leaders []*leader
	for i, ch := range pending {
		if st, ok := sts[ch.group]; ok && st.Role == raft.StateLeader {
			leaders = append(leaders, &leader{i: i, ch: ch, st: st})
		}
	}
	var wg sync.WaitGroup
	for _, l := range leaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, bound)
			defer cancel()
			_, l.err = e.host.ReadIndex(cctx, l.ch.group)
		}()
	}
	wg.Wait()
	for _, l := range leaders {
		if l.err != nil {
			out[l.i].Err = fmt.Errorf("%w: %s already led here in term %d: %w", ErrReadUnconfirmed, l.ch.id, l.st.Term, l.err)
			delete(pending, l.i)
			continue
		}
		out[l.i].Status = e.statusProto(l.ch, l.st)
	}
}

// TransferLeader orders this replica, the leader, to hand leadership to target.
func (e *Engine) TransferLeader(ctx context.Context, channelID string, target uint64) error {
	ch, err := e.channel(channelID)
	if err != nil {
		return err
	}
	if !slices.Contains(ch.currentVoters(), target) {
		return fmt.Errorf("%w: node %d is not a replica of %s", ErrInvalid, target, channelID)
	}
	return e.notLeader(ch, e.host.TransferLeader(ctx, ch.group, target))
}

// GroupStatus reports a channel's raft position here, from memory when loaded and from disk
// when hibernated.
func (e *Engine) GroupStatus(ctx context.Context, channelID string) (*replicav1.GroupStatus, error) {
	e.mu.RLock()
	ch := e.byID[channelID]
	e.mu.RUnlock()
	if ch != nil {
		if err := ch.failure(); err != nil {
			return nil, err
		}
		st, err := e.host.Status(ctx, ch.group)
		if err != nil {
			return nil, err
		}
		return e.statusProto(ch, st), nil
	}
	return e.diskStatus(channelID)
}

// GroupStatuses is GroupStatus for many channels, reading the loaded ones from the host in one
// operation per shard (the channelctl asks for thousands at once during a failover). Errors
// are per channel, in order.
func (e *Engine) GroupStatuses(ctx context.Context, channelIDs []string) ([]*replicav1.GroupStatus, []error) {
	out := make([]*replicav1.GroupStatus, len(channelIDs))
	errs := make([]error, len(channelIDs))
	loaded := map[int]*channel{}
	var groups []uint64
	e.mu.RLock()
	for i, id := range channelIDs {
		if ch := e.byID[id]; ch != nil {
			loaded[i] = ch
			groups = append(groups, ch.group)
		}
	}
	e.mu.RUnlock()
	sts, err := e.host.Statuses(ctx, groups)
	for i, id := range channelIDs {
		ch, ok := loaded[i]
		switch {
		case !ok:
			out[i], errs[i] = e.diskStatus(id)
		case ch.failure() != nil:
			// Reported as an error, never as a position: the control tier must not elect
			// this replica or count on it as a leader.
			errs[i] = ch.failure()
		case err != nil:
			errs[i] = err
		default:
			st, ok := sts[ch.group]
			if !ok {
				// Unloaded since: what is on disk is its position now.
				out[i], errs[i] = e.diskStatus(id)
				continue
			}
			out[i] = e.statusProto(ch, st)
		}
	}
	return out, errs
}

func (e *Engine) statusProto(ch *channel, st multiraft.Status) *replicav1.GroupStatus {
	out := &replicav1.GroupStatus{
		ChannelId: ch.id, GroupId: ch.group, Loaded: true, Role: roleProto(st.Role),
		Term: st.Term, Vote: st.Vote, LeaderNodeId: st.Leader, LastIndex: st.LastIndex, LastTerm: st.LastTerm,
		Commit: st.Commit, Applied: st.Applied, LastSeq: ch.lastSeq.Load(),
		LastActivityTime: timestamppb.New(time.Unix(0, ch.lastActivity.Load())),
		StoreId:          e.cfg.StoreID, CopyReset: ch.reset.Load(),
	}
	out.Voters, out.Learners = confStateIDs(st)
	if len(out.Voters) > 0 {
		// Followers learn of a changed replica set only from raft: refresh what the lease
		// check counts.
		ch.setVoters(out.Voters)
	}
	ids := make([]uint64, 0, len(st.Progress))
	for id := range st.Progress {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := st.Progress[id]
		out.Progress = append(out.Progress, &replicav1.Progress{NodeId: id, Match: p.Match, Next: p.Next})
	}
	return out
}

// diskStatus reads a hibernated channel's position without loading it into the host.
func (e *Engine) diskStatus(channelID string) (*replicav1.GroupStatus, error) {
	gid, err := e.cfg.Store.GetState(0, channelKey(channelID))
	if err != nil {
		return nil, fmt.Errorf("replica: look up %s: %w", channelID, err)
	}
	if len(gid) != 8 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownChannel, channelID)
	}
	group := binary.BigEndian.Uint64(gid)
	log, err := e.cfg.Store.Open(group)
	if err != nil {
		return nil, fmt.Errorf("replica: open %s: %w", channelID, err)
	}
	defer e.cfg.Store.Release(group)
	hs, _, err := log.InitialState()
	if err != nil {
		return nil, err
	}
	last, err := log.LastIndex()
	if err != nil {
		return nil, err
	}
	lastTerm, err := log.Term(last)
	if err != nil {
		return nil, err
	}
	out := &replicav1.GroupStatus{ChannelId: channelID, GroupId: group, Role: replicav1.Role_ROLE_FOLLOWER,
		Term: hs.GetTerm(), Vote: hs.GetVote(), LastIndex: last, LastTerm: lastTerm, Commit: hs.GetCommit(),
		StoreId: e.cfg.StoreID}
	if out.CopyReset, err = e.isReset(group); err != nil {
		return nil, err
	}
	if cpData, err := e.cfg.Store.GetState(group, []byte{kindCheckpoint}); err == nil && cpData != nil {
		var cp replicav1.ChannelCheckpoint
		if proto.Unmarshal(cpData, &cp) == nil {
			out.Applied, out.LastSeq = cp.GetAppliedIndex(), cp.GetLastSeq()
		}
	}
	return out, nil
}

func roleProto(r raft.StateType) replicav1.Role {
	switch r {
	case raft.StateLeader:
		return replicav1.Role_ROLE_LEADER
	case raft.StateCandidate:
		return replicav1.Role_ROLE_CANDIDATE
	case raft.StatePreCandidate:
		return replicav1.Role_ROLE_PRE_CANDIDATE
	default:
		return replicav1.Role_ROLE_FOLLOWER
	}
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
