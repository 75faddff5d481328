package client_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// fakeGateway is an in-memory TriarchService: one log per channel with idempotent sends, and
// knobs to fail in the ways a real cluster can.
type fakeGateway struct {
	triarchv1.UnimplementedTriarchServiceServer
	addr string
	srv  *grpc.Server

	mu       sync.Mutex
	logs     map[string][]*triarchv1.Message
	ids      map[string]map[string]uint64
	changed  chan struct{} // closed and replaced on every append
	sendReqs []*triarchv1.SendMessagesRequest
	resumes  []uint64 // from_seq of every subscription

	// lostAnswers: this many sends commit, then answer Unavailable (an ambiguous failure).
	lostAnswers int
	// down: every call answers Unavailable.
	down bool
	// hangAfter: sends after this many answer only when their context ends (0: never).
	hangAfter int
	// busy: this many sends answer ResourceExhausted with a short retry delay first.
	busy int
	// quota: sends answer ResourceExhausted without a retry delay (the cluster's channel cap).
	quota bool
	// streamLimit: a subscription stream breaks after this many messages (0: never), and a
	// resumed one first repeats the message before its from_seq.
	streamLimit int
}

func startFakeGateway(tb testing.TB) *fakeGateway {
	tb.Helper()
	f := &fakeGateway{logs: map[string][]*triarchv1.Message{}, ids: map[string]map[string]uint64{}, changed: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f.addr = lis.Addr().String()
	f.srv = grpc.NewServer()
	triarchv1.RegisterTriarchServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(lis) }()
	tb.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeGateway) set(fn func(*fakeGateway)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeGateway) SendMessages(ctx context.Context, req *triarchv1.SendMessagesRequest) (*triarchv1.SendMessagesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sendReqs = append(f.sendReqs, proto.Clone(req).(*triarchv1.SendMessagesRequest))
	if f.hangAfter > 0 && len(f.sendReqs) > f.hangAfter {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if f.down {
		return nil, status.Error(codes.Unavailable, "fake: no leader")
	}
	if f.busy > 0 {
		f.busy--
		st, _ := status.New(codes.ResourceExhausted, "fake: overloaded").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(10 * time.Millisecond)})
		return nil, st.Err()
	}
	if f.quota {
		return nil, status.Error(codes.ResourceExhausted, "fake: the cluster holds 5 channels, its cap")
	}
	if req.GetChannelId() == "" || len(req.GetMessages()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "fake: channel and messages required")
	}
	ch := req.GetChannelId()
	if f.ids[ch] == nil {
		f.ids[ch] = map[string]uint64{}
	}
	out := &triarchv1.SendMessagesResponse{}
	for _, m := range req.GetMessages() {
		r := &triarchv1.SendResult{ClientMsgId: m.GetClientMsgId()}
		if seq, dup := f.ids[ch][m.GetClientMsgId()]; dup {
			r.Seq, r.Duplicate = seq, true
		} else {
			r.Seq = uint64(len(f.logs[ch]) + 1)
			f.ids[ch][m.GetClientMsgId()] = r.Seq
			f.logs[ch] = append(f.logs[ch], &triarchv1.Message{ChannelId: ch, Seq: r.Seq, ClientMsgId: m.GetClientMsgId(),
				Sender: m.GetSender(), Payload: m.GetPayload(), Headers: m.GetHeaders(),
				CommitTime: timestamppb.New(time.Date(2030, 1, 1, 0, 0, int(r.Seq), 0, time.UTC))})
		}
		out.Results = append(out.Results, r)
	}
	close(f.changed)
	f.changed = make(chan struct{})
	if f.lostAnswers > 0 {
		f.lostAnswers--
		return nil, status.Error(codes.Unavailable, "fake: committed, but the answer was lost")
	}
	return out, nil
}

func (f *fakeGateway) ReadMessages(_ context.Context, req *triarchv1.ReadMessagesRequest) (*triarchv1.ReadMessagesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, status.Error(codes.Unavailable, "fake: no leader")
	}
	log, ok := f.logs[req.GetChannelId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "channel %s does not exist", req.GetChannelId())
	}
	from := max(req.GetFromSeq(), 1)
	limit := uint64(req.GetLimit())
	if limit == 0 {
		limit = 100
	}
	out := &triarchv1.ReadMessagesResponse{NextSeq: from, LastSeq: uint64(len(log))}
	for s := from; s <= uint64(len(log)) && s < from+limit; s++ {
		out.Messages = append(out.Messages, log[s-1])
		out.NextSeq = s + 1
	}
	return out, nil
}

func (f *fakeGateway) SubscribeMessages(req *triarchv1.SubscribeMessagesRequest, stream grpc.ServerStreamingServer[triarchv1.SubscribeMessagesResponse]) error {
	f.mu.Lock()
	f.resumes = append(f.resumes, req.GetFromSeq())
	_, ok := f.logs[req.GetChannelId()]
	limit := f.streamLimit
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "channel %s does not exist", req.GetChannelId())
	}
	next := max(req.GetFromSeq(), 1)
	if limit > 0 && next > 1 {
		next-- // repeat one: the client must drop it
	}
	sent := 0
	for {
		f.mu.Lock()
		log, changed := f.logs[req.GetChannelId()], f.changed
		f.mu.Unlock()
		for next <= uint64(len(log)) {
			if limit > 0 && sent == limit {
				return status.Error(codes.Unavailable, "fake: stream broke")
			}
			if err := stream.Send(&triarchv1.SubscribeMessagesResponse{Messages: []*triarchv1.Message{log[next-1]}}); err != nil {
				return err
			}
			next++
			sent++
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// exampleGateway starts an in-memory gateway for the package example and returns its address.
// It stays up until the test binary exits.
func exampleGateway() string {
	f := &fakeGateway{logs: map[string][]*triarchv1.Message{}, ids: map[string]map[string]uint64{}, changed: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	f.srv = grpc.NewServer()
	triarchv1.RegisterTriarchServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(lis) }()
	return lis.Addr().String()
}
