package telemetry

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// env returns a Getenv that sees only vars, so tests neither read nor
// change the process environment.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reading
// test.
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

func shutdown(t *testing.T, tel *Telemetry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, tel.Shutdown(ctx))
}

func TestSetupWithoutEndpoint(t *testing.T) {
	ctx := context.Background()
	var logs syncBuffer
	tel, err := Setup(ctx, Options{
		ServiceName: "triarch-test",
		NodeID:      7,
		LogWriter:   &logs,
		Getenv:      env(map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
	})
	require.NoError(t, err)

	_, isSDK := tel.TracerProvider.(*sdktrace.TracerProvider)
	assert.True(t, isSDK, "TracerProvider is %T, want the SDK provider", tel.TracerProvider)
	_, span := tel.Tracer("test").Start(ctx, "op")
	assert.True(t, span.SpanContext().IsSampled(), "spans must be sampled even without an exporter, as the sampler says")
	span.End()

	require.NotNil(t, tel.Logger)
	tel.Logger.Info("hello")
	line := logs.String()
	assert.Contains(t, line, "msg=hello")
	assert.Contains(t, line, "service=triarch-test")
	assert.Contains(t, line, "node_id=7")

	counter, err := tel.MeterProvider.Meter("test").Int64Counter("triarch_test")
	require.NoError(t, err)
	counter.Add(ctx, 3)

	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Header().Get("Content-Type"), "text/plain")
	body := rec.Body.String()
	assert.Regexp(t, `(?m)^triarch_test_total(\{.*\})? 3$`, body)
	assert.Regexp(t, `(?m)^go_goroutines \d+`, body)
	assert.Contains(t, body, "process_", "process collector missing")

	shutdown(t, tel)
}

func TestSetupRejectsUnknownLogFormat(t *testing.T) {
	_, err := Setup(context.Background(), Options{LogFormat: "xml", Getenv: env(nil), LogWriter: io.Discard})
	require.ErrorContains(t, err, "xml")
}

func TestSetupReadsResourceAndSamplerFromEnv(t *testing.T) {
	ctx := context.Background()
	rec := tracetest.NewSpanRecorder()
	var logs syncBuffer
	tel, err := Setup(ctx, Options{
		ServiceName: "triarch-test",
		NodeID:      3,
		LogWriter:   &logs,
		Getenv: env(map[string]string{"OTEL_SERVICE_NAME": "from-env", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,team=a%20b",
			"OTEL_TRACES_SAMPLER": "always_on"}),
		SpanProcessors: []sdktrace.SpanProcessor{rec},
	})
	require.NoError(t, err)
	_, span := tel.Tracer("test").Start(ctx, "op")
	span.End()
	shutdown(t, tel)

	ended := rec.Ended()
	require.Len(t, ended, 1)
	attrs := ended[0].Resource().Set()
	for key, want := range map[attribute.Key]string{
		"service.name":           "from-env",
		"service.instance.id":    "3",
		"triarch.node_id":        "3",
		"deployment.environment": "ci",
		"team":                   "a b",
	} {
		got, ok := attrs.Value(key)
		if assert.True(t, ok, "resource lacks %s", key) {
			assert.Equal(t, want, got.Emit(), key)
		}
	}

	tel.Logger.Info("x")
	assert.Contains(t, logs.String(), "service=from-env", "logs must name the service as spans do")
}

func TestSetupSamplerFromEnv(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel, err := Setup(context.Background(), Options{
		LogWriter:      io.Discard,
		Getenv:         env(map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}),
		SpanProcessors: []sdktrace.SpanProcessor{rec},
	})
	require.NoError(t, err)
	_, span := tel.Tracer("test").Start(context.Background(), "op")
	assert.False(t, span.SpanContext().IsSampled())
	span.End()
	shutdown(t, tel)
	assert.Empty(t, rec.Ended())
}

// Unset, the sampler keeps about DefaultSampleRatio of the traces started here (the rest still
// carry trace ids, for logs) and every trace whose caller sampled it.
func TestDefaultSamplerSamplesARatioAndFollowsTheParent(t *testing.T) {
	tel, err := Setup(context.Background(), Options{LogWriter: io.Discard, Getenv: env(nil)})
	require.NoError(t, err)
	defer shutdown(t, tel)
	tr := tel.Tracer("test")
	sampled := 0
	const n = 20000
	for range n {
		_, span := tr.Start(context.Background(), "op")
		require.True(t, span.SpanContext().HasTraceID(), "an unsampled span still has a trace id")
		if span.SpanContext().IsSampled() {
			sampled++
		}
		span.End()
	}
	// Trace ids are random: 1% of 20,000 is 200, and 100..400 is over 7 standard deviations wide.
	assert.InDelta(t, n*DefaultSampleRatio, sampled, n*DefaultSampleRatio/2, "sampled %d of %d", sampled, n)

	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
		TraceFlags: trace.FlagsSampled, Remote: true})
	_, span := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "child")
	assert.True(t, span.SpanContext().IsSampled(), "a sampled caller's trace is followed")
	span.End()
}

func TestSetupRejectsMalformedResourceAttributes(t *testing.T) {
	_, err := Setup(context.Background(), Options{
		LogWriter: io.Discard,
		Getenv:    env(map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"}),
	})
	require.ErrorContains(t, err, "OTEL_RESOURCE_ATTRIBUTES")
	assert.True(t, strings.Contains(err.Error(), "novalue"))
}
