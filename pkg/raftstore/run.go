package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"go.etcd.io/raft/v3/raftpb"
)

// A run is the value of one 'e' key: consecutive entries of one group written by one Save. The
// index of each entry is implied (key's first index + position), so it is not stored:
//
//	version byte (1) | uvarint count (>= 1) | count x entry
//	entry: flags byte | [uvarint term] | [uvarint type] | [uvarint len | data]
//
// The flags keep protobuf field presence (an unset Type differs from EntryNormal on the wire),
// so an entry read back is proto.Equal to the one saved and has the same proto.Size; Entries'
// maxSize therefore cuts exactly where raft.MemoryStorage would.
const (
	runVersion = 1

	flagTerm = 1 << 0 // Term is set
	flagType = 1 << 1 // Type is set
	flagData = 1 << 2 // Data is non-nil (possibly empty)
	flagMask = flagTerm | flagType | flagData
)

var errMalformedRun = errors.New("raftstore: malformed run")

func entryFlags(e *raftpb.Entry) byte {
	var f byte
	if e.Term != nil {
		f |= flagTerm
	}
	if e.Type != nil {
		f |= flagType
	}
	if e.Data != nil {
		f |= flagData
	}
	return f
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func encodedEntrySize(e *raftpb.Entry) int {
	n := 1
	if e.Term != nil {
		n += uvarintLen(e.GetTerm())
	}
	if e.Type != nil {
		n += uvarintLen(uint64(e.GetType()))
	}
	if e.Data != nil {
		n += uvarintLen(uint64(len(e.Data))) + len(e.Data)
	}
	return n
}

// encodeRun encodes ents, which the caller has checked are consecutive and non-empty.
func encodeRun(ents []*raftpb.Entry) []byte {
	size := 1 + uvarintLen(uint64(len(ents)))
	for _, e := range ents {
		size += encodedEntrySize(e)
	}
	b := make([]byte, 0, size)
	b = append(b, runVersion)
	b = binary.AppendUvarint(b, uint64(len(ents)))
	for _, e := range ents {
		f := entryFlags(e)
		b = append(b, f)
		if f&flagTerm != 0 {
			b = binary.AppendUvarint(b, e.GetTerm())
		}
		if f&flagType != 0 {
			b = binary.AppendUvarint(b, uint64(e.GetType()))
		}
		if f&flagData != 0 {
			b = binary.AppendUvarint(b, uint64(len(e.Data)))
			b = append(b, e.Data...)
		}
	}
	return b
}

// runEntry is one decoded entry of a run, before it becomes a protobuf message.
type runEntry struct {
	flags byte
	term  uint64
	typ   raftpb.EntryType
	data  []byte
}

// runReader walks a run value. It validates as it goes; every method is safe on any input.
type runReader struct {
	b     []byte
	count uint64 // entries in the run
	left  uint64 // entries not read yet
}

func newRunReader(b []byte) (runReader, error) {
	if len(b) < 2 || b[0] != runVersion {
		return runReader{}, fmt.Errorf("%w: bad header", errMalformedRun)
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n == 0 {
		return runReader{}, fmt.Errorf("%w: bad entry count", errMalformedRun)
	}
	rest := b[1+k:]
	// Every entry takes at least its flags byte: this bounds count before anyone allocates by it.
	if n > uint64(len(rest)) {
		return runReader{}, fmt.Errorf("%w: count %d exceeds %d bytes", errMalformedRun, n, len(rest))
	}
	return runReader{b: rest, count: n, left: n}, nil
}

func (r *runReader) uvarint() (uint64, error) {
	x, k := binary.Uvarint(r.b)
	if k <= 0 {
		return 0, fmt.Errorf("%w: bad varint", errMalformedRun)
	}
	r.b = r.b[k:]
	return x, nil
}

// next returns the next entry. Data aliases the run value (capacity-limited, so appending to
// it cannot overwrite the following entry).
func (r *runReader) next() (runEntry, error) {
	if r.left == 0 {
		return runEntry{}, fmt.Errorf("%w: read past the last entry", errMalformedRun)
	}
	if len(r.b) == 0 {
		return runEntry{}, fmt.Errorf("%w: truncated", errMalformedRun)
	}
	e := runEntry{flags: r.b[0]}
	r.b = r.b[1:]
	if e.flags&^flagMask != 0 {
		return runEntry{}, fmt.Errorf("%w: unknown flags %#x", errMalformedRun, e.flags)
	}
	var err error
	if e.flags&flagTerm != 0 {
		if e.term, err = r.uvarint(); err != nil {
			return runEntry{}, err
		}
	}
	if e.flags&flagType != 0 {
		t, err := r.uvarint()
		if err != nil {
			return runEntry{}, err
		}
		if t > math.MaxInt32 {
			return runEntry{}, fmt.Errorf("%w: entry type %d out of range", errMalformedRun, t)
		}
		e.typ = raftpb.EntryType(t)
	}
	if e.flags&flagData != 0 {
		n, err := r.uvarint()
		if err != nil {
			return runEntry{}, err
		}
		if n > uint64(len(r.b)) {
			return runEntry{}, fmt.Errorf("%w: data length %d exceeds %d bytes", errMalformedRun, n, len(r.b))
		}
		e.data = r.b[:n:n]
		r.b = r.b[n:]
	}
	r.left--
	if r.left == 0 && len(r.b) != 0 {
		return runEntry{}, fmt.Errorf("%w: %d trailing bytes", errMalformedRun, len(r.b))
	}
	return e, nil
}

// entryBuilder allocates the protobuf entries of one read in a few slabs instead of four small
// allocations per entry.
type entryBuilder struct {
	msgs  []raftpb.Entry
	nums  []uint64
	types []raftpb.EntryType
}

func newEntryBuilder(n int) *entryBuilder {
	return &entryBuilder{
		msgs:  make([]raftpb.Entry, 0, n),
		nums:  make([]uint64, 0, 2*n),
		types: make([]raftpb.EntryType, 0, n),
	}
}

func (eb *entryBuilder) build(re runEntry, index uint64) *raftpb.Entry {
	if len(eb.msgs) == cap(eb.msgs) {
		*eb = *newEntryBuilder(max(8, cap(eb.msgs)))
	}
	eb.msgs = eb.msgs[:len(eb.msgs)+1]
	e := &eb.msgs[len(eb.msgs)-1]
	eb.nums = append(eb.nums, index)
	e.Index = &eb.nums[len(eb.nums)-1]
	if re.flags&flagTerm != 0 {
		eb.nums = append(eb.nums, re.term)
		e.Term = &eb.nums[len(eb.nums)-1]
	}
	if re.flags&flagType != 0 {
		eb.types = append(eb.types, re.typ)
		e.Type = &eb.types[len(eb.types)-1]
	}
	if re.flags&flagData != 0 {
		e.Data = re.data
	}
	return e
}

// decodeRun decodes a whole run whose first entry has index first. Any input gives either
// entries or an error, never a panic (see FuzzDecodeRun).
func decodeRun(b []byte, first uint64) ([]*raftpb.Entry, error) {
	r, err := newRunReader(b)
	if err != nil {
		return nil, err
	}
	if first+r.count-1 < first {
		return nil, fmt.Errorf("%w: index overflow", errMalformedRun)
	}
	eb := newEntryBuilder(int(r.count))
	out := make([]*raftpb.Entry, 0, r.count)
	for i := uint64(0); i < r.count; i++ {
		re, err := r.next()
		if err != nil {
			return nil, err
		}
		out = append(out, eb.build(re, first+i))
	}
	return out, nil
}
