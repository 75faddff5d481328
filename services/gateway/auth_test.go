package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/auth"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/gateway"
)

// withAuth returns s with a gateway of its own in place of s's, routing through channelctls
// and checking callers against the API tokens of tokens (a token file's JSON).
func withAuth(t *testing.T, s *stack, tokens string, channelctls ...string) *stack {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(tokens), 0o600))
	return withGateway(t, s, func(c *gateway.Config) { c.Auth = auth.Config{TokenFile: path} }, channelctls...)
}

// withGateway returns s with a gateway of its own in place of s's, routing through
// channelctls, configured by set.
func withGateway(t *testing.T, s *stack, set func(*gateway.Config), channelctls ...string) *stack {
	t.Helper()
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "gateway-variant", NodeID: 3, LogWriter: io.Discard,
		Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) })
	cfg := gateway.Config{
		Common:   process.Common{NodeID: 3, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"},
		HTTPAddr: "127.0.0.1:0", DefaultReplication: 3, Channelctls: channelctls,
	}
	set(&cfg)
	gw, err := gateway.Start(ctx, cfg, tel)
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		http.DefaultClient.CloseIdleConnections()
		require.NoError(t, gw.Stop(sctx))
	})
	conn, err := grpc.NewClient(gw.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	n := *s
	n.gw, n.conn, n.api, n.rest = gw, conn, triarchv1.NewTriarchServiceClient(conn), "http://"+gw.HTTPAddr()
	return &n
}

const testTokens = `{"tokens": [
  {"name": "chat", "token": "chat-secret", "grants": [{"channels": "room-*", "actions": ["send", "read", "subscribe"]}]},
  {"name": "reader", "token": "reader-secret", "grants": [{"channels": "room-1", "actions": ["read"]}]},
  {"name": "ops", "token": "ops-secret", "grants": [{"channels": "*", "actions": ["create", "admin"]}]}]}`

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// Every RPC of the public API refuses a caller without credentials, or with unknown ones,
// before doing anything: the list is the service's own descriptor, so an RPC added later
// without its check fails here.
func TestEveryPublicRPCAuthenticates(t *testing.T) {
	s := withAuth(t, newStack(t), testTokens)
	desc := triarchv1.TriarchService_ServiceDesc
	for _, cred := range []string{"", "Bearer wrong", "Basic Y2hhdDpjaGF0"} {
		ctx := tctx(t)
		if cred != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", cred)
		}
		for _, m := range desc.Methods {
			// An empty message decodes as any request type; an error is never decoded.
			err := s.conn.Invoke(ctx, "/"+desc.ServiceName+"/"+m.MethodName, &triarchv1.GetClusterRequest{},
				&triarchv1.GetClusterResponse{})
			require.Equal(t, codes.Unauthenticated, status.Code(err), "%s with %q: %v", m.MethodName, cred, err)
		}
		for _, sd := range desc.Streams {
			st, err := s.conn.NewStream(ctx, &sd, "/"+desc.ServiceName+"/"+sd.StreamName)
			require.NoError(t, err)
			require.NoError(t, st.SendMsg(&triarchv1.SubscribeMessagesRequest{ChannelId: "room-1"}))
			require.NoError(t, st.CloseSend())
			err = st.RecvMsg(&triarchv1.SubscribeMessagesResponse{})
			require.Equal(t, codes.Unauthenticated, status.Code(err), "%s with %q: %v", sd.StreamName, cred, err)
		}
	}
	require.False(t, s.ctl.known("room-1"), "nothing reached the cluster")
}

