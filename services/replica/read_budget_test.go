package replica

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// A read's byte budget counts whole messages, not payloads alone (issue 17 item 3): messages
// of one payload byte and 16 KiB of headers each used to come back a thousand at a time
// under a 1 MiB budget, 16 MiB in one answer.
func TestReadBudgetCountsWholeMessages(t *testing.T) {
	store := raftstore.NewMemory()
	e := NewEngine(EngineConfig{NodeID: 1, Store: store, Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}})
	e.Attach(&termHost{term: 2}, nil, nil)
	errs := e.Load(context.Background(), []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
	require.NoError(t, errs[0])
	heavy := map[string]string{}
	for i := range 16 {
		heavy[fmt.Sprintf("h%02d", i)] = strings.Repeat("x", 1000)
	}
	var in []*triarchv1.MessageInput
	for i := range 20 {
		in = append(in, &triarchv1.MessageInput{ClientMsgId: fmt.Sprint(i), Payload: []byte("p"), Headers: heavy})
	}
	data, err := sealBatch(&replicav1.LogBatch{Messages: in, ProposerNodeId: 2, ProposalId: 1})
	require.NoError(t, err)
	ents := []*raftpb.Entry{{Index: proto.Uint64(1), Term: proto.Uint64(2), Data: data}}
	require.NoError(t, store.Save([]raftstore.Update{{GroupID: 7, Entries: ents}}))
	require.NoError(t, e.Apply([]multiraft.Committed{{GroupID: 7, Entries: ents}}))

	const budget = 64 << 10
	msgs, _, err := e.Read(context.Background(), "ch", 1, 100, budget)
	require.NoError(t, err)
	size := 0
	for _, m := range msgs[:len(msgs)-1] {
		size += proto.Size(m)
	}
	require.Less(t, size, budget, "all but the last message fit the budget")
	require.Less(t, len(msgs), 20, "the budget cut the answer short")
	require.GreaterOrEqual(t, len(msgs), 3)

	one, _, err := e.Read(context.Background(), "ch", 1, 100, 1)
	require.NoError(t, err)
	require.Len(t, one, 1, "at least one message, whatever the budget")
}
