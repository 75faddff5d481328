package chanlog

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Config bounds the dedup window: an id is forgotten once it is older than Window (by the
// leader's propose times, so every replica forgets at the same entry) or once MaxIDs newer ids
// have been applied.
type Config struct {
	Window time.Duration
	MaxIDs int
}

// Result is the outcome of one message of an applied entry.
type Result struct {
	Seq       uint64
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

type seen struct {
	seq      uint64
	unixNano int64
}

// Channel is the applied state of one channel. It is not safe for concurrent use: the replica's
// apply stage owns it.
type Channel struct {
	cfg     Config
	applied uint64
	lastSeq uint64
	ids     map[string]seen
	// order holds the remembered ids oldest first; head is the first live element, so eviction
	// is O(1) and the slice is compacted only when half of it is dead.
	order []*replicav1.DedupEntry
	head  int
}

// New returns the state of an empty channel.
func New(cfg Config) *Channel {
	return &Channel{cfg: cfg, ids: make(map[string]seen)}
}

// Restore returns the state recorded by a checkpoint.
func Restore(cfg Config, cp *replicav1.ChannelCheckpoint) *Channel {
	c := New(cfg)
	c.applied = cp.GetAppliedIndex()
	c.lastSeq = cp.GetLastSeq()
	for _, d := range cp.GetDedup() {
		c.remember(d.GetClientMsgId(), d.GetSeq(), d.GetUnixNano())
	}
	return c
}

// Checkpoint captures the state so that Restore gives an identical Channel.
func (c *Channel) Checkpoint() *replicav1.ChannelCheckpoint {
	live := c.order[c.head:]
	dedup := make([]*replicav1.DedupEntry, len(live))
	copy(dedup, live)
	return &replicav1.ChannelCheckpoint{AppliedIndex: c.applied, LastSeq: c.lastSeq, Dedup: dedup}
}

// AppliedIndex is the raft index of the last applied entry.
func (c *Channel) AppliedIndex() uint64 { return c.applied }

// LastSeq is the last sequence number taken.
func (c *Channel) LastSeq() uint64 { return c.lastSeq }

// Lookup returns the sequence number of a remembered client_msg_id.
func (c *Channel) Lookup(clientMsgID string) (uint64, bool) {
	s, ok := c.ids[clientMsgID]
	return s.seq, ok
}

// Skip advances the applied index over an entry that carries no messages (raft's no-op and
// configuration entries).
func (c *Channel) Skip(index uint64) {
	if index > c.applied {
		c.applied = index
	}
}

// ErrBadEntry is returned for an entry whose data is not a LogBatch. The entry is skipped (it
// takes no sequence number) so one corrupt entry cannot wedge the channel; every replica skips
// it alike.
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
	now := batch.proposeTime.UnixNano()
	c.expire(now)
	out := Applied{
		Results:        make([]Result, len(batch.ids)),
		FirstSeq:       c.lastSeq + 1,
		ProposerNodeID: batch.proposerID,
		ProposalID:     batch.proposalID,
	}
	var rec *replicav1.SeqIndexRecord
	for i, id := range batch.ids {
		if s, ok := c.ids[id]; ok && id != "" {
			out.Results[i] = Result{Seq: s.seq, Duplicate: true}
			if rec == nil {
				rec = &replicav1.SeqIndexRecord{Index: index}
			}
			rec.DuplicatePositions = append(rec.DuplicatePositions, uint32(i))
			continue
		}
		c.lastSeq++
		out.Results[i] = Result{Seq: c.lastSeq}
		if id != "" {
			c.remember(id, c.lastSeq, now)
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

func (c *Channel) remember(id string, seq uint64, unixNano int64) {
	c.ids[id] = seen{seq: seq, unixNano: unixNano}
	c.order = append(c.order, &replicav1.DedupEntry{ClientMsgId: id, Seq: seq, UnixNano: unixNano})
	for c.cfg.MaxIDs > 0 && len(c.order)-c.head > c.cfg.MaxIDs {
		c.forgetOldest()
	}
}

// expire forgets ids older than the window, measured against the current entry's propose time.
func (c *Channel) expire(now int64) {
	if c.cfg.Window <= 0 {
		return
	}
	cutoff := now - c.cfg.Window.Nanoseconds()
	for c.head < len(c.order) && c.order[c.head].GetUnixNano() < cutoff {
		c.forgetOldest()
	}
}

func (c *Channel) forgetOldest() {
	d := c.order[c.head]
	// A later remember of the same id (after it expired) must not be forgotten with the old one.
	if s, ok := c.ids[d.GetClientMsgId()]; ok && s.seq == d.GetSeq() {
		delete(c.ids, d.GetClientMsgId())
	}
	c.order[c.head] = nil
	c.head++
	if c.head > len(c.order)/2 {
		c.order = append(c.order[:0:0], c.order[c.head:]...)
		c.head = 0
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
