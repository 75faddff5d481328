package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/services/gateway"
)

// fieldLimitCase is one message at a sender or header limit (ok) or one past it.
type fieldLimitCase struct {
	name    string
	sender  string
	headers map[string]string
	ok      bool
	want    string // in the refusal's message
}

// nHeaders returns n headers of short keys and values.
func nHeaders(n int) map[string]string {
	h := make(map[string]string, n)
	for i := range n {
		h[fmt.Sprintf("h%02d", i)] = "v"
	}
	return h
}

func fieldLimitCases() []fieldLimitCase {
	return []fieldLimitCase{
		{name: "sender at the limit", sender: strings.Repeat("s", gateway.MaxSenderLen), ok: true},
		{name: "sender one over", sender: strings.Repeat("s", gateway.MaxSenderLen+1), want: "sender is 257 bytes long; at most 256"},
		{name: "headers at the count limit", headers: nHeaders(gateway.MaxHeaders), ok: true},
		{name: "one header over the count", headers: nHeaders(gateway.MaxHeaders + 1), want: "33 headers; at most 32"},
		{name: "header key at the limit", headers: map[string]string{strings.Repeat("k", gateway.MaxHeaderKeyLen): "v"}, ok: true},
		{name: "header key one over", headers: map[string]string{strings.Repeat("k", gateway.MaxHeaderKeyLen+1): "v"}, want: "is 129 bytes long; at most 128"},
		// Keys and values count together: 2 + 8191 + 2 + 8189 = 16384.
		{name: "header bytes at the limit", headers: map[string]string{"k1": strings.Repeat("a", 8191), "k2": strings.Repeat("b", 8189)}, ok: true},
		{name: "header bytes one over", headers: map[string]string{"k1": strings.Repeat("a", 8191), "k2": strings.Repeat("b", 8190)}, want: "16385 bytes (keys and values); at most 16384"},
	}
}

// Sender and headers at their limits are accepted and stored as sent; one byte (or header)
// over is InvalidArgument, without TOO_LARGE, and nothing of the send is stored.
func TestSenderAndHeaderLimitsGRPC(t *testing.T) {
	s := newStack(t)
	ctx := tctx(t)
	const ch = "grpc-limits"
	var accepted []fieldLimitCase
	for _, tc := range fieldLimitCases() {
		t.Run(tc.name, func(t *testing.T) {
			// The second message is well within every limit: a refusal takes the whole send.
			resp, err := s.api.SendMessages(ctx, &triarchv1.SendMessagesRequest{ChannelId: ch, Messages: []*triarchv1.MessageInput{
				{ClientMsgId: tc.name, Sender: tc.sender, Headers: tc.headers, Payload: []byte("p")},
				{ClientMsgId: tc.name + "/2", Payload: []byte("q")},
			}})
			if tc.ok {
				require.NoError(t, err)
				require.Len(t, resp.GetResults(), 2)
				accepted = append(accepted, tc)
				return
			}
			st := status.Convert(err)
			require.Equal(t, codes.InvalidArgument, st.Code(), err)
			require.Contains(t, st.Message(), "messages[0]")
			require.Contains(t, st.Message(), tc.want)
			require.Empty(t, st.Details(), "a field limit is not TOO_LARGE (HTTP 400, not 413)")
		})
	}
	msgs := s.readAllGRPC(ch)
	requireContiguous(t, msgs, 2*len(accepted))
	for i, tc := range accepted {
		m := msgs[2*i]
		require.Equal(t, tc.name, m.GetClientMsgId())
		require.Equal(t, tc.sender, m.GetSender())
		require.Equal(t, len(tc.headers), len(m.GetHeaders()))
		for k, v := range tc.headers {
			require.Equal(t, v, m.GetHeaders()[k])
		}
	}
}

func TestSenderAndHeaderLimitsREST(t *testing.T) {
	s := newStack(t)
	const ch = "rest-limits"
	n := 0
	for _, tc := range fieldLimitCases() {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{"client_msg_id": tc.name, "payload": payload("p")}
			if tc.sender != "" {
				m["sender"] = tc.sender
			}
			if tc.headers != nil {
				m["headers"] = tc.headers
			}
			r := s.do(http.MethodPost, "/v1/channels/"+ch+"/messages", mustJSON(t, map[string]any{"messages": []any{m}}), nil)
			if tc.ok {
				require.Equal(t, http.StatusOK, r.code, string(r.raw))
				n++
				require.Equal(t, uint64(n), jsonUint(t, r.body["results"].([]any)[0].(map[string]any)["seq"]))
				return
			}
			require.Equal(t, http.StatusBadRequest, r.code, string(r.raw))
			require.Contains(t, r.body["message"], tc.want)
		})
	}
	requireContiguous(t, s.readAllGRPC(ch), n)
}
