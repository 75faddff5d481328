package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/api"
	"github.com/triarch-io/triarch/pkg/chanlog"
)

// The data plane: appends (validated, coalesced, proposed), reads and subscriptions, and the
// checks that only a confirmed leader serves them (see doc.go).

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

// Limits on appends (docs/ARCHITECTURE.md, "The contract": payload <= 1 MiB, batch <= 1,000
// messages and 4 MiB; client_msg_id, sender and headers as pkg/api bounds them).
const (
	MaxPayloadBytes = api.MaxPayloadBytes
	MaxBatchBytes   = api.MaxBatchBytes
	MaxBatchLen     = api.MaxBatchMessages
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
		if err := api.CheckFields(i, m); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrInvalid, err)
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
// entry (see coalescer); msgs stay together and in order in it. It is AppendWithNonce with no
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
	if err := e.cfg.Space.Check(); err != nil {
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
// of encoded messages (at least one message when any is available).
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
			// Whole messages: headers, sender and ids can outweigh a payload many times.
			bytes += proto.Size(m)
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
