package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/client"
	"github.com/triarch-io/triarch/services/gateway"
)

func inputs(ids ...string) []*triarchv1.MessageInput {
	out := make([]*triarchv1.MessageInput, len(ids))
	for i, id := range ids {
		out[i] = &triarchv1.MessageInput{ClientMsgId: id, Sender: "t", Payload: []byte("payload " + id)}
	}
	return out
}

func seqs(r *triarchv1.SendMessagesResponse) []uint64 {
	var out []uint64
	for _, x := range r.GetResults() {
		out = append(out, x.GetSeq())
	}
	return out
}

// The gRPC API end to end: create, send a batch, read back, idempotent resend, generated ids,
// subscribe.
func TestGRPCFullStack(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	const ch = "grpc.room:1@x"

	cr, err := s.api.CreateChannel(ctx, &triarchv1.CreateChannelRequest{ChannelId: ch, ReplicationFactor: 3})
	require.NoError(t, err)
	require.True(t, cr.GetCreated())
	require.Equal(t, []uint64{1, 2, 3}, cr.GetChannel().GetReplicaNodeIds())
	require.EqualValues(t, s.ctl.leaderOf(ch), cr.GetChannel().GetLeaderNodeId())

	gc, err := s.api.GetChannel(ctx, &triarchv1.GetChannelRequest{ChannelId: ch})
	require.NoError(t, err)
	require.Equal(t, triarchv1.ChannelState_CHANNEL_STATE_ACTIVE, gc.GetChannel().GetState())
	require.NotNil(t, gc.GetChannel().GetCreateTime())

	batch := inputs("a", "b", "c")
	batch = append(batch, &triarchv1.MessageInput{Payload: []byte("no id")})
	resp, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: batch})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3, 4}, seqs(resp))
	require.False(t, resp.GetResults()[0].GetClientMsgIdGenerated())
	require.True(t, resp.GetResults()[3].GetClientMsgIdGenerated())
	gen := resp.GetResults()[3].GetClientMsgId()
	require.Regexp(t, hex32, gen)

	resp, err = s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: inputs("b", gen, "d")})
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 4, 5}, seqs(resp))
	require.True(t, resp.GetResults()[0].GetDuplicate())
	require.True(t, resp.GetResults()[1].GetDuplicate())
	require.False(t, resp.GetResults()[2].GetDuplicate())

	msgs := s.readAllGRPC(ch)
	requireContiguous(t, msgs, 5)
	for i, id := range []string{"a", "b", "c", gen, "d"} {
		require.Equal(t, id, msgs[i].GetClientMsgId())
		require.Equal(t, ch, msgs[i].GetChannelId())
	}
	require.Equal(t, "no id", string(msgs[3].GetPayload()))
	rr, err := s.api.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: ch, FromSeq: 9})
	require.NoError(t, err)
	require.Empty(t, rr.GetMessages())
	require.Equal(t, uint64(9), rr.GetNextSeq())
	require.Equal(t, uint64(5), rr.GetLastSeq())

	// Subscribe from 3: the stored messages, then new ones.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.api.SubscribeMessages(sctx, &triarchv1.SubscribeMessagesRequest{ChannelId: ch, FromSeq: 3})
	require.NoError(t, err)
	_, err = s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: inputs("e", "f")})
	require.NoError(t, err)
	next := uint64(3)
	for next <= 7 {
		r, err := stream.Recv()
		require.NoError(t, err)
		for _, m := range r.GetMessages() {
			require.Equal(t, next, m.GetSeq())
			next++
		}
	}

	// The route is cached: these calls did not ask channelctl again.
	before := s.ctl.resolves.Load()
	for range 5 {
		_, err := s.api.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: ch})
		require.NoError(t, err)
	}
	require.Equal(t, before, s.ctl.resolves.Load())
}

// rawCodec sends bytes as they are, to put malformed protobuf on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

