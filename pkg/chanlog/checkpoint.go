package chanlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Format is the checkpoint format Checkpoint writes; Restore reads it and format 0.
const Format = 1

// chunkIDs is the size under which the newest DedupChunk record is grown (rewritten with the
// new ids appended) rather than followed by a new one: it bounds what a checkpoint rewrites
// (fewer than chunkIDs ids besides the new ones) and how many records a channel has (at most
// live/chunkIDs + 2, each read with one seek at load), however often it is checkpointed.
const chunkIDs = 1024

// Checkpoint is what a checkpoint writes. Written in this order (Chunks, Header, then
// Deleted), a store that keeps a prefix of the writes after a crash always holds a header
// whose records are all there: a chunk the previous header lists is only ever rewritten as a
// superset of itself, and deleted only after the header that no longer lists it.
type Checkpoint struct {
	// Chunks are DedupChunk records to store under their first counter.
	Chunks []Chunk
	Header *replicav1.ChannelCheckpoint
	// Deleted are the first counters of DedupChunk records to delete.
	Deleted []uint64
}

// Chunk is a DedupChunk record and its first counter.
type Chunk struct {
	Start uint64
	Data  *replicav1.DedupChunk
}

// saved is what the records in the store hold, as of the last checkpoint.
type saved struct {
	next   uint64   // ids below this counter are in records (or expired)
	chunks []uint64 // first counters of the records listed by the last header, increasing
	stale  []uint64 // records found at restore that the header does not list
}

// Checkpoint captures the state so that Restore, given the records, gives an identical
// Channel, and records that it did: the next Checkpoint writes only what changed since. The
// caller must store the result (or fail the channel).
func (c *Channel) Checkpoint() Checkpoint {
	var cp Checkpoint
	s, w := &c.saved, &c.ids
	oldest, next := w.oldest, w.next()
	for len(s.chunks) > 0 {
		end := s.next
		if len(s.chunks) > 1 {
			end = s.chunks[1]
		}
		if end > oldest {
			break
		}
		cp.Deleted = append(cp.Deleted, s.chunks[0])
		s.chunks = s.chunks[1:]
	}
	if next > s.next {
		if n := len(s.chunks); n > 0 && s.chunks[n-1] >= oldest && s.next-s.chunks[n-1] < chunkIDs {
			cp.Chunks = append(cp.Chunks, Chunk{Start: s.chunks[n-1], Data: w.encode(s.chunks[n-1], next)})
		} else if from := max(s.next, oldest); from < next {
			cp.Chunks = append(cp.Chunks, Chunk{Start: from, Data: w.encode(from, next)})
			s.chunks = append(s.chunks, from)
		}
		s.next = next
	}
	for _, k := range s.stale {
		// A leftover of an interrupted checkpoint may sit under the key a record has just
		// been written to.
		if _, listed := slices.BinarySearch(s.chunks, k); !listed {
			cp.Deleted = append(cp.Deleted, k)
		}
	}
	s.stale = nil
	cp.Header = &replicav1.ChannelCheckpoint{
		AppliedIndex: c.applied,
		LastSeq:      c.lastSeq,
		Format:       Format,
		DedupClock:   c.clock,
		DedupOldest:  oldest,
		DedupNext:    next,
		DedupChunks:  slices.Clone(s.chunks),
	}
	return cp
}

// encode returns the ids with counters in [from, to) as a record.
func (w *window) encode(from, to uint64) *replicav1.DedupChunk {
	k := int(to - from)
	d := &replicav1.DedupChunk{Hashes: make([]byte, 0, 16*k), Seqs: make([]uint64, k), Times: make([]int64, k)}
	var seq uint64
	var at int64
	for i := range k {
		r := w.at(int(from-w.oldest) + i)
		d.Hashes = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(d.Hashes, r.h.hi), r.h.lo)
		d.Seqs[i], d.Times[i] = r.seq-seq, r.at-at
		seq, at = r.seq, r.at
		if r.nonce != 0 && d.Nonces == nil {
			// The ids before it had none; a record whose ids all have none holds no nonces.
			d.Nonces = make([]uint64, i, k)
		}
		if d.Nonces != nil {
			d.Nonces = append(d.Nonces, r.nonce)
		}
	}
	return d
}

// ErrBadCheckpoint is returned by Restore for a checkpoint or records it cannot take.
var ErrBadCheckpoint = errors.New("chanlog: bad checkpoint")

