package client_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/client"
)

// Options.Token goes out as a Bearer authorization with every call; without it, none does.
func TestTokenIsSentWithEveryCall(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen = append(seen, md.Get("authorization")...)
		mu.Unlock()
		return h(ctx, req)
	}))
	triarchv1.RegisterTriarchServiceServer(srv, &triarchv1.UnimplementedTriarchServiceServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	for _, token := range []string{"s3cret", ""} {
		c, err := client.Dial(tctx(t), lis.Addr().String(), client.Options{Token: token})
		require.NoError(t, err)
		_, _ = c.Cluster(tctx(t))
		_, _ = c.CreateChannel(tctx(t), "c", 3)
		require.NoError(t, c.Close())
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"Bearer s3cret", "Bearer s3cret"}, seen)
}