func requireTooLarge(t *testing.T, err error) {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.InvalidArgument, st.Code(), err)
	var reason string
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			reason = ei.GetReason()
		}
	}
	require.Equal(t, gateway.ErrorReasonTooLarge, reason, err)
}

// Every bad input gets its documented gRPC code and a clear message, and changes nothing.
func TestGRPCBadInputIsRefusedWithoutChangingState(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	const ch = "grpc-bad"
	_, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: inputs("only")})
	require.NoError(t, err)

	payload := func(n int) []*triarchv1.MessageInput {
		return []*triarchv1.MessageInput{{Payload: make([]byte, n)}}
	}
	many := make([]*triarchv1.MessageInput, 1001)
	for i := range many {
		many[i] = &triarchv1.MessageInput{Payload: []byte("x")}
	}
	var huge []*triarchv1.MessageInput
	for range 5 {
		huge = append(huge, &triarchv1.MessageInput{Payload: make([]byte, 1<<20-64)})
	}
	sends := []struct {
		name string
		req  *triarchv1.SendMessagesRequest
		code codes.Code
		want string
	}{
		{"invalid channel id", &triarchv1.SendMessagesRequest{ChannelId: "a b", Messages: inputs("x")}, codes.InvalidArgument, "not allowed"},
		{"channel id too long", &triarchv1.SendMessagesRequest{ChannelId: strings.Repeat("x", 129), Messages: inputs("x")}, codes.InvalidArgument, "at most 128"},
		{"no messages", &triarchv1.SendMessagesRequest{ChannelId: ch}, codes.InvalidArgument, "at least one"},
		{"payload over 1 MiB", &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: payload(1<<20 + 1)}, codes.InvalidArgument, "payload"},
		{"1001 messages", &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: many}, codes.InvalidArgument, "1001 messages"},
		{"batch over 4 MiB", &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: huge}, codes.InvalidArgument, "4 MiB"},
		{"client_msg_id too long", &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: inputs(strings.Repeat("i", 257))}, codes.InvalidArgument, "client_msg_id"},
	}
	for _, tc := range sends {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.api.SendMessages(ctx, tc.req)
			st := status.Convert(err)
			require.Equal(t, tc.code, st.Code(), err)
			require.Contains(t, st.Message(), tc.want)
			if strings.Contains(tc.name, "over") || strings.Contains(tc.name, "1001") {
				requireTooLarge(t, err)
			}
		})
	}

	t.Run("malformed protobuf", func(t *testing.T) {
		// grpc-go refuses a request that does not decode itself, before any handler runs, and
		// writes the status then: Internal, not InvalidArgument (a server codec could change
		// that; process.Start takes no server options yet).
		var out []byte
		err := s.conn.Invoke(ctx, triarchv1.TriarchService_SendMessages_FullMethodName, []byte{0x0a, 0xff, 0xff}, &out,
			grpc.ForceCodec(rawCodec{}))
		st := status.Convert(err)
		require.Equal(t, codes.Internal, st.Code(), err)
		require.Contains(t, st.Message(), "failed to unmarshal")
		// A well-formed message still decodes through the same path.
		good, err := proto.Marshal(&triarchv1.ReadMessagesRequest{ChannelId: ch})
		require.NoError(t, err)
		require.NoError(t, s.conn.Invoke(ctx, triarchv1.TriarchService_ReadMessages_FullMethodName, good, &out, grpc.ForceCodec(rawCodec{})))
	})
	t.Run("unknown channel", func(t *testing.T) {
		_, err := s.api.ReadMessages(ctx, &triarchv1.ReadMessagesRequest{ChannelId: "nope"})
		require.Equal(t, codes.NotFound, status.Code(err), err)
		_, err = s.api.GetChannel(ctx, &triarchv1.GetChannelRequest{ChannelId: "nope"})
		require.Equal(t, codes.NotFound, status.Code(err), err)
		stream, err := s.api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: "nope"})
		require.NoError(t, err)
		_, err = stream.Recv()
		require.Equal(t, codes.NotFound, status.Code(err), err)
	})
	t.Run("no leader reachable", func(t *testing.T) {
		// No caller deadline: the gateway's request timeout is the only one that can end the
		// call, so the answer is the gateway's own (TestRouterRespectsDeadlines covers a
		// caller's deadline).
		_, err := s.api.SendMessages(context.Background(), &triarchv1.SendMessagesRequest{ChannelId: "unavailable-9", Messages: inputs("x")})
		st := status.Convert(err)
		require.Equal(t, codes.Unavailable, st.Code(), err)
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				retry = ri
			}
		}
		require.NotNil(t, retry, "Unavailable says when to retry")
	})
	t.Run("arbiter calls without an arbiter", func(t *testing.T) {
		_, err := s.api.ListChannels(ctx, &triarchv1.ListChannelsRequest{})
		require.Equal(t, codes.Unavailable, status.Code(err))
		require.Contains(t, status.Convert(err).Message(), "no arbiter configured")
		_, err = s.api.GetCluster(ctx, &triarchv1.GetClusterRequest{})
		require.Equal(t, codes.Unavailable, status.Code(err))
	})

	msgs := s.readAllGRPC(ch)
	requireContiguous(t, msgs, 1)
	require.Equal(t, "only", msgs[0].GetClientMsgId())
	for _, id := range []string{"a b", "nope", "unavailable-9"} {
		require.False(t, s.ctl.known(id), id)
	}
}

