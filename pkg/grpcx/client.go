package grpcx

import (
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/triarch-io/triarch/pkg/telemetry"
)

// Dial returns a client connection to target with the suite's shared
// behaviour: tracing and metrics through tel (so the callee's spans join the
// caller's trace), keepalive, the same message limits as NewServer and a
// connect backoff suited to restarting nodes. Like grpc.NewClient it does
// not connect until the first call. extra options are applied last; a nil
// tel gives an untraced connection.
//
// Connections are plaintext unless extra carries transport credentials
// (Security.DialOption, or Security.Dialer which passes them).
func Dial(target string, tel *telemetry.Telemetry, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(clientKeepalive),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           connectBackoff,
			MinConnectTimeout: minConnectTimeout,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(DefaultMaxMsgSize),
			grpc.MaxCallSendMsgSize(DefaultMaxMsgSize),
		),
	}
	if tel != nil {
		dopts = append(dopts, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOptions(tel)...)))
	}
	conn, err := grpc.NewClient(target, append(dopts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("grpcx: client for %q: %w", target, err)
	}
	return conn, nil
}
