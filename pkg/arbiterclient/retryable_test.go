package arbiterclient

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A quota (the channel cap) is final; overload that asks to come back later is retried.
func TestResourceExhaustedIsRetriedOnlyWithARetryDelay(t *testing.T) {
	require.False(t, retryable(status.Error(codes.ResourceExhausted, "the cluster holds 5 channels, its cap")))
	st, err := status.New(codes.ResourceExhausted, "busy").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(0)})
	require.NoError(t, err)
	require.True(t, retryable(st.Err()))
	require.True(t, retryable(status.Error(codes.Unavailable, "no leader")))
	require.False(t, retryable(status.Error(codes.InvalidArgument, "bad id")))
}