// ackedMsg is a message the gateway acknowledged.
type ackedMsg struct {
	id  string
	seq uint64
}

// Kill the channel's leader replica while a client sends through the gateway in a loop: the
// client sees no error, only a delay; every acknowledged message is there exactly once, in
// order, with contiguous seqs; subscribers started before the kill (gRPC and REST) receive
// every message exactly once, in order.
func TestLeaderKillIsOnlyADelay(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	const ch = "failover"
	_, err := s.api.CreateChannel(ctx, &triarchv1.CreateChannelRequest{ChannelId: ch})
	require.NoError(t, err)
	oldLeader := s.ctl.leaderOf(ch)
	require.NotZero(t, oldLeader)

	// Subscribers before the kill.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	grpcSub, err := s.api.SubscribeMessages(sctx, &triarchv1.SubscribeMessagesRequest{ChannelId: ch, FromSeq: 1})
	require.NoError(t, err)
	var (
		subMu   sync.Mutex
		subSeqs []uint64
		subErr  error
	)
	go func() {
		for {
			resp, err := grpcSub.Recv()
			subMu.Lock()
			if err != nil {
				if sctx.Err() == nil {
					subErr = err
				}
				subMu.Unlock()
				return
			}
			for _, m := range resp.GetMessages() {
				subSeqs = append(subSeqs, m.GetSeq())
			}
			subMu.Unlock()
		}
	}()
	restSub := s.subscribeREST("/v1/channels/" + ch + "/messages:subscribe")
	require.Equal(t, 200, restSub.code)

	// The sender: batches of 1-3 messages, one call after another, no client deadline (the
	// gateway's default of 5 s applies).
	var (
		acked   []ackedMsg
		slowest time.Duration
		sendErr error
		killErr error
	)
	killAt, stopAfter, afterKill := 40, 80, 0
	killed := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			if i == killAt {
				go func() {
					killErr = s.stopReplica(oldLeader)
					close(killed)
				}()
			}
			if i >= stopAfter {
				select {
				case <-killed:
					// The leader is gone for good: keep sending a while to the new one.
					if afterKill++; afterKill > 20 {
						return
					}
				default:
				}
			}
			var ids []string
			for j := range i%3 + 1 {
				ids = append(ids, fmt.Sprintf("m%d-%d", i, j))
			}
			start := time.Now()
			resp, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: inputs(ids...)})
			if err != nil {
				sendErr = fmt.Errorf("send %d: %w", i, err)
				return
			}
			slowest = max(slowest, time.Since(start))
			for j, r := range resp.GetResults() {
				if r.GetDuplicate() {
					sendErr = fmt.Errorf("send %d: fresh id %s reported duplicate", i, ids[j])
					return
				}
				acked = append(acked, ackedMsg{ids[j], r.GetSeq()})
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("sender did not finish")
	}
	require.NoError(t, sendErr, "the client sees no error across the failover")
	<-killed
	require.NoError(t, killErr)
	t.Logf("%d messages acknowledged; slowest send across the failover took %v", len(acked), slowest)
	newLeader := s.ctl.leaderOf(ch)
	require.NotEqual(t, oldLeader, newLeader, "a new leader was elected")
	require.GreaterOrEqual(t, s.ctl.elections.Load(), int64(2))

	// Every acknowledged message exactly once, in order, contiguous.
	msgs := s.readAllGRPC(ch)
	requireContiguous(t, msgs, len(acked))
	for i, a := range acked {
		require.Equal(t, uint64(i+1), a.seq, "acks are in order")
		require.Equal(t, a.id, msgs[i].GetClientMsgId(), "seq %d", a.seq)
	}

	// Both subscribers saw every message once, in order.
	deadline := time.Now().Add(30 * time.Second)
	for {
		subMu.Lock()
		n, err := len(subSeqs), subErr
		subMu.Unlock()
		require.NoError(t, err)
		if n >= len(acked) {
			break
		}
		require.True(t, time.Now().Before(deadline), "gRPC subscriber got %d of %d messages", n, len(acked))
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	subMu.Lock()
	requireSeqs(t, subSeqs, len(acked))
	subMu.Unlock()
	requireSeqs(t, restSub.seqs(t, len(acked)), len(acked))
}

