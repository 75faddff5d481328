package replica

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/pkg/multiraft"
)

// The failover issue, item 4: overload is not death. A replica whose proposal queue or append
// backlog is full answers ResourceExhausted with a retry delay, not Unavailable, which the
// gateway would retry at once and read as a leader gone.
func TestOverloadIsResourceExhaustedWithARetryDelay(t *testing.T) {
	st := status.Convert(toStatus(fmt.Errorf("replica: append to c: %w", multiraft.ErrOverloaded)))
	require.Equal(t, codes.ResourceExhausted, st.Code(), st.Message())
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	require.Equal(t, overloadRetryDelay, delay)
	require.Equal(t, codes.ResourceExhausted, status.Code(dataStatus(multiraft.ErrOverloaded)), "the data plane too")
}
