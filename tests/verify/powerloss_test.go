package verify

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/triarch-io/triarch/internal/lossyfs"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/internal/verify"
)

// withPowerLoss puts the replicas on lossy disks when power losses are among the kinds; where
// FUSE is unavailable it drops them from "all" (and says so) or skips the suite when they were
// named.
func withPowerLoss(t *testing.T, kinds []verify.Fault, all bool) ([]verify.Fault, []testcluster.Option) {
	t.Helper()
	if !slices.Contains(kinds, verify.Powerloss) {
		return kinds, nil
	}
	err := testcluster.LossyDisksAvailable()
	switch {
	case err == nil:
		return kinds, []testcluster.Option{testcluster.LossyDisks()}
	case errors.Is(err, lossyfs.ErrUnavailable) && all:
		kinds = slices.DeleteFunc(kinds, func(f verify.Fault) bool { return f == verify.Powerloss })
		t.Logf("power losses need FUSE (%v): running %v only", err, kinds)
		return kinds, nil
	case errors.Is(err, lossyfs.ErrUnavailable):
		t.Skipf("power losses need FUSE: %v", err)
	}
	t.Fatalf("probing FUSE for lossy disks: %v", err)
	return nil, nil
}

// powerLosses counts what the power losses did.
type powerLosses struct {
	events, replicas int
	dropped          int64
}

// begin cuts the power of the event's replica, or of every replica.
func (p *powerLosses) begin(c *testcluster.Cluster, e verify.Event) string {
	p.events++
	var (
		lost   int64
		detail []string
	)
	for _, id := range powerLossTargets(c, e) {
		st := c.PowerLoss(testcluster.KindReplica, id)
		p.replicas++
		lost += st.DroppedBytes
		detail = append(detail, fmt.Sprintf("replica-%d lost %d unsynced bytes (%d fsyncs since mounted)", id, st.DroppedBytes, st.Fsyncs))
	}
	p.dropped += lost
	return ": " + fmt.Sprint(detail)
}

// end restarts the replicas whose power was cut.
func (p *powerLosses) end(c *testcluster.Cluster, e verify.Event) {
	for _, id := range powerLossTargets(c, e) {
		c.Restart(testcluster.KindReplica, id)
	}
}

func powerLossTargets(c *testcluster.Cluster, e verify.Event) []uint64 {
	if e.All {
		return c.IDs(testcluster.KindReplica)
	}
	return []uint64{e.Target.ID}
}
