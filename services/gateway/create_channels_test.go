package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
	"github.com/triarch-io/triarch/services/gateway"
)

// withoutImplicitCreate returns s with a gateway of its own in place of s's, routing through
// channelctls, started with --create-channels=false.
func withoutImplicitCreate(t *testing.T, s *stack, channelctls ...string) *stack {
	t.Helper()
	return withGateway(t, s, func(c *gateway.Config) { c.NoImplicitCreate = true }, channelctls...)
}

const noCreateHint = "--create-channels=false"

func TestCreateChannelsOffGRPC(t *testing.T) {
	on := newStack(t)
	off := withoutImplicitCreate(t, on, on.ctl.addr)
	ctx := tctx(t)
	send := func(api triarchv1.TriarchServiceClient, ch string) (*triarchv1.SendMessagesResponse, error) {
		return api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch,
			Messages: []*triarchv1.MessageInput{{ClientMsgId: "m1", Payload: []byte("hello")}}})
	}

	// Creation off: a send, a read and a subscription to a missing channel are NotFound, and
	// nothing is created.
	_, err := send(off.api, "absent")
	st := status.Convert(err)
	require.Equal(t, codes.NotFound, st.Code(), err)
	require.Contains(t, st.Message(), "channel absent does not exist")
	require.Contains(t, st.Message(), noCreateHint)
	require.Contains(t, st.Message(), "POST /v1/channels")
	_, err = off.api.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "absent"})
	require.Equal(t, codes.NotFound, status.Code(err), err)
	sub, err := off.api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: "absent"})
	require.NoError(t, err)
	_, err = sub.Recv()
	require.Equal(t, codes.NotFound, status.Code(err), err)
	require.False(t, on.ctl.known("absent"), "no call through the gateway created the channel")

	// The explicit CreateChannel still creates; sends then go through.
	cr, err := off.api.CreateChannel(ctx, &triarchv1.CreateChannelRequest{ChannelId: "absent"})
	require.NoError(t, err)
	require.True(t, cr.GetCreated())
	resp, err := send(off.api, "absent")
	require.NoError(t, err)
	require.Equal(t, uint64(1), resp.GetResults()[0].GetSeq())

	// Creation on (the default): the first send creates the channel.
	require.False(t, on.ctl.known("implicit"))
	resp, err = send(on.api, "implicit")
	require.NoError(t, err)
	require.Equal(t, uint64(1), resp.GetResults()[0].GetSeq())
	require.True(t, on.ctl.known("implicit"))
	// ... and the gateway without creation serves the channel once it exists.
	resp, err = send(off.api, "implicit")
	require.NoError(t, err)
	require.True(t, resp.GetResults()[0].GetDuplicate(), "same client_msg_id, same channel")
}

func TestCreateChannelsOffREST(t *testing.T) {
	on := newStack(t)
	off := withoutImplicitCreate(t, on, on.ctl.addr)
	body := mustJSON(t, map[string]any{"messages": []any{map[string]any{"client_msg_id": "m1", "payload": payload("hello")}}})

	r := off.do(http.MethodPost, "/v1/channels/absent/messages", body, nil)
	require.Equal(t, http.StatusNotFound, r.code, string(r.raw))
	require.Contains(t, r.body["message"], noCreateHint)
	r = off.do(http.MethodGet, "/v1/channels/absent/messages", nil, nil)
	require.Equal(t, http.StatusNotFound, r.code, string(r.raw))
	sub := off.subscribeREST("/v1/channels/absent/messages:subscribe")
	require.Equal(t, http.StatusNotFound, sub.code)
	require.False(t, on.ctl.known("absent"))

	r = off.do(http.MethodPost, "/v1/channels", mustJSON(t, map[string]any{"channel_id": "absent"}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.Equal(t, true, r.body["created"])
	r = off.do(http.MethodPost, "/v1/channels/absent/messages", body, nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.Equal(t, uint64(1), jsonUint(t, r.body["results"].([]any)[0].(map[string]any)["seq"]))

	r = on.do(http.MethodPost, "/v1/channels/implicit/messages", body, nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.True(t, on.ctl.known("implicit"))
}

// Against the real channel control tier and arbiter: the NotFound comes back at once, not as
// an Unavailable after the gateway's retries, and nothing is recorded in the arbiter.
func TestCreateChannelsOffAcrossTiers(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the three tiers")
	}
	c := testcluster.Start(t, testcluster.Arbiters(1), testcluster.Channelctls(1), testcluster.Replicas(3))
	off := withoutImplicitCreate(t, &stack{t: t, c: c}, c.Addrs(testcluster.KindChannelctl)...)
	ctx := tctx(t)

	start := time.Now()
	_, err := off.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: "absent",
		Messages: []*triarchv1.MessageInput{{ClientMsgId: "m1", Payload: []byte("hello")}}})
	require.Equal(t, codes.NotFound, status.Code(err), err)
	require.Contains(t, status.Convert(err).Message(), noCreateHint)
	require.Less(t, time.Since(start), 2*time.Second, "NotFound is final, not retried")
	_, err = off.api.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "absent"})
	require.Equal(t, codes.NotFound, status.Code(err), err)
	_, ok := c.Arbiter(1).FSM().Channel("absent")
	require.False(t, ok, "the arbiter has no record of the channel")

	_, err = off.api.CreateChannel(ctx, &triarchv1.CreateChannelRequest{ChannelId: "absent"})
	require.NoError(t, err)
	resp, err := off.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: "absent",
		Messages: []*triarchv1.MessageInput{{ClientMsgId: "m1", Payload: []byte("hello")}}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), resp.GetResults()[0].GetSeq())
}
