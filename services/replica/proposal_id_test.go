package replica

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// scriptedHost is a Proposer whose Propose runs a script standing for the raft host: it
// hands the engine committed entries through Apply, as the apply stage would.
type scriptedHost struct {
	propose func(ctx context.Context, group uint64, data []byte) (uint64, error)
}

func (s *scriptedHost) LoadGroups(context.Context, []multiraft.GroupSpec) error { return nil }
func (s *scriptedHost) UnloadGroup(context.Context, uint64) error               { return nil }
func (s *scriptedHost) Campaign(context.Context, uint64) error                  { return nil }
func (s *scriptedHost) TransferLeader(context.Context, uint64, uint64) error    { return nil }
func (s *scriptedHost) Campaigns(context.Context, []uint64) (map[uint64]error, error) {
	return nil, errors.New("scripted host: no campaigns")
}
func (s *scriptedHost) Statuses(context.Context, []uint64) (map[uint64]multiraft.Status, error) {
	return nil, errors.New("scripted host: no statuses")
}
func (s *scriptedHost) Admit(context.Context, uint64) error {
	return errors.New("scripted host: no admit")
}
func (s *scriptedHost) ResetGroup(context.Context, uint64) error {
	return errors.New("scripted host: no reset")
}
func (s *scriptedHost) WaitCaughtUp(context.Context, uint64, uint64) error {
	return errors.New("scripted host: no catch-up")
}
func (s *scriptedHost) ReadIndex(context.Context, uint64) (uint64, error) {
	return 0, errors.New("scripted host: no reads")
}
func (s *scriptedHost) ProposeConfChange(context.Context, uint64, *raftpb.ConfChangeV2) (uint64, error) {
	return 0, errors.New("scripted host: no membership changes")
}
func (s *scriptedHost) Propose(ctx context.Context, group uint64, data []byte) (uint64, error) {
	return s.propose(ctx, group, data)
}
func (s *scriptedHost) Status(_ context.Context, group uint64) (multiraft.Status, error) {
	return multiraft.Status{GroupID: group, NodeID: 1, Role: raft.StateLeader, Leader: 1}, nil
}

// Regression (found by tests/TestReplicaWholeClusterSIGKILLThenAppends): the engine routes
// an applied entry's results to the waiting Append by (ProposerNodeId, ProposalId). Ids
// used to restart at 1 in every process, so after a restart an entry this node proposed in
// its previous life and applied only now (everything after its last checkpoint: SIGKILL
// writes none, and the stored commit index is lazy) answered an unrelated new Append with
// its own seqs, and the new entry's result was dropped. Ids now start at random and Append
// only takes the result of the index raft committed for it.
//
// The script forces the old id to recur: while Append's proposal waits, the apply stage
// first applies entry 2, proposed under the same id by this node before a restart, then
// the new entry at 3. Append must answer with the new entry's seq, not time out or take the
// old one's.
func TestAppendAfterRestartGetsItsOwnResults(t *testing.T) {
	e := NewEngine(EngineConfig{NodeID: 1, Store: raftstore.NewMemory(), Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}})
	// Ids start at a random value per process; the script makes the old id recur (the entry
	// of the previous process carries the id the new proposal drew), so that the check of
	// the committed index is what must reject the re-applied entry's results.
	host := &scriptedHost{propose: func(_ context.Context, group uint64, data []byte) (uint64, error) {
		var mine replicav1.LogBatch
		if err := proto.Unmarshal(data, &mine); err != nil {
			return 0, err
		}
		old, err := proto.Marshal(&replicav1.LogBatch{
			Messages:       []*triarchv1.MessageInput{{ClientMsgId: "before-restart", Payload: []byte("old")}},
			ProposeTime:    timestamppb.Now(),
			ProposerNodeId: 1,
			ProposalId:     mine.GetProposalId(), // the id the previous process also drew
		})
		if err != nil {
			return 0, err
		}
		for i, d := range [][]byte{old, data} {
			err := e.Apply([]multiraft.Committed{{GroupID: group, Entries: []*raftpb.Entry{{
				Index: proto.Uint64(uint64(2 + i)), Term: proto.Uint64(2), Data: d}}}})
			if err != nil {
				return 0, err
			}
		}
		return 3, nil
	}}
	e.Attach(host, nil, nil)
	errs := e.Load(context.Background(), []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
	require.NoError(t, errs[0])

	// A lost result shows as a timeout, not a hung test.
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := e.Append(actx, "ch", []*triarchv1.MessageInput{{ClientMsgId: "after-restart", Payload: []byte("new")}})
	require.NoError(t, err, "the new entry's own result never reached Append")
	seq, ok := e.byID["ch"].log.Lookup("after-restart")
	require.True(t, ok)
	require.Equal(t, uint64(2), seq, "the state machine numbered the new message 2")
	require.Equal(t, []chanlog.Result{{Seq: 2}}, rs, "Append acknowledged the new message with another entry's result")
}
