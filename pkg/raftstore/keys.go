package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Key layout of the Badger store. Every key starts with a one-byte kind, then the group id
// big-endian, so that each kind of a group is one contiguous, ordered range:
//
//	'v'                          format version of the database (value: one byte)
//	'i'                          store id: random, non-zero, created with the store (8 bytes)
//	'm' | group                  group metadata: first index, term of first-1, recovery limit
//	'h' | group                  hard state (term, vote, commit)
//	's' | group                  snapshot metadata (raftpb.SnapshotMetadata, incl. ConfState)
//	'd' | group                  snapshot data
//	'c' | group                  configuration record: index and ConfState (SaveConfState)
//	'e' | group | first index    a run: consecutive entries written by one Save
//	'k' | group | key            a state-machine record (StateStore), written unsynced
//
// Why kind first rather than group first: Groups() scans only the dense 'm' range (one small key
// per group) instead of skipping over every group's entries, and a group's runs are still one
// prefix ('e'|group) for reads, truncation, compaction and Delete. Big-endian numbers make
// Badger's byte order equal numeric order, so "the run containing index i" is a reverse seek to
// 'e'|group|i.
//
// A snapshot is two keys so that opening a group reads only the small metadata (InitialState
// needs its ConfState), not the data, which only Snapshot() reads.
//
// The 'm' key exists for every group that has data: it is written by the group's first Save and
// rewritten only by Compact, snapshot installs and the rare truncation that does not fit one
// transaction, never per round, because keys rewritten every round pile up versions in the LSM.
const (
	kindVersion  = 'v'
	kindStoreID  = 'i'
	kindMeta     = 'm'
	kindHard     = 'h'
	kindSnapMeta = 's'
	kindSnapData = 'd'
	kindConf     = 'c'
	kindRun      = 'e'
	kindState    = 'k'
)

// formatVersion is stored under the 'v' key; OpenBadger refuses a database of another version.
const formatVersion = 1

var (
	versionKey = []byte{kindVersion}
	storeIDKey = []byte{kindStoreID}
)

func groupKey(kind byte, group uint64) []byte {
	k := make([]byte, 9)
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:], group)
	return k
}

// runPrefix is the prefix shared by all runs of a group.
func runPrefix(group uint64) []byte { return groupKey(kindRun, group) }

func runKey(group, first uint64) []byte {
	k := make([]byte, 17)
	k[0] = kindRun
	binary.BigEndian.PutUint64(k[1:], group)
	binary.BigEndian.PutUint64(k[9:], first)
	return k
}

// parseRunKey returns the first index of the run stored under k.
func parseRunKey(k []byte) (uint64, error) {
	if len(k) != 17 || k[0] != kindRun {
		return 0, fmt.Errorf("raftstore: malformed run key %x", k)
	}
	return binary.BigEndian.Uint64(k[9:]), nil
}

func parseGroupKey(k []byte) (uint64, error) {
	if len(k) != 9 {
		return 0, fmt.Errorf("raftstore: malformed group key %x", k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// meta is the value of a group's 'm' key.
type meta struct {
	// first is the first index that may be read (1 until something is compacted).
	first uint64
	// prevTerm is the term of first-1, kept for raft's log matching after compaction.
	prevTerm uint64
	// limit, when not zero, says an update too large for one transaction was interrupted: the
	// log ends at limit-1 and runs starting at limit or later are leftovers. Loading the group
	// finishes the cleanup (see Badger.recover and plan.write).
	limit uint64
}

const metaLen = 1 + 3*8

func (m meta) encode() []byte {
	b := make([]byte, metaLen)
	b[0] = 1
	binary.BigEndian.PutUint64(b[1:], m.first)
	binary.BigEndian.PutUint64(b[9:], m.prevTerm)
	binary.BigEndian.PutUint64(b[17:], m.limit)
	return b
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) != metaLen || b[0] != 1 {
		return meta{}, errors.New("malformed group metadata")
	}
	m := meta{
		first:    binary.BigEndian.Uint64(b[1:]),
		prevTerm: binary.BigEndian.Uint64(b[9:]),
		limit:    binary.BigEndian.Uint64(b[17:]),
	}
	if m.first == 0 {
		return meta{}, errors.New("malformed group metadata: first index 0")
	}
	return m, nil
}

// hardState is raft's HardState without protobuf presence bits: raft treats unset as zero.
type hardState struct{ term, vote, commit uint64 }

const hardStateLen = 1 + 3*8

func (h hardState) encode() []byte {
	b := make([]byte, hardStateLen)
	b[0] = 1
	binary.BigEndian.PutUint64(b[1:], h.term)
	binary.BigEndian.PutUint64(b[9:], h.vote)
	binary.BigEndian.PutUint64(b[17:], h.commit)
	return b
}

func decodeHardState(b []byte) (hardState, error) {
	if len(b) != hardStateLen || b[0] != 1 {
		return hardState{}, errors.New("malformed hard state")
	}
	return hardState{
		term:   binary.BigEndian.Uint64(b[1:]),
		vote:   binary.BigEndian.Uint64(b[9:]),
		commit: binary.BigEndian.Uint64(b[17:]),
	}, nil
}

// confRecord is the value of a group's 'c' key: the configuration once every entry up to
// index is applied.
type confRecord struct {
	index uint64
	cs    *raftpb.ConfState
}

func (r confRecord) encode() ([]byte, error) {
	cs, err := proto.Marshal(r.cs)
	if err != nil {
		return nil, fmt.Errorf("marshal conf state: %w", err)
	}
	b := make([]byte, 9, 9+len(cs))
	b[0] = 1
	binary.BigEndian.PutUint64(b[1:], r.index)
	return append(b, cs...), nil
}

func decodeConfRecord(b []byte) (confRecord, error) {
	if len(b) < 9 || b[0] != 1 {
		return confRecord{}, errors.New("malformed configuration record")
	}
	cs := new(raftpb.ConfState)
	if err := proto.Unmarshal(b[9:], cs); err != nil {
		return confRecord{}, fmt.Errorf("configuration record: %w", err)
	}
	return confRecord{index: binary.BigEndian.Uint64(b[1:]), cs: raftpb.EnsureConfState(cs)}, nil
}

func stateKey(group uint64, key []byte) []byte {
	k := make([]byte, 9, 9+len(key))
	k[0] = kindState
	binary.BigEndian.PutUint64(k[1:], group)
	return append(k, key...)
}