// Each identity may do what its grants name, on the channels they match, and nothing else.
func TestGrantsAuthorizePerChannelAndAction(t *testing.T) {
	base := newStack(t)
	s := withAuth(t, base, testTokens, base.ctl.addr)
	ctx := tctx(t)
	chat, reader, ops := bearer(ctx, "chat-secret"), bearer(ctx, "reader-secret"), bearer(ctx, "ops-secret")
	send := func(ctx context.Context, ch string) error {
		_, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch,
			Messages: []*triarchv1.MessageInput{{ClientMsgId: "m1", Payload: []byte("hi")}}})
		return err
	}
	denied := func(err error, who, what string) {
		t.Helper()
		st := status.Convert(err)
		require.Equal(t, codes.PermissionDenied, st.Code(), err)
		require.Contains(t, st.Message(), who+" may not "+what)
	}

	require.NoError(t, send(chat, "room-1"), "send implies implicit creation")
	denied(send(chat, "lobby"), "chat", "send channel lobby")
	_, err := s.api.ReadMessages(chat, &triarchv1.ReadMessagesRequest{ChannelId: "room-1"})
	require.NoError(t, err)
	_, err = s.api.CreateChannel(chat, &triarchv1.CreateChannelRequest{ChannelId: "room-2"})
	denied(err, "chat", "create channel room-2")
	_, err = s.api.GetCluster(chat, &triarchv1.GetClusterRequest{})
	denied(err, "chat", "admin")

	resp, err := s.api.ReadMessages(reader, &triarchv1.ReadMessagesRequest{ChannelId: "room-1"})
	require.NoError(t, err)
	require.Len(t, resp.GetMessages(), 1)
	denied(send(reader, "room-1"), "reader", "send channel room-1")
	_, err = s.api.ReadMessages(reader, &triarchv1.ReadMessagesRequest{ChannelId: "room-2"})
	denied(err, "reader", "read channel room-2")
	sub, err := s.api.SubscribeMessages(reader, &triarchv1.SubscribeMessagesRequest{ChannelId: "room-1"})
	require.NoError(t, err)
	_, err = sub.Recv()
	denied(err, "reader", "subscribe channel room-1")

	cr, err := s.api.CreateChannel(ops, &triarchv1.CreateChannelRequest{ChannelId: "lobby"})
	require.NoError(t, err)
	require.True(t, cr.GetCreated())
	denied(send(ops, "lobby"), "ops", "send channel lobby")
}

// REST carries the same credentials in the Authorization header: 401 with a Bearer challenge
// without them, 403 for what the grants do not allow.
func TestRESTAuthorization(t *testing.T) {
	base := newStack(t)
	s := withAuth(t, base, testTokens, base.ctl.addr)
	post := func(token, channel string) (*http.Response, map[string]any) {
		req, err := http.NewRequestWithContext(tctx(t), http.MethodPost, s.rest+"/v1/channels/"+channel+"/messages",
			strings.NewReader(`{"messages": [{"client_msg_id": "r1", "payload": "aGk="}]}`))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp, body
	}
	resp, body := post("", "room-1")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, body)
	require.Equal(t, `Bearer realm="triarch"`, resp.Header.Get("WWW-Authenticate"))
	require.Contains(t, body["message"], "Authorization: Bearer")
	resp, body = post("reader-secret", "room-1")
	require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	resp, body = post("chat-secret", "room-1")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
}

// Quotas through the whole gateway: a caller's second subscription is refused while its first
// is open, and a caller over its request rate gets 429 with Retry-After over REST.
func TestQuotasThroughTheGateway(t *testing.T) {
	base := newStack(t)
	s := withGateway(t, base, func(c *gateway.Config) {
		c.Quota = gateway.QuotaConfig{MaxSubscriptions: 1, RequestsPerSecond: 0.01, RequestBurst: 3}
	}, base.ctl.addr)
	ctx := tctx(t)
	_, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: "q",
		Messages: []*triarchv1.MessageInput{{ClientMsgId: "m1", Payload: []byte("hi")}}})
	require.NoError(t, err)
	first, err := s.api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: "q", FromSeq: 1})
	require.NoError(t, err)
	got, err := first.Recv()
	require.NoError(t, err)
	require.NotEmpty(t, got.GetMessages())
	second, err := s.api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: "q", FromSeq: 1})
	require.NoError(t, err)
	_, err = second.Recv()
	require.Equal(t, codes.ResourceExhausted, status.Code(err), err)
	require.Contains(t, status.Convert(err).Message(), "--max-subscriptions")

	// Three calls were the burst; the fourth waits 100 s for its token.
	resp, err := http.Get(s.rest + "/v1/channels/q/messages?from_seq=1")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "100", resp.Header.Get("Retry-After"))
}
