package telemetry

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// traceReceiver is an in-process OTLP/gRPC collector that keeps what it
// receives.
type traceReceiver struct {
	collectortrace.UnimplementedTraceServiceServer

	mu    sync.Mutex
	spans []*tracepb.ResourceSpans
}

func (r *traceReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, req.GetResourceSpans()...)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *traceReceiver) received() []*tracepb.ResourceSpans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.ResourceSpans(nil), r.spans...)
}

func startReceiver(t *testing.T) (*traceReceiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	recv := &traceReceiver{}
	collectortrace.RegisterTraceServiceServer(srv, recv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return recv, lis.Addr().String()
}

func TestSetupExportsSpansToOTLPEndpoint(t *testing.T) {
	recv, addr := startReceiver(t)
	ctx := context.Background()
	tel, err := Setup(ctx, Options{
		ServiceName: "triarch-otlp-test",
		NodeID:      1,
		LogWriter:   io.Discard,
		Getenv: env(map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + addr,
			"OTEL_EXPORTER_OTLP_INSECURE": "true",
			"OTEL_TRACES_SAMPLER":         "always_on",
		}),
	})
	require.NoError(t, err)

	_, span := tel.Tracer("test").Start(ctx, "exported-span")
	span.End()
	// Shutdown flushes the batch processor synchronously, so the receiver
	// has the span once it returns.
	shutdown(t, tel)

	var found bool
	for _, rs := range recv.received() {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				if s.GetName() == "exported-span" {
					found = true
					require.Equal(t, "triarch-otlp-test", service)
				}
			}
		}
	}
	require.True(t, found, "receiver did not get span exported-span; got %v", recv.received())
}
