package replica

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// lateInstallHost is a raft host whose shards are slow: a load's install is queued, the
// caller's context ends before it runs, and the install lands anyway, as multiraft.Host's
// does ("the install may still run later"). Any call made with a context that has already
// ended fails without reaching the shard.
type lateInstallHost struct {
	scriptedHost
	mu        sync.Mutex
	installed map[uint64]bool
}

func (h *lateInstallHost) LoadGroups(ctx context.Context, specs []multiraft.GroupSpec) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sp := range specs {
		h.installed[sp.GroupID] = true // queued: it will run
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

func (h *lateInstallHost) Status(ctx context.Context, group uint64) (multiraft.Status, error) {
	if ctx.Err() != nil {
		return multiraft.Status{}, context.Cause(ctx)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.installed[group] {
		return multiraft.Status{}, multiraft.ErrGroupNotFound
	}
	return multiraft.Status{GroupID: group, NodeID: 1, Role: raft.StateFollower}, nil
}

// Regression (issue 12): a load whose caller's context ended while the install was queued
// probed the host with that same ended context, took the failed probe for a failed install,
// and forgot the channel; the install landed later and the first committed entry for the
// group made Apply fail with "not loaded", which stops the whole raft host. A load now either
// completes or is undone, whatever happens to the caller.
func TestLoadWhoseCallerGaveUpIsNotHalfRegistered(t *testing.T) {
	e := NewEngine(EngineConfig{NodeID: 1, Store: raftstore.NewMemory(), Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000}})
	host := &lateInstallHost{installed: map[uint64]bool{}}
	e.Attach(host, nil, nil)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller gave up while the load was queued
	errs := e.Load(ctx, []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})

	host.mu.Lock()
	installed := host.installed[7]
	host.mu.Unlock()
	require.True(t, installed, "the fake must have queued the install")
	if errs[0] != nil {
		t.Logf("load reported %v", errs[0])
	}
	require.Contains(t, e.Loaded(), "ch", "the group is in the host, so the engine must know the channel")

	entry, err := proto.Marshal(&replicav1.LogBatch{Messages: []*triarchv1.MessageInput{{ClientMsgId: "m", Payload: []byte("x")}},
		ProposerNodeId: 2, ProposalId: 1})
	require.NoError(t, err)
	require.NoError(t, e.Apply([]multiraft.Committed{{GroupID: 7, Entries: []*raftpb.Entry{{
		Index: proto.Uint64(1), Term: proto.Uint64(1), Data: entry}}}}), "an entry of the installed group applies")
}
