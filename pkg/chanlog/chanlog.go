package chanlog

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Config bounds the dedup window: an id is forgotten once it is older than Window by the
// channel's dedup clock, or once MaxIDs newer ids have been remembered. MaxIDs <= 0 means no
// count bound (and no memory bound); Window <= 0, no age bound.
type Config struct {
	Window time.Duration
	MaxIDs int
}

// Result is the outcome of one message of an applied entry.
type Result struct {
	Seq uint64
	// Duplicate is set when the message's client_msg_id was taken before by another send:
	// the message took no number and Seq is the original's. A message whose id was taken
	// by a message with the same non-zero nonce (a retry of the same send, which found its
	// first attempt committed) takes no number either, but is not Duplicate.
	Duplicate bool
}

// Applied is the outcome of applying one entry.
type Applied struct {
	// Record is the entry's seq index record; nil when the entry took no sequence number.
	Record *replicav1.SeqIndexRecord
	// FirstSeq is the first sequence number the entry took (valid when Record != nil).
	FirstSeq uint64
	// Results are per message, in the order of the entry's LogBatch.
	Results []Result
	// ProposerNodeID and ProposalID identify the request that proposed the entry, so the
	// proposing replica can hand it the results.
	ProposerNodeID, ProposalID uint64
}

// Channel is the applied state of one channel. It is not safe for concurrent use: the replica's
// apply stage owns it.
type Channel struct {
	cfg     Config
	applied uint64
	lastSeq uint64
	// clock is the dedup clock: the greatest propose time applied (unix nanoseconds).
	clock int64
	ids   window
	saved saved
}

// New returns the state of an empty channel.
func New(cfg Config) *Channel {
	return &Channel{cfg: cfg}
}

// AppliedIndex is the raft index of the last applied entry.
func (c *Channel) AppliedIndex() uint64 { return c.applied }

// LastSeq is the last sequence number taken.
func (c *Channel) LastSeq() uint64 { return c.lastSeq }

// Lookup returns the sequence number of a remembered client_msg_id.
func (c *Channel) Lookup(clientMsgID string) (uint64, bool) {
	r, ok := c.ids.lookup(hashID([]byte(clientMsgID)))
	return r.seq, ok
}

// Skip advances the applied index over an entry that carries no messages (raft's no-op and
// configuration entries).
func (c *Channel) Skip(index uint64) {
	if index > c.applied {
		c.applied = index
	}
}

// ErrBadEntry is returned for an entry whose data is not a LogBatch. It takes no sequence
// number, and the log counts it applied; the replica that sees it fails the channel there
// (services/replica: a corrupt copy must never be numbered past, nor checkpointed).
var ErrBadEntry = errors.New("chanlog: entry is not a LogBatch")

// Apply applies the committed entry at index carrying an encoded LogBatch. An entry at or below
// the applied index was applied before (raft re-delivers after a restart from a checkpoint) and
// is ignored: it returns a zero Applied and no error.
func (c *Channel) Apply(index uint64, data []byte) (Applied, error) {
	if index <= c.applied {
		return Applied{}, nil
	}
	c.applied = index
	batch, err := decodeBatch(data)
	if err != nil {
		return Applied{}, fmt.Errorf("%w: index %d: %v", ErrBadEntry, index, err)
	}
	// A leader whose clock is behind must not bring back ids a faster one expired, nor keep
	// ids past their time on some replicas and not others: the clock only moves forward, and
	// only with the log.
	c.clock = max(c.clock, batch.proposeTime.UnixNano())
	c.expire()
	out := Applied{
		Results:        make([]Result, len(batch.ids)),
		FirstSeq:       c.lastSeq + 1,
		ProposerNodeID: batch.proposerID,
		ProposalID:     batch.proposalID,
	}
	var rec *replicav1.SeqIndexRecord
	for i, id := range batch.ids {
		var h idHash
		nonce := batch.nonce(i)
		if len(id) > 0 {
			h = hashID(id)
			if r, ok := c.ids.lookup(h); ok {
				// The same send's earlier attempt took the id (its gateway retried after
				// losing the answer): the client sent it once, so it is not a duplicate.
				sameSend := nonce != 0 && r.nonce == nonce
				out.Results[i] = Result{Seq: r.seq, Duplicate: !sameSend}
				if rec == nil {
					rec = &replicav1.SeqIndexRecord{Index: index}
				}
				rec.DuplicatePositions = append(rec.DuplicatePositions, uint32(i))
				continue
			}
		}
		c.lastSeq++
		out.Results[i] = Result{Seq: c.lastSeq}
		if len(id) > 0 {
			c.remember(remembered{h: h, seq: c.lastSeq, at: c.clock, nonce: nonce})
		}
	}
	if taken := c.lastSeq + 1 - out.FirstSeq; taken > 0 {
		if rec == nil {
			rec = &replicav1.SeqIndexRecord{Index: index}
		}
		rec.Count = uint32(taken)
		out.Record = rec
	}
	return out, nil
}

func (c *Channel) remember(r remembered) {
	if c.cfg.MaxIDs > 0 && c.ids.n >= c.cfg.MaxIDs {
		c.ids.dropOldest()
	}
	c.ids.add(r, c.cfg.MaxIDs)
}

// expire forgets ids older than the window by the dedup clock.
func (c *Channel) expire() {
	if c.cfg.Window <= 0 {
		return
	}
	cutoff := c.clock - c.cfg.Window.Nanoseconds()
	for c.ids.n > 0 && c.ids.at(0).at < cutoff {
		c.ids.dropOldest()
	}
}

// Messages decodes the entry described by rec (whose first sequence number is firstSeq) into
// the messages with sequence numbers in [from, from+limit).
func Messages(channelID string, firstSeq uint64, rec *replicav1.SeqIndexRecord, data []byte, from uint64, limit int) ([]*triarchv1.Message, error) {
	var batch replicav1.LogBatch
	if err := proto.Unmarshal(data, &batch); err != nil {
		return nil, fmt.Errorf("%w: index %d: %v", ErrBadEntry, rec.GetIndex(), err)
	}
	dups := rec.GetDuplicatePositions()
	seq := firstSeq
	var out []*triarchv1.Message
	for i, m := range batch.GetMessages() {
		if len(dups) > 0 && dups[0] == uint32(i) {
			dups = dups[1:]
			continue
		}
		if seq >= from && len(out) < limit {
			out = append(out, &triarchv1.Message{
				ChannelId:   channelID,
				Seq:         seq,
				ClientMsgId: m.GetClientMsgId(),
				Sender:      m.GetSender(),
				Payload:     m.GetPayload(),
				Headers:     m.GetHeaders(),
				CommitTime:  batch.GetProposeTime(),
			})
		}
		seq++
	}
	if taken := seq - firstSeq; taken != uint64(rec.GetCount()) {
		return nil, fmt.Errorf("chanlog: entry %d took %d sequence numbers, index says %d", rec.GetIndex(), taken, rec.GetCount())
	}
	return out, nil
}
