package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MaxRESTBodyBytes bounds a REST request body. A send at the 4 MiB batch limit takes about
// 5.4 MiB as JSON (payloads are base64), so it fits; a larger body is refused with 413 before
// it is decoded.
const MaxRESTBodyBytes = 8 << 20

// newRESTMux is the grpc-gateway mux of the public API with triarch's JSON and error mapping.
//
// Channel ids may contain ':' (as well as '@' and '.'), which grpc-gateway also uses for custom
// verbs such as messages:subscribe. Its mux only splits a verb off the last path segment when
// the pattern being matched has that verb, so /v1/channels/a:b and /v1/channels/a:b/messages
// match their routes as they are. UnescapingModeAllCharacters makes percent-encoded ids work
// too (/v1/channels/a%3Ab, as JavaScript's encodeURIComponent writes it): the default mode
// leaves reserved characters such as %3A and %40 encoded in path parameters, and the id would
// then fail validation.
func newRESTMux() *runtime.ServeMux {
	// Proto field names (channel_id, from_seq) in JSON, as in the contract (docs/ARCHITECTURE.md), and every
	// field present so clients need not know proto3's zero-value omission. Unknown fields are
	// an error: a misspelt field must not be silently ignored.
	m := &restMarshaler{JSONPb: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
	return runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, m),
		runtime.WithErrorHandler(restError),
		runtime.WithStreamErrorHandler(streamError),
		runtime.WithUnescapingMode(runtime.UnescapingModeAllCharacters),
		runtime.WithForwardResponseOption(startStream),
	)
}

// startStream sends a REST subscription's 200 and headers as soon as the gRPC side says the
// channel was found, instead of with the first message, which on a quiet channel may be long
// in coming. grpc-gateway calls forward-response options with a nil message once at the start
// of a stream. Errors before that (unknown channel, no leader) keep their own HTTP status.
func startStream(ctx context.Context, w http.ResponseWriter, m proto.Message) error {
	if m != nil {
		return nil
	}
	md, ok := runtime.ServerMetadataFromContext(ctx)
	if !ok || len(md.HeaderMD.Get(streamOpenHeader)) == 0 {
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w).Flush()
}

// HTTPStatus is the HTTP status of a gRPC status: grpc-gateway's mapping, except that input
// over a size limit (InvalidArgument with the TOO_LARGE reason) is 413.
func HTTPStatus(st *status.Status) int {
	if st.Code() == codes.InvalidArgument && reason(st) == ErrorReasonTooLarge {
		return http.StatusRequestEntityTooLarge
	}
	return runtime.HTTPStatusFromCode(st.Code())
}

func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// retryAfterSeconds is the Retry-After of an Unavailable or ResourceExhausted answer: its
// RetryInfo delay rounded up to whole seconds, at least 1.
func retryAfterSeconds(st *status.Status) string {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return strconv.Itoa(max(1, int(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))))
		}
	}
	return "1"
}

// restError writes a unary call's error: the status as JSON ({"code", "message", "details"})
// with the HTTP status of HTTPStatus, and Retry-After on 503 and 429.
func restError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	httpCode := 0
	var hse *runtime.HTTPStatusError
	if errors.As(err, &hse) {
		httpCode, err = hse.HTTPStatus, hse.Err
	}
	st := status.Convert(err)
	if b, ok := r.Context().Value(bodyKey{}).(*limitedBody); ok && b.exceeded.Load() {
		st = status.Convert(tooLarge(MaxRESTBodyBytes, "request body is larger than %d bytes (8 MiB)", MaxRESTBodyBytes))
		httpCode = 0
	}
	if httpCode == 0 {
		httpCode = HTTPStatus(st)
	}
	if httpCode == http.StatusServiceUnavailable || httpCode == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfterSeconds(st))
	}
	if httpCode == http.StatusUnauthorized {
		// grpc-gateway puts the status message in WWW-Authenticate; clients expect a challenge
		// (RFC 6750), and the message is in the body anyway.
		w = &challengeWriter{ResponseWriter: w}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: httpCode, Err: st.Err()})
}

// challengeWriter answers a 401 with a Bearer challenge in WWW-Authenticate, whatever the
// handler set there.
type challengeWriter struct{ http.ResponseWriter }

func (w *challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="triarch"`)
	}
	w.ResponseWriter.WriteHeader(code)
}

// streamError is the status of the error that ended a REST stream, written as the stream's
// last line, {"error": {...}}. When nothing was streamed yet, grpc-gateway also sends it as the
// HTTP status (404 for an unknown channel, 503 with Retry-After when no leader is reachable).
func streamError(_ context.Context, err error) *status.Status {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err)
	}
	return status.Convert(err)
}

// restMarshaler is grpc-gateway's JSON marshaler with decoding errors that say what was wrong.
type restMarshaler struct{ *runtime.JSONPb }

func (m *restMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	d := m.JSONPb.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		err := d.Decode(v)
		if err == nil || errors.Is(err, io.EOF) {
			return err
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body is larger than %d bytes", mbe.Limit)
		}
		return fmt.Errorf("malformed JSON request body: %w", err)
	})
}

// bodyKey is the context key of a request's limitedBody.
type bodyKey struct{}

// limitedBody is a request body cut at MaxRESTBodyBytes that remembers whether it was cut.
type limitedBody struct {
	io.ReadCloser
	exceeded atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.exceeded.Store(true)
	}
	return n, err
}

// restMiddleware bounds request bodies and adds Retry-After to every 503 and 429, including
// those grpc-gateway writes itself when a stream fails before its first message.
func restMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &restWriter{ResponseWriter: w}
		if r.Body != nil && r.Body != http.NoBody {
			b := &limitedBody{ReadCloser: http.MaxBytesReader(rw, r.Body, MaxRESTBodyBytes)}
			r.Body = b
			r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, b))
		}
		next.ServeHTTP(rw, r)
	})
}

type restWriter struct{ http.ResponseWriter }

func (w *restWriter) WriteHeader(code int) {
	if (code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush and Unwrap keep streaming working through the wrapper.
func (w *restWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *restWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
