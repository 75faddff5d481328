package gateway

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/grpcx"
)

// benchConn answers in memory with canned responses: what is left is the router's own cost.
type benchConn struct{ results []*replicav1.AppendResult }

func (c *benchConn) Invoke(_ context.Context, _ string, args, reply any, _ ...grpc.CallOption) error {
	switch out := reply.(type) {
	case *channelctlv1.ResolveChannelResponse:
		out.ChannelId, out.LeaderNodeId, out.LeaderAddress = args.(*channelctlv1.ResolveChannelRequest).GetChannelId(), 1, "r1"
	case *replicav1.AppendResponse:
		out.Results = c.results
	default:
		return status.Error(codes.Unimplemented, "bench")
	}
	return nil
}

func (c *benchConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "bench")
}

func benchMsgs() []*triarchv1.MessageInput {
	return []*triarchv1.MessageInput{{ClientMsgId: "0123456789abcdef0123456789abcdef", Sender: "bench", Payload: make([]byte, 128)}}
}

// BenchmarkRouterAppendCacheHit is the router's hot path alone: a cached route and a forward
// to an in-memory replica.
func BenchmarkRouterAppendCacheHit(b *testing.B) {
	conn := &benchConn{results: []*replicav1.AppendResult{{Seq: 1}}}
	r, err := NewRouter(RouterConfig{Channelctls: []string{"ctl"}, Dial: func(string) (grpc.ClientConnInterface, error) { return conn, nil }})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	msgs := benchMsgs()
	ctx := context.Background()
	if _, err := r.Append(ctx, "bench", msgs); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Append(ctx, "bench", msgs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := r.Append(ctx, "bench", msgs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// benchReplica is a ReplicaService that acknowledges at once (no raft, no disk).
type benchReplica struct {
	replicav1.UnimplementedReplicaServiceServer
}

func (benchReplica) Append(_ context.Context, req *replicav1.AppendRequest) (*replicav1.AppendResponse, error) {
	out := &replicav1.AppendResponse{Results: make([]*replicav1.AppendResult, len(req.GetMessages()))}
	for i := range out.Results {
		out.Results[i] = &replicav1.AppendResult{Seq: uint64(i + 1)}
	}
	return out, nil
}

type benchCtl struct {
	channelctlv1.UnimplementedChannelControlServiceServer
	addr string
}

func (c benchCtl) ResolveChannel(_ context.Context, req *channelctlv1.ResolveChannelRequest) (*channelctlv1.ResolveChannelResponse, error) {
	return &channelctlv1.ResolveChannelResponse{ChannelId: req.GetChannelId(), LeaderNodeId: 1, LeaderAddress: c.addr}, nil
}

// BenchmarkRouterAppendLoopback is the same hot path with the forward over real gRPC on
// loopback (grpcx connections, no telemetry) to a replica that acknowledges at once.
func BenchmarkRouterAppendLoopback(b *testing.B) {
	lis := testutil.Listen(b)
	srv := grpc.NewServer()
	replicav1.RegisterReplicaServiceServer(srv, benchReplica{})
	channelctlv1.RegisterChannelControlServiceServer(srv, benchCtl{addr: lis.Addr().String()})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	r, err := NewRouter(RouterConfig{Channelctls: []string{lis.Addr().String()},
		Dial: func(addr string) (grpc.ClientConnInterface, error) { return grpcx.Dial(addr, nil) }})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	msgs := benchMsgs()
	ctx := context.Background()
	if _, err := r.Append(ctx, "bench", msgs); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Append(ctx, "bench", msgs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := r.Append(ctx, "bench", msgs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
