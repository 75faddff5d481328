package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// messageAPI is what a workload client calls: the gateway's gRPC client, or restClient.
type messageAPI interface {
	SendMessages(ctx context.Context, in *triarchv1.SendMessagesRequest, opts ...grpc.CallOption) (*triarchv1.SendMessagesResponse, error)
	ReadMessages(ctx context.Context, in *triarchv1.ReadMessagesRequest, opts ...grpc.CallOption) (*triarchv1.ReadMessagesResponse, error)
}

// restClient sends and reads through the gateway's REST API (the grpc-gateway routes of
// proto/triarch/v1/triarch_http.yaml), and turns its answers into the gRPC statuses a gRPC
// client would have seen, so that the workload judges both alike: an HTTP error's JSON body
// carries the gRPC code; a connection that fails is Unavailable, a request that runs out of
// time DeadlineExceeded.
type restClient struct {
	base string // http://host:port
	http *http.Client
}

var _ messageAPI = (*restClient)(nil)

func newRESTClient(addr string) *restClient {
	return &restClient{base: "http://" + addr, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
}

func (r *restClient) SendMessages(ctx context.Context, in *triarchv1.SendMessagesRequest, _ ...grpc.CallOption) (*triarchv1.SendMessagesResponse, error) {
	body, err := protojson.Marshal(in)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "encoding the request: %v", err)
	}
	out := &triarchv1.SendMessagesResponse{}
	u := r.base + "/v1/channels/" + url.PathEscape(in.GetChannelId()) + "/messages"
	return out, r.do(ctx, http.MethodPost, u, body, out)
}

func (r *restClient) ReadMessages(ctx context.Context, in *triarchv1.ReadMessagesRequest, _ ...grpc.CallOption) (*triarchv1.ReadMessagesResponse, error) {
	q := url.Values{"from_seq": {strconv.FormatUint(in.GetFromSeq(), 10)}, "limit": {strconv.FormatUint(uint64(in.GetLimit()), 10)}}
	out := &triarchv1.ReadMessagesResponse{}
	u := r.base + "/v1/channels/" + url.PathEscape(in.GetChannelId()) + "/messages?" + q.Encode()
	return out, r.do(ctx, http.MethodGet, u, nil, out)
}

// do makes one request and decodes a 200's body into out.
func (r *restClient) do(ctx context.Context, method, u string, body []byte, out proto.Message) error {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "building %s %s: %v", method, u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.http.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return status.Errorf(codes.DeadlineExceeded, "%s %s: %v", method, u, err)
		}
		return status.Errorf(codes.Unavailable, "%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		// The gateway died or the time ran out mid-answer: the outcome is unknown, as for a
		// gRPC stream reset.
		if ctx.Err() != nil {
			return status.Errorf(codes.DeadlineExceeded, "%s %s: reading the answer: %v", method, u, err)
		}
		return status.Errorf(codes.Unavailable, "%s %s: reading the answer: %v", method, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return restError(resp.StatusCode, b)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, out); err != nil {
		return status.Errorf(codes.Internal, "%s %s: decoding %q: %v", method, u, b, err)
	}
	return nil
}

// restError is the gRPC status of an HTTP error: the code grpc-gateway puts in the JSON body,
// or, for a body that is not grpc-gateway's (a proxy's, a half-written one), the code the HTTP
// status stands for.
func restError(httpStatus int, body []byte) error {
	var e struct {
		Code    *int32 `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err == nil && e.Code != nil {
		return status.Error(codes.Code(*e.Code), e.Message)
	}
	c := codes.Unknown
	switch httpStatus {
	case http.StatusBadRequest:
		c = codes.InvalidArgument
	case http.StatusNotFound:
		c = codes.NotFound
	case http.StatusConflict:
		c = codes.Aborted
	case http.StatusTooManyRequests:
		c = codes.ResourceExhausted
	case http.StatusInternalServerError:
		c = codes.Internal
	case http.StatusNotImplemented:
		c = codes.Unimplemented
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		c = codes.Unavailable
	case http.StatusGatewayTimeout:
		c = codes.DeadlineExceeded
	}
	return status.Error(c, fmt.Sprintf("HTTP %d: %q", httpStatus, body))
}
