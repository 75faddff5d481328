package replica

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// Issue 13, item 1: a leader deposed behind its back serves no read. Node 1 leads and is cut
// off; nodes 2 and 3 elect node 2 (as an ordered election, a transfer or a move would) and
// commit more. Node 1 still believes it leads, in its term, with everything of that term
// applied; before ReadIndex it answered a read with 5 messages while 8 were acknowledged.
func TestDeposedLeaderServesNoStaleRead(t *testing.T) {
	c := newClusterOf(t, 3)
	const ch = "deposed"
	c.loadOn(c.specOf(ch, 44, false, 1, 2, 3), 1, 2, 3)
	c.elect(1, ch)
	c.appendN(1, ch, "before", 5)

	c.cut.Store(1)
	c.elect(2, ch)
	c.appendN(2, ch, "after", 3)

	rctx, cancel := context.WithTimeout(ctx(t), 5*time.Second)
	defer cancel()
	resp, err := c.data[0].Read(rctx, &replicav1.ReadRequest{ChannelId: ch, FromSeq: 1, Limit: 100})
	require.Error(t, err, "the deposed leader answered a read with %d messages, 8 acknowledged", len(resp.GetMessages()))
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	// Once it hears of the new term it says who leads.
	c.cut.Store(0)
	require.Eventually(t, func() bool {
		_, err := c.data[0].Read(ctx(t), &replicav1.ReadRequest{ChannelId: ch, FromSeq: 1, Limit: 100})
		return status.Code(err) == codes.FailedPrecondition
	}, 10*time.Second, 20*time.Millisecond)
	requireContiguous(t, readAll(t, c.data[1], ch), 8)
}
