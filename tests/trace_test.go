package tests

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/telemetry"
	"github.com/triarch-io/triarch/services/suite"
)

// One send through the gateway is one trace, from the client through the gateway, the
// channelctl's resolve (and its arbiter calls) to the replica's append, which returns once the
// message is committed.
func TestOneSendIsOneTraceAcrossTheTiers(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the suite")
	}
	rec := tracetest.NewSpanRecorder()
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "trace-test", NodeID: 1, LogWriter: io.Discard,
		SpanProcessors: []sdktrace.SpanProcessor{rec}, Getenv: sampleEverything})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(ctx) })
	s, err := suite.Start(ctx, suite.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}, tel)
	require.NoError(t, err)
	t.Cleanup(func() { testutil.Stop(t, s) })

	conn, err := grpcx.Dial(s.GRPCAddr(), tel)
	require.NoError(t, err)
	defer conn.Close()
	sctx, span := tel.Tracer("test").Start(ctx, "client send")
	_, err = triarchv1.NewTriarchServiceClient(conn).SendMessages(sctx, &triarchv1.SendMessagesRequest{ChannelId: "traced",
		Messages: []*triarchv1.MessageInput{{ClientMsgId: "t-1", Payload: []byte("hi")}}})
	require.NoError(t, err)
	span.End()
	traceID := span.SpanContext().TraceID()

	want := []string{
		"triarch.v1.TriarchService/SendMessages",
		"triarch.channelctl.v1.ChannelControlService/ResolveChannel",
		"triarch.arbiter.v1.ArbiterService/CreateChannel",
		"triarch.replica.v1.ReplicaService/Append",
	}
	require.Eventually(t, func() bool {
		seen := map[string]bool{}
		for _, sp := range rec.Ended() {
			if sp.SpanContext().TraceID() == traceID && sp.SpanKind().String() == "server" {
				seen[sp.Name()] = true
			}
		}
		for _, w := range want {
			if !seen[w] {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "server spans of every tier in the client's trace")
}

// sampleEverything is the OTEL_* environment of a test that looks at every span: the default
// samples one trace in a hundred (telemetry.DefaultSampleRatio).
func sampleEverything(k string) string {
	if k == "OTEL_TRACES_SAMPLER" {
		return "always_on"
	}
	return ""
}
