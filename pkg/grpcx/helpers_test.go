package grpcx

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"

	"github.com/triarch-io/triarch/pkg/telemetry"
)

// newTelemetry returns a Telemetry that exports nothing and records every
// ended span in memory.
func newTelemetry(t *testing.T, service string) (*telemetry.Telemetry, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{
		ServiceName: service,
		LogWriter:   io.Discard,
		Getenv: func(k string) string {
			if k == "OTEL_TRACES_SAMPLER" {
				return "always_on" // every span, for the assertions
			}
			return ""
		},
		SpanProcessors: []sdktrace.SpanProcessor{rec},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, tel.Shutdown(ctx))
	})
	return tel, rec
}

// serve runs srv on a loopback port until the test ends and returns its
// address.
func serve(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, tel *telemetry.Telemetry) *grpc.ClientConn {
	t.Helper()
	conn, err := Dial(addr, tel)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// syncBuffer is a bytes.Buffer safe for a server goroutine writing and the
// test reading.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
