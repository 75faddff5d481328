package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

const (
	envEndpoint         = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint   = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envInsecure         = "OTEL_EXPORTER_OTLP_INSECURE"
	envTracesInsecure   = "OTEL_EXPORTER_OTLP_TRACES_INSECURE"
	envHeaders          = "OTEL_EXPORTER_OTLP_HEADERS"
	envTracesHeaders    = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
	envTracesSampler    = "OTEL_TRACES_SAMPLER"
	envTracesSamplerArg = "OTEL_TRACES_SAMPLER_ARG"
)

// newTracerProvider builds an SDK provider even when nothing is exported:
// spans then still get real, sampled ids, so log lines correlate across
// services and the W3C headers carry a trace through every hop.
func newTracerProvider(ctx context.Context, opts Options, res *resource.Resource, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	tpOpts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(samplerFromEnv(opts.Getenv, log)),
	}

	exp, err := newTraceExporter(ctx, opts.Getenv)
	if err != nil {
		return nil, err
	}
	if exp != nil {
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	for _, sp := range opts.SpanProcessors {
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(sp))
	}
	return sdktrace.NewTracerProvider(tpOpts...), nil
}

// newTraceExporter returns nil when no endpoint is configured. The exporter
// also reads OTEL_* from the real environment; the values read through
// getenv are passed explicitly because explicit options take precedence,
// which keeps an injected environment authoritative.
func newTraceExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	endpoint := firstNonEmpty(getenv(envTracesEndpoint), getenv(envEndpoint))
	if endpoint == "" {
		return nil, nil
	}

	var expOpts []otlptracegrpc.Option
	if strings.Contains(endpoint, "://") {
		// With a scheme, http means plaintext and https TLS; without one the
		// exporter defaults to TLS. OTEL_EXPORTER_OTLP_INSECURE=true forces
		// plaintext either way, as in the SDK's own reading.
		if _, err := url.Parse(endpoint); err != nil {
			return nil, fmt.Errorf("telemetry: OTLP endpoint %q: %w", endpoint, err)
		}
		expOpts = append(expOpts, otlptracegrpc.WithEndpointURL(endpoint))
	} else {
		expOpts = append(expOpts, otlptracegrpc.WithEndpoint(endpoint))
	}
	insecure, err := boolEnv(getenv, envTracesInsecure, envInsecure)
	if err != nil {
		return nil, err
	}
	if insecure {
		expOpts = append(expOpts, otlptracegrpc.WithInsecure())
	}
	headers, err := parseHeaders(firstNonEmpty(getenv(envTracesHeaders), getenv(envHeaders)))
	if err != nil {
		return nil, err
	}
	if len(headers) > 0 {
		expOpts = append(expOpts, otlptracegrpc.WithHeaders(headers))
	}

	// New does not wait for a connection: a collector that is down at start
	// costs dropped spans, never a failed process start.
	exp, err := otlptracegrpc.New(ctx, expOpts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: create OTLP trace exporter for %q: %w", endpoint, err)
	}
	return exp, nil
}

// DefaultSampleRatio is the share of traces started here that are sampled when
// OTEL_TRACES_SAMPLER is unset: a span per message at full rate costs a
// visible part of a send's CPU (the performance issue measured 8%), while one
// trace in a hundred still shows where time goes. A caller's sampled trace is
// always followed (parent-based).
const DefaultSampleRatio = 0.01

// samplerFromEnv mirrors the SDK's reading of OTEL_TRACES_SAMPLER, through
// getenv, with one difference: unset, it is parentbased_traceidratio at
// DefaultSampleRatio (OTEL_TRACES_SAMPLER_ARG still sets the ratio), not
// parentbased_always_on. Like the SDK it falls back to parentbased_always_on
// on a value it does not know (the spec lists samplers Go lacks), but says so
// in the log.
func samplerFromEnv(getenv func(string) string, log *slog.Logger) sdktrace.Sampler {
	def := sdktrace.ParentBased(sdktrace.AlwaysSample())
	name := strings.ToLower(strings.TrimSpace(getenv(envTracesSampler)))
	arg := strings.TrimSpace(getenv(envTracesSamplerArg))

	ratio := func() float64 {
		if arg == "" {
			if name == "" {
				return DefaultSampleRatio
			}
			return 1
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			log.Warn("invalid trace sampler ratio, sampling everything", "env", envTracesSamplerArg, "value", arg)
			return 1
		}
		return r
	}

	switch name {
	case "":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio()))
	case "parentbased_always_on":
		return def
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio()))
	default:
		log.Warn("unsupported trace sampler, using parentbased_always_on", "env", envTracesSampler, "value", name)
		return def
	}
}

// parseHeaders reads the OTLP headers format: comma-separated key=value
// pairs with percent-encoded values.
func parseHeaders(s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	headers := make(map[string]string)
	for pair := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("telemetry: OTLP headers: malformed pair %q (want key=value)", pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP headers: decode value of %q: %w", k, err)
		}
		headers[k] = val
	}
	return headers, nil
}

// boolEnv reads the first set variable of keys as a boolean.
func boolEnv(getenv func(string) string, keys ...string) (bool, error) {
	for _, k := range keys {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("telemetry: %s=%q: %w", k, v, err)
		}
		return b, nil
	}
	return false, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
