package replica

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// heldStore holds SaveState while armed, as a slow disk does (the FUSE mount of the power-loss
// runs made each fsync take long).
type heldStore struct {
	Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *heldStore) SaveState(w []raftstore.StateWrite) error {
	if s.armed.Load() {
		s.entered <- struct{}{}
		<-s.release
	}
	return s.Store.SaveState(w)
}

// commitHost is a host where this node leads in term 3 and a quorum confirms reads at commit.
type commitHost struct {
	termHost
	commit uint64
}

func (h *commitHost) ReadIndex(context.Context, uint64) (uint64, error) { return h.commit, nil }

// A read confirmed at the commit index must see every message up to it. Apply used to publish
// the applied index and term before saving the batch's records and storing lastSeq, so a read
// arriving in between passed both checks and served the log as of before the batch: a leader
// replaying many entries after a restart answered "nothing from seq 75" with 134 messages
// acknowledged (make verify SEED=1 FAULTS=powerloss, the linearizability check).
func TestReadDuringAnApplySeesTheWholeBatchOrWaits(t *testing.T) {
	mem := raftstore.NewMemory()
	store := &heldStore{Store: mem, entered: make(chan struct{}), release: make(chan struct{})}
	e := NewEngine(EngineConfig{NodeID: 1, Store: store, Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}})
	e.Attach(&commitHost{termHost: termHost{term: 3}, commit: 2}, nil, nil)
	errs := e.Load(context.Background(), []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
	require.NoError(t, errs[0])
	data, err := sealBatch(&replicav1.LogBatch{Messages: msgs("a", "b"), ProposerNodeId: 2, ProposalId: 1})
	require.NoError(t, err)
	// What the previous leader committed, then the new leader's own empty entry.
	ents := []*raftpb.Entry{
		{Index: proto.Uint64(1), Term: proto.Uint64(2), Data: data},
		{Index: proto.Uint64(2), Term: proto.Uint64(3)},
	}
	require.NoError(t, mem.Save([]raftstore.Update{{GroupID: 7, Entries: ents}}))

	store.armed.Store(true)
	applied := make(chan error, 1)
	go func() { applied <- e.Apply([]multiraft.Committed{{GroupID: 7, Entries: ents}}) }()
	<-store.entered // the batch is applied in memory, its records not yet saved

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	got, _, err := e.Read(ctx, "ch", 1, 100, 1<<20)
	cancel()
	if err == nil {
		require.Len(t, got, 2, "a read that answers while the batch is being saved must hold all of it")
	}

	store.armed.Store(false)
	close(store.release)
	require.NoError(t, <-applied)
	got, _, err = e.Read(context.Background(), "ch", 1, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 2)
}
