package grpcx

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/triarch-io/triarch/pkg/telemetry"
)

// panicHealth panics on a check of the service "panic" and on every watch,
// and answers other checks normally.
type panicHealth struct {
	healthpb.UnimplementedHealthServer
}

func (panicHealth) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == "panic" {
		panic("boom in unary handler")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (panicHealth) Watch(*healthpb.HealthCheckRequest, healthpb.Health_WatchServer) error {
	panic("boom in stream handler")
}

func TestPanickingHandlerReturnsInternalAndServerKeepsServing(t *testing.T) {
	tel, _ := newTelemetry(t, "panic-test")
	var logs syncBuffer
	srv := NewServer(tel, ServerOptions{Logger: telemetry.NewLogger(&logs, "text", slog.LevelInfo)})
	healthpb.RegisterHealthServer(srv, panicHealth{})
	client := healthpb.NewHealthClient(dial(t, serve(t, srv), tel))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "panic"})
	require.Equal(t, codes.Internal, status.Code(err), "unary panic: %v", err)
	assert.NotContains(t, err.Error(), "boom", "the panic value must not reach clients")

	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Internal, status.Code(err), "stream panic: %v", err)

	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "server must keep serving after a panic")
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	out := logs.String()
	assert.Contains(t, out, "boom in unary handler")
	assert.Contains(t, out, "boom in stream handler")
	assert.Contains(t, out, "/grpc.health.v1.Health/Check")
	assert.Contains(t, out, "panicHealth.Check", "the log must carry the panicking stack")
}

func TestDefaultMessageLimitAboveGRPCDefault(t *testing.T) {
	tel, _ := newTelemetry(t, "size-test")
	srv := NewServer(tel, ServerOptions{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	client := healthpb.NewHealthClient(dial(t, serve(t, srv), tel))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// 5 MiB is past gRPC's own 4 MiB receive limit and within ours: the
	// server must get as far as looking the (unknown) service up.
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 5<<20)})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
}

func TestMaxRecvMsgSizeIsEnforced(t *testing.T) {
	tel, _ := newTelemetry(t, "size-test")
	srv := NewServer(tel, ServerOptions{MaxRecvMsgSize: 1024})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	client := healthpb.NewHealthClient(dial(t, serve(t, srv), tel))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 2048)})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
}
