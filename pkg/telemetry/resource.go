package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

const (
	envServiceName        = "OTEL_SERVICE_NAME"
	envResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"

	// defaultServiceName is used when neither Options nor the environment
	// name the service, so spans are still attributable to the suite.
	defaultServiceName = "triarch"

	// nodeIDKey carries the triarch node id in its own attribute, because
	// service.instance.id alone does not say it is our node id and node ids
	// are only unique within a tier.
	nodeIDKey = attribute.Key("triarch.node_id")
)

// newResource describes this process. Precedence, lowest first: detected
// host and process facts, Options, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_SERVICE_NAME — the order the OpenTelemetry specification gives the
// environment over code.
func newResource(ctx context.Context, opts Options) (*resource.Resource, error) {
	name := opts.ServiceName
	if name == "" {
		name = defaultServiceName
	}
	node := strconv.FormatUint(opts.NodeID, 10)
	attrs := []attribute.KeyValue{
		semconv.ServiceName(name),
		semconv.ServiceInstanceID(node),
		nodeIDKey.String(node),
	}

	envAttrs, err := parseResourceAttributes(opts.Getenv(envResourceAttributes))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", envResourceAttributes, err)
	}
	attrs = append(attrs, envAttrs...)
	if v := strings.TrimSpace(opts.Getenv(envServiceName)); v != "" {
		attrs = append(attrs, semconv.ServiceName(v))
	}

	// resource.WithAttributes keeps the last value of a repeated key, which
	// is what gives the environment its precedence above.
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithAttributes(attrs...),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: build resource: %w", err)
	}
	return res, nil
}

// parseResourceAttributes reads the OTEL_RESOURCE_ATTRIBUTES format:
// comma-separated key=value pairs with percent-encoded values. Unlike the
// SDK, which drops malformed pairs with a warning, it fails, because a
// misspelt deployment attribute is better caught at start than found
// missing in a trace backend.
func parseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var attrs []attribute.KeyValue
	for pair := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("malformed pair %q (want key=value)", pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("decode value of %q: %w", k, err)
		}
		attrs = append(attrs, attribute.String(k, val))
	}
	return attrs, nil
}

// serviceName returns the service.name the resource ended up with, so log
// lines and spans name the service the same way.
func serviceName(res *resource.Resource) string {
	if v, ok := res.Set().Value(semconv.ServiceNameKey); ok {
		return v.AsString()
	}
	return defaultServiceName
}
