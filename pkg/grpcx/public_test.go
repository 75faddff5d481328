package grpcx

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// A public server closes a client connection left idle; peers' servers (NewServer alone) keep
// theirs. The idle bound is shortened here, with the same options otherwise.
func TestPublicServerClosesIdleConnections(t *testing.T) {
	for _, public := range []bool{true, false} {
		var extra []grpc.ServerOption
		if public {
			extra = append(PublicServerOptions(), grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 200 * time.Millisecond}))
		}
		srv := NewServer(nil, ServerOptions{}, extra...)
		healthpb.RegisterHealthServer(srv, health.NewServer())
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = srv.Serve(lis) }()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		// Wait for the connection to leave Ready (the server's GOAWAY): as long as it takes on
		// a busy machine for the public server, 1 s (five idle bounds) for the peer one.
		wait := time.Second
		if public {
			wait = 9 * time.Second
		}
		wctx, wcancel := context.WithTimeout(ctx, wait)
		closed := conn.WaitForStateChange(wctx, connectivity.Ready)
		wcancel()
		cancel()
		require.Equal(t, public, closed, "public=%v", public)
		_ = conn.Close()
		srv.Stop()
	}
}
