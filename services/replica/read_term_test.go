package replica

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// termHost is a raft host in which this node (1) leads every group in a given term.
type termHost struct {
	scriptedHost
	term uint64
}

// ReadIndex confirms at once: this host leads and its quorum agrees.
func (h *termHost) ReadIndex(context.Context, uint64) (uint64, error) { return 0, nil }

func (h *termHost) Status(_ context.Context, group uint64) (multiraft.Status, error) {
	return multiraft.Status{GroupID: group, NodeID: 1, Role: raft.StateLeader, Leader: 1, Term: h.term}, nil
}

// Issue 13, item 1: a replica just elected (term 3) whose apply lags serves no read until it
// has applied an entry of its own term. Before, Read checked only "I lead and my lease holds"
// and answered from whatever it had applied, so a client acknowledged seq 2 by the previous
// leader could read back one message.
func TestNewLeaderServesReadsOnlyAfterApplyingItsOwnTerm(t *testing.T) {
	store := raftstore.NewMemory()
	e := NewEngine(EngineConfig{NodeID: 1, Store: store, Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}})
	host := &termHost{term: 3}
	e.Attach(host, nil, nil)
	errs := e.Load(context.Background(), []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
	require.NoError(t, errs[0])
	batch := func(id string) []byte {
		b, err := sealBatch(&replicav1.LogBatch{Messages: []*triarchv1.MessageInput{{ClientMsgId: id, Payload: []byte(id)}},
			ProposerNodeId: 2, ProposalId: 1})
		require.NoError(t, err)
		return b
	}
	// Entries are in the raft log (reads take payloads from it) before they apply.
	apply := func(term, index uint64, data []byte) {
		ents := []*raftpb.Entry{{Index: proto.Uint64(index), Term: proto.Uint64(term), Data: data}}
		require.NoError(t, store.Save([]raftstore.Update{{GroupID: 7, Entries: ents}}))
		require.NoError(t, e.Apply([]multiraft.Committed{{GroupID: 7, Entries: ents}}))
	}
	// What the previous leader (term 2) committed; this replica has applied only the first.
	apply(2, 1, batch("a"))

	_, _, err := e.Read(context.Background(), "ch", 1, 100, 1<<20)
	require.ErrorIs(t, err, ErrTermNotApplied)
	require.Equal(t, codes.Unavailable, status.Code(dataStatus(err)), "the gateway retries it")

	apply(2, 2, batch("b"))
	_, _, err = e.Read(context.Background(), "ch", 1, 100, 1<<20)
	require.ErrorIs(t, err, ErrTermNotApplied, "still no entry of term 3")

	apply(3, 3, nil) // the empty entry raft appends on election, committed in term 3
	msgs, _, err := e.Read(context.Background(), "ch", 1, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, msgs, 2, "everything acknowledged before the election")
}
