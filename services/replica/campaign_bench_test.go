package replica

import (
	"fmt"
	"testing"
	"time"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// BenchmarkCampaign times one batched Campaign call that makes a replica take over N groups
// from a live leader, as a failover's campaign step does: pre-vote and vote round trips with
// the votes made durable, for all groups at once. Metric: ms per call.
func BenchmarkCampaign(b *testing.B) {
	for _, groups := range []int{1, 167, 1667} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			c := newClusterOf(b, 3)
			var total time.Duration
			for n := range b.N {
				// Fresh groups each time: every replica's log is the same, as after a
				// failover's choice of the most up-to-date candidate.
				specs := make([]*replicav1.GroupSpec, groups)
				orders := make([]*replicav1.CampaignOrder, groups)
				for i := range specs {
					id := fmt.Sprintf("c%d-%d", n, i)
					specs[i] = c.spec(id, uint64(1+n*groups+i))
					orders[i] = &replicav1.CampaignOrder{ChannelId: id}
				}
				c.load(specs...)
				start := time.Now()
				resp, err := c.ctl[0].Campaign(ctx(c.t), &replicav1.CampaignRequest{Orders: orders})
				total += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range resp.GetResults() {
					if !r.GetLeader() {
						b.Fatalf("%s: not leader after campaign: %v (status %v)", r.GetChannelId(), r.GetError(), r.GetStatus())
					}
				}
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/campaign")
		})
	}
}
