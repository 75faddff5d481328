package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"go.etcd.io/raft/v3/raftpb"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// The apply side of the engine: committed entries numbered into each channel's log, with
// checkpoints, the per-entry checksum and the failure of a channel whose copy is corrupt.

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
		applied    []appliedTo
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
		if w := e.readmitted(ch, c.Entries); w != nil && ch.failed.Load() == nil {
			writes = append(writes, w...)
			readmitted = append(readmitted, ch)
		}
		applied = append(applied, appliedTo{ch, ch.log.AppliedIndex(), term})
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
	// Readers may look up the records only once they are saved, and may learn that an index
	// (or a term) is applied only once the messages up to it are readable: a read confirmed
	// at the commit index waits for appliedIndex, then serves up to lastSeq, so lastSeq goes
	// first. Published the other way round (appliedIndex before the records were saved), a
	// leader replaying many entries after a restart answered reads with the log as of before
	// them (make verify SEED=1 FAULTS=powerloss: nothing from seq 75 with 134 acknowledged).
	for _, ch := range touched {
		ch.lastSeq.Store(ch.log.LastSeq())
	}
	for _, a := range applied {
		a.ch.appliedIndex.Store(a.index)
		if a.term != 0 {
			a.ch.appliedTerm.Store(a.term)
		}
	}
	for _, ch := range touched {
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

// appliedTo is how far Apply took a channel: published once its records are saved.
type appliedTo struct {
	ch          *channel
	index, term uint64 // term 0: no entry of the batch carried one
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
