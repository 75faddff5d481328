package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Options configures Setup. The zero value is usable: it logs text at Info
// to stderr and reads the real environment.
type Options struct {
	// ServiceName is the service.name resource attribute, such as
	// "triarch-arbiter". OTEL_SERVICE_NAME overrides it.
	ServiceName string
	// NodeID is the triarch node id, recorded as a resource attribute and on
	// every log line.
	NodeID uint64

	// LogWriter receives the log lines; os.Stderr when nil.
	LogWriter io.Writer
	LogLevel  slog.Level
	// LogFormat is "text" (the default when empty) or "json".
	LogFormat string

	// Getenv reads the OTEL_* configuration; os.Getenv when nil. Tests inject
	// a map lookup so they neither depend on nor mutate the process
	// environment.
	Getenv func(string) string

	// SpanProcessors are added to the tracer provider next to the exporter's
	// batch processor. Tests use it to record spans in memory
	// (tracetest.SpanRecorder); it is also the hook for any other in-process
	// span consumer.
	SpanProcessors []sdktrace.SpanProcessor
}

const (
	logFormatText = "text"
	logFormatJSON = "json"
)

// withDefaults fills the zero fields and rejects values that would otherwise
// be silently ignored.
func (o Options) withDefaults() (Options, error) {
	if o.LogWriter == nil {
		o.LogWriter = os.Stderr
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	switch o.LogFormat {
	case "":
		o.LogFormat = logFormatText
	case logFormatText, logFormatJSON:
	default:
		return o, fmt.Errorf("telemetry: unknown log format %q (want %q or %q)", o.LogFormat, logFormatText, logFormatJSON)
	}
	return o, nil
}
