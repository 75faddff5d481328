package grpcx

import (
	"log/slog"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"

	"github.com/triarch-io/triarch/pkg/telemetry"
)

// ServerOptions tunes NewServer. The zero value is the default.
type ServerOptions struct {
	// MaxRecvMsgSize is the largest message the server accepts;
	// DefaultMaxMsgSize when zero.
	MaxRecvMsgSize int
	// Logger receives handler panics; tel.Logger when nil.
	Logger *slog.Logger
}

// NewServer returns a gRPC server with the suite's shared behaviour:
// tracing and metrics through tel, panic recovery, keepalive suited to
// long-lived peer streams and bounded message sizes. extra options are
// applied last, so a service can add interceptors or override a default. A
// nil tel gives an untraced server, for tools that have no telemetry.
func NewServer(tel *telemetry.Telemetry, opts ServerOptions, extra ...grpc.ServerOption) *grpc.Server {
	log := opts.Logger
	if log == nil && tel != nil {
		log = tel.Logger
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	recvSize := opts.MaxRecvMsgSize
	if recvSize <= 0 {
		recvSize = DefaultMaxMsgSize
	}

	sopts := []grpc.ServerOption{
		// Chained first, so recovery also wraps interceptors a service adds
		// with grpc.ChainUnaryInterceptor/ChainStreamInterceptor in extra.
		grpc.ChainUnaryInterceptor(unaryRecovery(log)),
		grpc.ChainStreamInterceptor(streamRecovery(log)),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.KeepaliveEnforcementPolicy(serverEnforcement),
		grpc.MaxRecvMsgSize(recvSize),
		grpc.MaxSendMsgSize(DefaultMaxMsgSize),
	}
	if tel != nil {
		sopts = append(sopts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelOptions(tel)...)))
	}
	return grpc.NewServer(append(sopts, extra...)...)
}

// otelOptions hands otelgrpc this process's providers explicitly; without
// them it would use the OpenTelemetry globals, which we never set.
func otelOptions(tel *telemetry.Telemetry) []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tel.TracerProvider),
		otelgrpc.WithMeterProvider(tel.MeterProvider),
		otelgrpc.WithPropagators(tel.Propagator),
	}
}
