package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func decodeLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

func TestLoggerCarriesTraceIDsInsideSpanOnly(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var buf bytes.Buffer
	logger := NewLogger(&buf, "json", slog.LevelInfo)

	ctx, span := tp.Tracer("test").Start(context.Background(), "op")
	logger.InfoContext(ctx, "inside")
	logger.With("k", "v").WithGroup("g").InfoContext(ctx, "grouped", "a", 1)
	span.End()
	logger.InfoContext(context.Background(), "outside")

	lines := decodeLines(t, &buf)
	require.Len(t, lines, 3)
	sc := span.SpanContext()

	inside := lines[0]
	assert.Equal(t, sc.TraceID().String(), inside[LogKeyTraceID])
	assert.Equal(t, sc.SpanID().String(), inside[LogKeySpanID])

	// Under a group the ids must stay at the top level, where log searches
	// look for them, while the group still holds the record's attributes.
	grouped := lines[1]
	assert.Equal(t, sc.TraceID().String(), grouped[LogKeyTraceID])
	assert.Equal(t, "v", grouped["k"])
	assert.Equal(t, map[string]any{"a": float64(1)}, grouped["g"])

	outside := lines[2]
	assert.NotContains(t, outside, LogKeyTraceID)
	assert.NotContains(t, outside, LogKeySpanID)
}

func TestLoggerTextFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	logger := NewLogger(&buf, "text", slog.LevelWarn)
	logger.Info("dropped")
	logger.Warn("kept")
	out := buf.String()
	assert.NotContains(t, out, "dropped")
	assert.Contains(t, out, "level=WARN msg=kept")
}