func requireSeqs(t *testing.T, got []uint64, n int) {
	t.Helper()
	require.Len(t, got, n)
	for i, s := range got {
		require.Equal(t, uint64(i+1), s)
	}
}

// The Go client against the real stack: send with generated ids, read, follow.
func TestGoClientThroughTheStack(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	c, err := client.Dial(ctx, s.gw.Addr(), client.Options{})
	require.NoError(t, err)
	defer c.Close()
	res, err := c.Send(ctx, "go:client", client.Text("a", "one"), client.Text("b", "two"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), res[1].Seq)
	again, err := c.Send(ctx, "go:client", client.Outgoing{ClientMsgID: res[1].ClientMsgID, Payload: []byte("two")})
	require.NoError(t, err)
	require.Equal(t, client.SendResult{Seq: 2, Duplicate: true, ClientMsgID: res[1].ClientMsgID}, again[0])
	page, err := c.Read(ctx, "go:client", 1, 10)
	require.NoError(t, err)
	require.Len(t, page.Messages, 2)
	require.Equal(t, "two", string(page.Messages[1].Payload))

	go func() { _, _ = c.Send(ctx, "go:client", client.Text("c", "three")) }()
	var got []string
	stop := errors.New("stop")
	err = c.Subscribe(ctx, "go:client", 2, func(m client.Message) error {
		got = append(got, string(m.Payload))
		if m.Seq == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []string{"two", "three"}, got)
}

// Stopping the gateway ends open subscriptions with Unavailable (so clients resume at another
// gateway) instead of waiting for them, over gRPC and REST.
func TestStopEndsSubscriptions(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	_, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: "quiet", Messages: inputs("one")})
	require.NoError(t, err)
	stream, err := s.api.SubscribeMessages(ctx, &triarchv1.SubscribeMessagesRequest{ChannelId: "quiet"})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	require.Len(t, first.GetMessages(), 1)
	rest := s.subscribeREST("/v1/channels/quiet/messages:subscribe")
	require.Equal(t, []uint64{1}, rest.seqs(t, 1))

	// Stop does not wait for the subscriptions: they never end by themselves, so a Stop that
	// waited for them would only return at its context's deadline, with an error.
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, s.gw.Stop(sctx))
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), err)
	line, ok := <-rest.lines
	require.True(t, ok)
	require.Contains(t, fmt.Sprint(line["error"]), "shutting down")
}
