package verify

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// The REST client speaks the gateway's routes and JSON, and reports errors with the gRPC code
// the gateway put in the body (or the HTTP status stands for), so that the workload tells a
// fault's Unavailable from a bug's InvalidArgument as it does for gRPC.
func TestRESTClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/channels/c1/messages":
			b, _ := io.ReadAll(r.Body)
			if !strings.Contains(string(b), `"clientMsgId":"m1"`) {
				http.Error(w, `{"code":3,"message":"bad body `+string(b)+`"}`, http.StatusBadRequest)
				return
			}
			_, _ = io.WriteString(w, `{"results":[{"seq":"7","clientMsgId":"m1"}],"unknownField":1}`)
		case r.Method == http.MethodGet && r.URL.Path == "/v1/channels/c1/messages":
			require.Equal(t, "5", r.URL.Query().Get("from_seq"))
			require.Equal(t, "10", r.URL.Query().Get("limit"))
			_, _ = io.WriteString(w, `{"messages":[{"seq":"5","clientMsgId":"m0"}]}`)
		case r.URL.Path == "/v1/channels/down/messages":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"code":14,"message":"no leader"}`)
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, `<html>proxy</html>`)
		}
	}))
	defer srv.Close()
	r := newRESTClient(strings.TrimPrefix(srv.URL, "http://"))
	ctx := context.Background()

	sent, err := r.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: "c1",
		Messages: []*triarchv1.MessageInput{{ClientMsgId: "m1", Payload: []byte("m1")}}})
	require.NoError(t, err)
	require.Equal(t, uint64(7), sent.GetResults()[0].GetSeq())
	read, err := r.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "c1", FromSeq: 5, Limit: 10})
	require.NoError(t, err)
	require.Equal(t, "m0", read.GetMessages()[0].GetClientMsgId())

	_, err = r.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "down", FromSeq: 1, Limit: 10})
	require.Equal(t, codes.Unavailable, status.Code(err))
	_, err = r.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: "c1"})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = r.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "other", FromSeq: 1, Limit: 10})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	srv.Close()
	_, err = r.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "c1", FromSeq: 1, Limit: 10})
	require.Equal(t, codes.Unavailable, status.Code(err), "a closed server: %v", err)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = r.ReadMessages(cctx, &triarchv1.ReadMessagesRequest{ChannelId: "c1", FromSeq: 1, Limit: 10})
	require.Error(t, err)
}
