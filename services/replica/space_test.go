package replica

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/pkg/chanlog"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// fakeDisk is a file system whose free space and clock the test sets.
type fakeDisk struct {
	free atomic.Uint64
	err  atomic.Pointer[error]
	now  atomic.Int64
}

func (d *fakeDisk) guard(min uint64) *SpaceGuard {
	return NewSpaceGuard(func() (uint64, error) {
		if e := d.err.Load(); e != nil {
			return 0, *e
		}
		return d.free.Load(), nil
	}, min, func() time.Time { return time.Unix(0, d.now.Load()) }, nil)
}

// set changes the free space and lets the next check measure it.
func (d *fakeDisk) set(free uint64) {
	d.free.Store(free)
	d.now.Add(int64(spaceCheckEvery))
}

// Issue 17 item 4: below the watermark appends answer ResourceExhausted with a retry delay,
// and come back by themselves only once a quarter more than the watermark is free (no
// flapping at the edge).
func TestAppendsStopBelowTheFreeSpaceWatermarkAndResume(t *testing.T) {
	e, f := newCoalesceEngine(t)
	f.releaseAll(t, nil)
	disk := &fakeDisk{}
	disk.set(1000)
	e.cfg.Space = disk.guard(100)

	_, err := e.Append(context.Background(), "ch", msgs("a"))
	require.NoError(t, err)

	disk.set(50)
	_, err = e.Append(context.Background(), "ch", msgs("b"))
	require.ErrorIs(t, err, ErrNoSpace)
	st := status.Convert(toStatus(err))
	require.Equal(t, codes.ResourceExhausted, st.Code())
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	require.Equal(t, spaceCheckEvery, delay, "the client is told when to look again")

	disk.set(110) // above the watermark, below the resume mark
	_, err = e.Append(context.Background(), "ch", msgs("b"))
	require.ErrorIs(t, err, ErrNoSpace)
	disk.set(125)
	res, err := e.Append(context.Background(), "ch", msgs("b"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), res[0].Seq, "the refused attempts took no seq")

	// A measure that fails is not "low": a healthy replica keeps serving.
	broken := errors.New("statfs: input/output error")
	disk.err.Store(&broken)
	disk.now.Add(int64(spaceCheckEvery))
	_, err = e.Append(context.Background(), "ch", msgs("c"))
	require.NoError(t, err)
}

// Reads go on while appends are refused.
func TestReadsGoOnWhileSpaceIsLow(t *testing.T) {
	store := raftstore.NewMemory()
	disk := &fakeDisk{}
	disk.set(10)
	e := NewEngine(EngineConfig{NodeID: 1, Store: store, Dedup: chanlog.Config{Window: time.Hour, MaxIDs: 1000},
		Space: disk.guard(100)})
	e.Attach(&termHost{term: 2}, nil, nil)
	errs := e.Load(context.Background(), []*replicav1.GroupSpec{{ChannelId: "ch", GroupId: 7,
		Replicas: []*replicav1.Peer{{NodeId: 1}, {NodeId: 2}, {NodeId: 3}}}})
	require.NoError(t, errs[0])
	data, err := sealBatch(&replicav1.LogBatch{Messages: msgs("a"), ProposerNodeId: 2, ProposalId: 1})
	require.NoError(t, err)
	ents := []*raftpb.Entry{{Index: proto.Uint64(1), Term: proto.Uint64(2), Data: data}}
	require.NoError(t, store.Save([]raftstore.Update{{GroupID: 7, Entries: ents}}))
	require.NoError(t, e.Apply([]multiraft.Committed{{GroupID: 7, Entries: ents}}))

	_, err = e.Append(context.Background(), "ch", msgs("b"))
	require.ErrorIs(t, err, ErrNoSpace)
	got, _, err := e.Read(context.Background(), "ch", 1, 10, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 1)
}
