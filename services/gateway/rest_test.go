package gateway_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/services/gateway"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func payload(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// The REST API end to end: create, send a batch, read back, idempotent resend, generated ids,
// channel ids with ':' '@' '.' in paths (raw and percent-encoded), and a subscription.
func TestRESTFullStack(t *testing.T) {
	s := newStack(t)
	const ch = "room:general@acme.com"

	r := s.do(http.MethodPost, "/v1/channels", mustJSON(t, map[string]any{"channel_id": ch}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.Equal(t, true, r.body["created"])
	require.Equal(t, ch, r.body["channel"].(map[string]any)["channel_id"])
	require.NotEqual(t, "0", r.body["channel"].(map[string]any)["leader_node_id"])
	r = s.do(http.MethodPost, "/v1/channels", mustJSON(t, map[string]any{"channel_id": ch}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.Equal(t, false, r.body["created"])

	for _, path := range []string{"/v1/channels/" + ch, "/v1/channels/room%3Ageneral%40acme.com"} {
		r = s.do(http.MethodGet, path, nil, nil)
		require.Equal(t, http.StatusOK, r.code, "%s: %s", path, r.raw)
		c := r.body["channel"].(map[string]any)
		require.Equal(t, ch, c["channel_id"])
		require.Equal(t, "CHANNEL_STATE_ACTIVE", c["state"])
		require.Len(t, c["replica_node_ids"], 3)
	}

	// A batch: one message with a client_msg_id, two without.
	r = s.do(http.MethodPost, "/v1/channels/"+ch+"/messages", mustJSON(t, map[string]any{"messages": []any{
		map[string]any{"client_msg_id": "c1", "sender": "alice", "payload": payload("hello"), "headers": map[string]string{"k": "v"}},
		map[string]any{"sender": "bob", "payload": payload("hi")},
		map[string]any{"sender": "bob", "payload": payload("how are you")},
	}}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	results := r.body["results"].([]any)
	require.Len(t, results, 3)
	var generated []string
	for i, x := range results {
		res := x.(map[string]any)
		require.Equal(t, uint64(i+1), jsonUint(t, res["seq"]))
		require.Equal(t, false, res["duplicate"])
		if i == 0 {
			require.Equal(t, "c1", res["client_msg_id"])
			require.Equal(t, false, res["client_msg_id_generated"])
			continue
		}
		require.Equal(t, true, res["client_msg_id_generated"])
		require.Regexp(t, hex32, res["client_msg_id"])
		generated = append(generated, res["client_msg_id"].(string))
	}
	require.NotEqual(t, generated[0], generated[1])

	// Resending c1 (and a generated id) returns the original seqs, flagged duplicate.
	r = s.do(http.MethodPost, "/v1/channels/room%3Ageneral%40acme.com/messages", mustJSON(t, map[string]any{"messages": []any{
		map[string]any{"client_msg_id": "c1", "payload": payload("hello again")},
		map[string]any{"client_msg_id": generated[1], "payload": payload("how are you")},
		map[string]any{"client_msg_id": "c4", "payload": payload("new")},
	}}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	results = r.body["results"].([]any)
	for i, want := range []struct {
		seq uint64
		dup bool
	}{{1, true}, {3, true}, {4, false}} {
		res := results[i].(map[string]any)
		require.Equal(t, want.seq, jsonUint(t, res["seq"]), "result %d", i)
		require.Equal(t, want.dup, res["duplicate"], "result %d", i)
	}

	// Read back a page.
	r = s.do(http.MethodGet, "/v1/channels/"+ch+"/messages?from_seq=2&limit=2", nil, nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	msgs := r.body["messages"].([]any)
	require.Len(t, msgs, 2)
	m := msgs[0].(map[string]any)
	require.Equal(t, uint64(2), jsonUint(t, m["seq"]))
	require.Equal(t, ch, m["channel_id"])
	require.Equal(t, "bob", m["sender"])
	require.Equal(t, payload("hi"), m["payload"])
	require.Equal(t, generated[0], m["client_msg_id"])
	require.Equal(t, uint64(4), jsonUint(t, r.body["next_seq"]))
	require.Equal(t, uint64(4), jsonUint(t, r.body["last_seq"]))
	r = s.do(http.MethodGet, "/v1/channels/"+ch+"/messages", nil, nil)
	require.Equal(t, http.StatusOK, r.code)
	first := r.body["messages"].([]any)[0].(map[string]any)
	require.Equal(t, map[string]any{"k": "v"}, first["headers"])
	require.Equal(t, payload("hello"), first["payload"])

	// Sending to a channel that does not exist creates it.
	r = s.do(http.MethodPost, "/v1/channels/auto.created_1/messages", mustJSON(t, map[string]any{"messages": []any{
		map[string]any{"payload": payload("first")}}}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.Equal(t, uint64(1), jsonUint(t, r.body["results"].([]any)[0].(map[string]any)["seq"]))
	require.True(t, s.ctl.known("auto.created_1"))

	// A subscription from seq 2: the stored messages, then a new one as it is committed.
	sub := s.subscribeREST("/v1/channels/" + ch + "/messages:subscribe?from_seq=2")
	require.Equal(t, http.StatusOK, sub.code)
	require.Contains(t, sub.header.Get("Content-Type"), "application/json")
	require.Equal(t, []uint64{2, 3, 4}, sub.seqs(t, 3))
	r = s.do(http.MethodPost, "/v1/channels/"+ch+"/messages", mustJSON(t, map[string]any{"messages": []any{
		map[string]any{"payload": payload("live")}}}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))
	require.Equal(t, []uint64{5}, sub.seqs(t, 1))
	sub.cancel()

	// The admin endpoints and the OpenAPI document.
	resp, err := http.Get("http://" + s.gw.AdminAddr().String() + "/readyz")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, resp.Body.Close())
	r = s.do(http.MethodGet, "/openapi.json", nil, nil)
	require.Equal(t, http.StatusOK, r.code)
	require.Contains(t, string(r.raw), "messages:subscribe")
}

// Every bad input gets its documented HTTP status and a message that says what was wrong, and
// changes nothing.
func TestRESTBadInputIsRefusedWithoutChangingState(t *testing.T) {
	s := newStack(t)
	const ch = "bad-input"
	r := s.do(http.MethodPost, "/v1/channels/"+ch+"/messages", mustJSON(t, map[string]any{"messages": []any{
		map[string]any{"client_msg_id": "only", "payload": payload("x")}}}), nil)
	require.Equal(t, http.StatusOK, r.code, string(r.raw))

	mib := 1 << 20
	big := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	many := make([]any, 1001)
	for i := range many {
		many[i] = map[string]any{"payload": payload("x")}
	}
	fiveMiB := make([]any, 5)
	for i := range fiveMiB {
		fiveMiB[i] = map[string]any{"payload": big(mib - 64)}
	}
	send := func(msgs ...any) []byte { return mustJSON(t, map[string]any{"messages": msgs}) }
	cases := []struct {
		name, method, path string
		body               []byte
		header             map[string]string
		code               int
		want               string
	}{
		{"invalid channel id", "POST", "/v1/channels/bad%20id/messages", send(map[string]any{"payload": payload("x")}), nil, 400, "not allowed"},
		{"slash in channel id", "POST", "/v1/channels", mustJSON(t, map[string]any{"channel_id": "a/b"}), nil, 400, "not allowed"},
		{"empty channel id", "POST", "/v1/channels", mustJSON(t, map[string]any{"channel_id": ""}), nil, 400, "channel_id is required"},
		{"channel id too long", "GET", "/v1/channels/" + strings.Repeat("x", 129) + "/messages", nil, nil, 400, "at most 128"},
		{"replication too high", "POST", "/v1/channels", mustJSON(t, map[string]any{"channel_id": "rf", "replication_factor": 50}), nil, 400, "replication_factor"},
		{"payload over 1 MiB", "POST", "/v1/channels/" + ch + "/messages", send(map[string]any{"payload": big(mib + 1)}), nil, 413, "payload is 1048577 bytes"},
		{"1001 messages", "POST", "/v1/channels/" + ch + "/messages", send(many...), nil, 413, "1001 messages"},
		{"batch over 4 MiB", "POST", "/v1/channels/" + ch + "/messages", send(fiveMiB...), nil, 413, "at most 4194304"},
		{"body over 8 MiB", "POST", "/v1/channels/" + ch + "/messages", send(map[string]any{"payload": big(7 * mib)}), nil, 413, "request body is larger"},
		{"malformed JSON", "POST", "/v1/channels/" + ch + "/messages", []byte(`{"messages": [`), nil, 400, "malformed JSON"},
		{"unknown field", "POST", "/v1/channels/" + ch + "/messages", []byte(`{"mesages": []}`), nil, 400, "malformed JSON"},
		{"payload not base64", "POST", "/v1/channels/" + ch + "/messages", []byte(`{"messages": [{"payload": "!!"}]}`), nil, 400, "malformed JSON"},
		{"no messages", "POST", "/v1/channels/" + ch + "/messages", []byte(`{}`), nil, 400, "at least one message"},
		{"client_msg_id too long", "POST", "/v1/channels/" + ch + "/messages", send(map[string]any{"client_msg_id": strings.Repeat("i", 257)}), nil, 400, "client_msg_id"},
		{"from_seq not a number", "GET", "/v1/channels/" + ch + "/messages?from_seq=abc", nil, nil, 400, "from_seq"},
		{"read unknown channel", "GET", "/v1/channels/nope/messages", nil, nil, 404, "does not exist"},
		{"get unknown channel", "GET", "/v1/channels/nope", nil, nil, 404, "does not exist"},
		// No caller deadline: the gateway's own request timeout is the only one that can end
		// the call, so which of two timeouts fires first cannot decide the answer.
		{"no leader reachable", "POST", "/v1/channels/unavailable-1/messages", send(map[string]any{"payload": payload("x")}),
			nil, 503, "channel unavailable-1"},
		{"list channels needs the arbiter", "GET", "/v1/channels", nil, nil, 503, "no arbiter configured"},
		{"cluster needs the arbiter", "GET", "/v1/cluster", nil, nil, 503, "no arbiter configured"},
		{"unknown path", "GET", "/v1/nothing", nil, nil, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, tc.body, tc.header)
			require.Equal(t, tc.code, r.code, "%.500s", r.raw)
			require.Contains(t, r.body["message"], tc.want)
			if tc.code == http.StatusRequestEntityTooLarge {
				require.Contains(t, string(r.raw), `"reason":"TOO_LARGE"`)
			}
			if tc.code == http.StatusServiceUnavailable {
				require.Equal(t, "1", r.header.Get("Retry-After"))
			}
		})
	}

	// Subscribing to an unknown channel is a 404 before any stream starts.
	sub := s.subscribeREST("/v1/channels/nope/messages:subscribe")
	require.Equal(t, http.StatusNotFound, sub.code)
	line := <-sub.lines
	require.Contains(t, fmt.Sprint(line["error"]), "does not exist")
	sub = s.subscribeREST("/v1/channels/unavailable-2/messages:subscribe")
	require.Equal(t, http.StatusServiceUnavailable, sub.code)
	require.Equal(t, "1", sub.header.Get("Retry-After"))

	// Nothing changed: the channel holds its one message, and no bad id became a channel.
	msgs := s.readAllGRPC(ch)
	requireContiguous(t, msgs, 1)
	require.Equal(t, "only", msgs[0].GetClientMsgId())
	for _, id := range []string{"bad id", "a/b", "rf", "nope", "unavailable-1"} {
		require.False(t, s.ctl.known(id), id)
	}
}

func TestHTTPStatusMapping(t *testing.T) {
	tooBig := status.Convert(gatewayTooLarge(t))
	for _, tc := range []struct {
		st   *status.Status
		want int
	}{
		{status.New(codes.InvalidArgument, "bad"), 400},
		{tooBig, 413},
		{status.New(codes.NotFound, "x"), 404},
		{status.New(codes.FailedPrecondition, "x"), 400},
		{status.New(codes.Unavailable, "x"), 503},
		{status.New(codes.ResourceExhausted, "x"), 429},
		{status.New(codes.DeadlineExceeded, "x"), 504},
		{status.New(codes.Unimplemented, "x"), 501},
		{status.New(codes.Internal, "x"), 500},
		{status.New(codes.Canceled, "x"), 499},
	} {
		require.Equal(t, tc.want, gateway.HTTPStatus(tc.st), tc.st.Code().String())
	}
}

// gatewayTooLarge is the error the gateway gives an oversize batch.
func gatewayTooLarge(t *testing.T) error {
	t.Helper()
	st, err := status.New(codes.InvalidArgument, "too large").WithDetails(&errdetails.ErrorInfo{Reason: gateway.ErrorReasonTooLarge})
	require.NoError(t, err)
	return st.Err()
}
