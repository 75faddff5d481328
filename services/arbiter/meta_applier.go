package arbiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3/raftpb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/wait"
	"github.com/triarch-io/triarch/services/arbiter/fsm"
)

// metaGroup is the raft group id of the arbiter's metadata log: the arbiter is one group.
const metaGroup uint64 = 1

// metaApplier is the FSM behind the arbiter's raft log: it applies committed commands, hands
// results to the requests that proposed them, snapshots and restores the FSM, and wakes
// watchers. It implements multiraft.Applier and multiraft.Snapshotter.
type metaApplier struct {
	nodeID uint64
	fsm    *fsm.FSM
	log    metaLog

	applied atomic.Uint64

	waits *wait.Registry[applyResult]

	notifyMu sync.Mutex
	notify   chan struct{}
}

// metaLog is the part of the raft host the FSM proposes through (a *multiraft.Host).
type metaLog interface {
	Propose(ctx context.Context, groupID uint64, data []byte) (uint64, error)
	Status(ctx context.Context, groupID uint64) (multiraft.Status, error)
}

type applyResult struct {
	res any
	err error
}

func newMetaApplier(nodeID uint64, f *fsm.FSM) *metaApplier {
	return &metaApplier{nodeID: nodeID, fsm: f, waits: wait.New[applyResult](), notify: make(chan struct{})}
}

var (
	_ multiraft.Applier     = (*metaApplier)(nil)
	_ multiraft.Snapshotter = (*metaApplier)(nil)
)

// Applied implements multiraft.Applier: the FSM lives in memory, so after a restart it holds
// what the stored snapshot restored (see restoreFromStore) and raft replays the rest.
func (r *metaApplier) Applied(uint64) (uint64, error) { return r.applied.Load(), nil }

// Apply implements multiraft.Applier. A command the FSM refuses is still an applied entry:
// every member refuses it alike, and the proposer gets the error.
func (r *metaApplier) Apply(batch []multiraft.Committed) error {
	for _, c := range batch {
		for _, e := range c.Entries {
			if e.GetType() == raftpb.EntryType_EntryNormal && len(e.GetData()) > 0 {
				cmd, err := fsm.Decode(e.GetData())
				var res any
				if err == nil {
					res, err = r.fsm.Apply(cmd)
				}
				if id := cmd.GetProposalId(); id != 0 {
					r.waits.Trigger(id, e.GetIndex(), applyResult{res, err})
				}
			}
			r.applied.Store(e.GetIndex())
		}
	}
	r.notifyMu.Lock()
	close(r.notify)
	r.notify = make(chan struct{})
	r.notifyMu.Unlock()
	return nil
}

// changed is closed after the next applied batch.
func (r *metaApplier) changed() <-chan struct{} {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	return r.notify
}

// Snapshot implements multiraft.Snapshotter.
func (r *metaApplier) Snapshot(uint64) ([]byte, uint64, error) {
	// The apply stage calls this between Apply calls, so applied and the FSM agree.
	idx := r.applied.Load()
	data, err := r.fsm.Snapshot()
	return data, idx, err
}

// Restore implements multiraft.Snapshotter.
func (r *metaApplier) Restore(_ uint64, snap *raftpb.Snapshot) error {
	if len(snap.GetData()) > 0 {
		if err := r.fsm.Restore(snap.GetData()); err != nil {
			return fmt.Errorf("arbiter: restore snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
		}
	}
	r.applied.Store(snap.GetMetadata().GetIndex())
	return nil
}

// NotLeaderError is returned for writes on a member that does not lead; the handler attaches the
// leader's address.
type NotLeaderError struct {
	LeaderID uint64
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == 0 {
		return "this arbiter member is not the leader and no leader is known (election in progress)"
	}
	return fmt.Sprintf("this arbiter member is not the leader; member %d is", e.LeaderID)
}

// propose commits cmd through raft and returns the FSM's result for it.
func (r *metaApplier) propose(ctx context.Context, cmd *arbiterv1.Command) (any, error) {
	// Ids differ across restarts and the result is taken only from the entry at the index
	// raft gave this proposal (pkg/wait): a replayed entry of an earlier incarnation, or
	// another member's, cannot answer it.
	w := r.waits.Register()
	defer w.Close()
	cmd.ProposalId = w.ID()
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	index, err := r.log.Propose(ctx, metaGroup, data)
	if err != nil {
		var nl *multiraft.NotLeaderError
		if errors.As(err, &nl) {
			return nil, &NotLeaderError{LeaderID: nl.LeaderID}
		}
		return nil, err
	}
	res, err := w.Wait(ctx, index)
	if err != nil {
		return nil, err
	}
	return res.res, res.err
}

// leader returns the leader this member knows of and whether it is this member.
func (r *metaApplier) leader(ctx context.Context) (uint64, multiraft.Status, error) {
	st, err := r.log.Status(ctx, metaGroup)
	if err != nil {
		return 0, st, err
	}
	return st.Leader, st, nil
}
