package grpcx

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// relayHealth answers a health check by asking the next service, so one
// call crosses two servers.
type relayHealth struct {
	healthpb.UnimplementedHealthServer
	next healthpb.HealthClient
}

func (r relayHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return r.next.Check(ctx, req)
}

func TestOneTraceAcrossTwoHops(t *testing.T) {
	telClient, recClient := newTelemetry(t, "client")
	telA, recA := newTelemetry(t, "service-a")
	telB, recB := newTelemetry(t, "service-b")

	srvB := NewServer(telB, ServerOptions{})
	healthpb.RegisterHealthServer(srvB, health.NewServer())
	addrB := serve(t, srvB)

	srvA := NewServer(telA, ServerOptions{})
	healthpb.RegisterHealthServer(srvA, relayHealth{next: healthpb.NewHealthClient(dial(t, addrB, telA))})
	addrA := serve(t, srvA)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(dial(t, addrA, telClient)).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	// Server spans end after the reply is on its way, so they may still be
	// open when Check returns.
	require.Eventually(t, func() bool {
		return len(recClient.Ended()) == 1 && len(recA.Ended()) == 2 && len(recB.Ended()) == 1
	}, 5*time.Second, 5*time.Millisecond, "spans: client %d, A %d, B %d",
		len(recClient.Ended()), len(recA.Ended()), len(recB.Ended()))

	client := onlySpan(t, recClient.Ended(), trace.SpanKindClient)
	aServer := onlySpan(t, recA.Ended(), trace.SpanKindServer)
	aClient := onlySpan(t, recA.Ended(), trace.SpanKindClient)
	bServer := onlySpan(t, recB.Ended(), trace.SpanKindServer)

	traceID := client.SpanContext().TraceID()
	for _, s := range []sdktrace.ReadOnlySpan{aServer, aClient, bServer} {
		assert.Equal(t, traceID, s.SpanContext().TraceID(), "span %s (%s) is in another trace", s.Name(), s.SpanKind())
	}
	// Each hop must be the child of the one before, not merely share the id.
	assert.Equal(t, client.SpanContext().SpanID(), aServer.Parent().SpanID())
	assert.Equal(t, aServer.SpanContext().SpanID(), aClient.Parent().SpanID())
	assert.Equal(t, aClient.SpanContext().SpanID(), bServer.Parent().SpanID())
	assert.Equal(t, "grpc.health.v1.Health/Check", bServer.Name())
}

func onlySpan(t *testing.T, spans []sdktrace.ReadOnlySpan, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanKind() == kind {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "want exactly one %s span", kind)
	return found[0]
}
