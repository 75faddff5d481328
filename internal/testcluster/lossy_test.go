package testcluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/internal/lossyfs"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/testutil"
)

// Replicas on lossy disks lose nothing acknowledged to a power loss of all of them at once,
// then of one of them (an acknowledgement waits for a majority's fsync), and a wiped lossy disk
// comes back empty and catches up.
//
// Each replica is cut only once it has written since its last start: a replica cut before
// that does not start again (Badger creates a new value log file at every open, and a power
// loss before anything synced it leaves the file empty, which the next open refuses; see the
// README's Verification section). That is the store's bug, not this harness's, and the
// verification suite's power losses find it.
//
// It runs on loopback and in network namespaces (Netns(), skipped without root), where every
// process holds a copy of the mounts made before it started: a power cut must not wait for
// those copies to go (it hung there once).
func TestPowerLossOfLossyReplicas(t *testing.T) {
	for name, mode := range map[string]testcluster.Option{"loopback": testcluster.Processes(), "netns": testcluster.Netns()} {
		t.Run(name, func(t *testing.T) { testPowerLoss(t, mode) })
	}
}

func testPowerLoss(t *testing.T, mode testcluster.Option) {
	if testing.Short() {
		t.Skip("builds the binary and runs a cluster of processes on FUSE mounts")
	}
	if err := testcluster.LossyDisksAvailable(); errors.Is(err, lossyfs.ErrUnavailable) {
		t.Skipf("lossy disks need FUSE: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	c := testcluster.Start(t, mode, testcluster.LossyDisks(), testcluster.Channelctls(1), testcluster.WithGateway())
	ctx := testutil.Context(t, 4*time.Minute)
	l := c.NewAckLedger(t, ctx, 3, "pl")
	l.SendAll("before")
	var dropped int64
	for _, id := range c.IDs(testcluster.KindReplica) {
		st := c.PowerLoss(testcluster.KindReplica, id)
		require.NotZero(t, st.Fsyncs, "replica %d never synced its lossy disk", id)
		t.Logf("replica %d's power cut: %+v", id, st)
		dropped += st.DroppedBytes
	}
	// Badger always has something unsynced (its files' preallocated tails, for one): a cut
	// that drops nothing is no power loss.
	require.NotZero(t, dropped, "the power cuts discarded nothing")
	for _, id := range c.IDs(testcluster.KindReplica) {
		c.Restart(testcluster.KindReplica, id)
	}
	l.SendAll("all-back")
	waitCaughtUp(t, ctx, c, l, 2)
	t.Logf("replica 2's power cut: %+v", c.PowerLoss(testcluster.KindReplica, 2))
	l.SendAll("one-down")
	c.Restart(testcluster.KindReplica, 2)
	l.SendAll("one-back")
	c.Wipe(testcluster.KindReplica, 3)
	c.Restart(testcluster.KindReplica, 3)
	l.SendAll("wiped")
	l.Verify()
}

// waitCaughtUp waits until replica node applies every channel of the ledger up to its last
// acknowledged message (so it has written since it started).
func waitCaughtUp(t *testing.T, ctx context.Context, c *testcluster.Cluster, l *testcluster.AckLedger, node uint64) {
	t.Helper()
	cl := replicav1.NewReplicaControlServiceClient(c.Dial(c.Addr(testcluster.KindReplica, node)))
	for i := range l.Len() {
		want, err := c.ReadAll(ctx, l.Name(i))
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			resp, err := cl.GetGroupStatus(ctx, &replicav1.GetGroupStatusRequest{ChannelIds: []string{l.Name(i)}})
			return err == nil && resp.GetResults()[0].GetStatus().GetLastSeq() >= uint64(len(want))
		}, time.Minute, 50*time.Millisecond, "replica %d never caught up on %s", node, l.Name(i))
	}
}
