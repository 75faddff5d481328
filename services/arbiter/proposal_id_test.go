package arbiter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/services/arbiter/fsm"
)

// scriptedLog stands for the raft host: its Propose runs a script that applies entries
// through the replicated FSM, as the apply stage would, and returns the index raft gave the
// proposal.
type scriptedLog struct {
	propose func(ctx context.Context, data []byte) (uint64, error)
	leader  uint64
}

func (s scriptedLog) Propose(ctx context.Context, _ uint64, data []byte) (uint64, error) {
	return s.propose(ctx, data)
}

func (s scriptedLog) Status(context.Context, uint64) (multiraft.Status, error) {
	return multiraft.Status{GroupID: metaGroup, Leader: s.leader}, nil
}

// Regression (issue 13, item 6): proposal ids restarted with every process, so an entry of
// the previous incarnation, replayed after a restart, answered the new request that drew the
// same id with the old command's result. The script applies such an entry (the same id, at
// index 2, registering another node) before the request's own entry at index 3: the request
// must get its own result.
func TestProposeAfterRestartGetsItsOwnResult(t *testing.T) {
	r := newMetaApplier(1, fsm.New())
	register := func(node uint64) *arbiterv1.Command {
		return fsm.RegisterNodeCommand(node, arbiterv1.NodeRole_NODE_ROLE_REPLICA, fmt.Sprintf("10.0.0.%d:7600", node), "", time.Now())
	}
	r.log = scriptedLog{propose: func(_ context.Context, data []byte) (uint64, error) {
		mine, err := fsm.Decode(data)
		if err != nil {
			return 0, err
		}
		old := register(9)                    // from before the restart
		old.ProposalId = mine.GetProposalId() // the id the previous incarnation also drew
		oldData, err := fsm.Encode(old)
		if err != nil {
			return 0, err
		}
		for i, d := range [][]byte{oldData, data} {
			if err := r.Apply([]multiraft.Committed{{GroupID: metaGroup, Entries: []*raftpb.Entry{{
				Index: proto.Uint64(uint64(2 + i)), Term: proto.Uint64(2), Data: d}}}}); err != nil {
				return 0, err
			}
		}
		return 3, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.propose(ctx, register(4))
	require.NoError(t, err, "the request's own result never arrived")
	registered, ok := res.(fsm.RegisterNodeResult)
	require.True(t, ok, "result %T", res)
	require.Equal(t, uint64(4), registered.Node.ID, "answered with the replayed entry's result")
}