// Restore returns the state recorded by a checkpoint and the DedupChunk records stored beside
// it (all of them, by first counter: records the checkpoint does not list are left over from an
// interrupted checkpoint, and deleted by the next one). A format 0 checkpoint (ids in the
// header) is read and migrated: the next Checkpoint writes its ids as records.
func Restore(cfg Config, cp *replicav1.ChannelCheckpoint, records map[uint64][]byte) (*Channel, error) {
	c := New(cfg)
	c.applied = cp.GetAppliedIndex()
	c.lastSeq = cp.GetLastSeq()
	listed := map[uint64]bool{}
	var err error
	switch cp.GetFormat() {
	case 0:
		err = c.restoreV0(cp)
	case 1:
		for _, s := range cp.GetDedupChunks() {
			listed[s] = true
		}
		err = c.restoreV1(cp, records)
	default:
		err = fmt.Errorf("format %d is newer than this replica reads (%d); run a newer version", cp.GetFormat(), Format)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	for s := range records {
		if !listed[s] {
			c.saved.stale = append(c.saved.stale, s)
		}
	}
	slices.Sort(c.saved.stale)
	return c, nil
}

// restoreV0 reads the ids of a checkpoint written before DedupChunk records. Their times were
// each entry's own propose time, which could go back; they are made monotone (an id keeps the
// greatest time of those before it) as the dedup clock would have made them.
func (c *Channel) restoreV0(cp *replicav1.ChannelCheckpoint) error {
	for _, d := range cp.GetDedup() {
		c.clock = max(c.clock, d.GetUnixNano())
		if d.GetSeq() == 0 || d.GetSeq() > c.lastSeq {
			return fmt.Errorf("id %q has seq %d of %d", d.GetClientMsgId(), d.GetSeq(), c.lastSeq)
		}
		h := hashID([]byte(d.GetClientMsgId()))
		if _, ok := c.ids.lookup(h); ok || d.GetClientMsgId() == "" {
			continue
		}
		c.remember(remembered{h: h, seq: d.GetSeq(), at: c.clock})
	}
	return nil
}

func (c *Channel) restoreV1(cp *replicav1.ChannelCheckpoint, records map[uint64][]byte) error {
	oldest, next, chunks := cp.GetDedupOldest(), cp.GetDedupNext(), cp.GetDedupChunks()
	c.clock = cp.GetDedupClock()
	switch {
	case c.clock < 0:
		return fmt.Errorf("dedup clock %d", c.clock)
	case oldest > next:
		return fmt.Errorf("dedup counters [%d, %d)", oldest, next)
	case !slices.IsSorted(chunks) || len(slices.Compact(slices.Clone(chunks))) != len(chunks):
		return fmt.Errorf("dedup chunks %v out of order", chunks)
	case len(chunks) > 0 && chunks[len(chunks)-1] >= next:
		return fmt.Errorf("dedup chunk %d at or after next %d", chunks[len(chunks)-1], next)
	case oldest < next && (len(chunks) == 0 || chunks[0] > oldest):
		return fmt.Errorf("no dedup chunk holds id %d", oldest)
	}
	c.ids.oldest = oldest
	c.saved.next = next
	c.saved.chunks = slices.Clone(chunks)
	var last remembered
	for i, start := range chunks {
		end := next
		if i+1 < len(chunks) {
			end = chunks[i+1]
		}
		if end <= oldest {
			continue
		}
		data, ok := records[start]
		if !ok {
			return fmt.Errorf("dedup chunk %d is missing", start)
		}
		ids, err := decodeChunk(data, end-start)
		if err != nil {
			return fmt.Errorf("dedup chunk %d: %v", start, err)
		}
		if start < oldest {
			ids = ids[oldest-start:]
		}
		for _, r := range ids {
			switch {
			case r.seq <= last.seq || r.seq > c.lastSeq:
				return fmt.Errorf("dedup chunk %d: seq %d after %d (last %d)", start, r.seq, last.seq, c.lastSeq)
			case r.at < last.at || r.at > c.clock:
				return fmt.Errorf("dedup chunk %d: time %d after %d (clock %d)", start, r.at, last.at, c.clock)
			}
			if _, ok := c.ids.lookup(r.h); ok {
				return fmt.Errorf("dedup chunk %d: an id twice", start)
			}
			c.remember(r)
			last = r
		}
	}
	return nil
}

// decodeChunk returns the first n ids of a DedupChunk record (it may hold more: the next
// checkpoint grew it, and then did not finish).
func decodeChunk(data []byte, n uint64) ([]remembered, error) {
	var d replicav1.DedupChunk
	if err := proto.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	k := uint64(len(d.GetSeqs()))
	nonces := d.GetNonces() // none in records whose ids all had none (or written before nonces)
	if uint64(len(d.GetHashes())) != 16*k || uint64(len(d.GetTimes())) != k || (len(nonces) != 0 && uint64(len(nonces)) != k) {
		return nil, fmt.Errorf("%d hashes (bytes), %d seqs, %d times, %d nonces", len(d.GetHashes()), k, len(d.GetTimes()), len(nonces))
	}
	if k < n {
		return nil, fmt.Errorf("holds %d ids, not %d", k, n)
	}
	out := make([]remembered, n)
	var seq uint64
	var at int64
	for i := range out {
		ds, dt := d.GetSeqs()[i], d.GetTimes()[i]
		if i > 0 && (ds == 0 || seq+ds < seq || dt < 0 || at+dt < at) {
			return nil, fmt.Errorf("id %d: seq delta %d, time delta %d", i, ds, dt)
		}
		seq, at = seq+ds, at+dt
		h := d.GetHashes()[16*i:]
		out[i] = remembered{h: idHash{binary.BigEndian.Uint64(h), binary.BigEndian.Uint64(h[8:])}, seq: seq, at: at}
		if len(nonces) > 0 {
			out[i].nonce = nonces[i]
		}
	}
	return out, nil
}
