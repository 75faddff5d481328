package multiraft_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// fsmState is a group's state machine in an fsmApplier: the data of every proposal applied,
// in order, and the index of the last entry applied.
type fsmState struct {
	Applied uint64
	Data    []string
}

// fsmApplier is an Applier and Snapshotter whose state lives in memory only, as the arbiter's
// does: a new fsmApplier after a restart knows nothing, and the host must restore it from the
// stored snapshot. Apply insists on contiguous, exactly-once delivery after the last entry
// applied or restored.
type fsmApplier struct {
	mu        sync.Mutex
	groups    map[uint64]*fsmState
	snapshots map[uint64]int
	restores  map[uint64]int
}

var _ multiraft.Snapshotter = (*fsmApplier)(nil)

func newFSMApplier() *fsmApplier {
	return &fsmApplier{groups: make(map[uint64]*fsmState), snapshots: make(map[uint64]int), restores: make(map[uint64]int)}
}

func (a *fsmApplier) group(id uint64) *fsmState {
	st := a.groups[id]
	if st == nil {
		st = &fsmState{}
		a.groups[id] = st
	}
	return st
}

func (a *fsmApplier) Apply(batch []multiraft.Committed) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range batch {
		st := a.group(c.GroupID)
		for _, e := range c.Entries {
			if want := max(st.Applied, multiraft.BootstrapIndex) + 1; e.GetIndex() != want {
				return fmt.Errorf("group %d: applied entry %d, want %d", c.GroupID, e.GetIndex(), want)
			}
			st.Applied = e.GetIndex()
			if e.GetType() == raftpb.EntryType_EntryNormal && len(e.GetData()) > 0 {
				st.Data = append(st.Data, string(e.GetData()))
			}
		}
	}
	return nil
}

func (a *fsmApplier) Applied(groupID uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.group(groupID).Applied, nil
}

func (a *fsmApplier) Snapshot(groupID uint64) ([]byte, uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.group(groupID)
	data, err := json.Marshal(st)
	a.snapshots[groupID]++
	return data, st.Applied, err
}

func (a *fsmApplier) Restore(groupID uint64, snap *raftpb.Snapshot) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var st fsmState
	if err := json.Unmarshal(snap.GetData(), &st); err != nil {
		return fmt.Errorf("group %d: decode snapshot: %w", groupID, err)
	}
	if idx := snap.GetMetadata().GetIndex(); st.Applied != idx {
		return fmt.Errorf("group %d: snapshot at %d holds a state at %d", groupID, idx, st.Applied)
	}
	a.groups[groupID] = &st
	a.restores[groupID]++
	return nil
}

func (a *fsmApplier) state(groupID uint64) fsmState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.group(groupID)
	return fsmState{Applied: st.Applied, Data: slices.Clone(st.Data)}
}

func (a *fsmApplier) counts(groupID uint64) (snapshots, restores int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snapshots[groupID], a.restores[groupID]
}

// plainApplier hides the Snapshotter of the Applier it wraps.
type plainApplier struct{ multiraft.Applier }

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
