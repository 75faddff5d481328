package testutil

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/telemetry"
)

// LogEnv names a file that receives every service's logs at debug level; unset, only the last
// lines of each service's info log are kept, and printed if the test fails. A failing cluster
// test is then re-run with it set, not with noisier defaults.
const LogEnv = "TRIARCH_TEST_LOG"

// FreeAddr returns a loopback address whose port was free a moment ago. Prefer Listen, or
// "127.0.0.1:0" where the service binds itself: a free port can be taken before it is used.
// It is for addresses that must be known before the listener exists (raft peers, processes
// started with a fixed --listen, a node restarted on its old address).
//
// The port lies below the kernel's ephemeral range (net.ipv4.ip_local_port_range), from which
// every outgoing connection takes its source port. A port bound at ":0" came from that range,
// and any connection the test made before the listener existed, or while its process was down
// between a kill and a restart, could take it: make verify failed with "replica 2 exited during
// start: listen on 127.0.0.1:43327: address already in use". Ports are handed out in turn from
// a random start, so one process never gets the same one twice.
func FreeAddr(t testing.TB) string {
	t.Helper()
	if lo, hi, ok := quietPorts(); ok {
		for range hi - lo {
			p := lo + int(nextPort.Add(1))%(hi-lo)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue // taken: try the next one
			}
			addr := l.Addr().String()
			require.NoError(t, l.Close())
			return addr
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// nextPort walks the quiet ports from a random start; shared by the whole test binary, as the
// ports themselves are.
var nextPort = func() *atomic.Int64 {
	var n atomic.Int64
	n.Store(rand.Int64N(1 << 20))
	return &n
}()

// quietPorts is the range FreeAddr picks from: the half below the ephemeral range, when that
// range starts high enough to leave one (Linux's default starts at 32768).
func quietPorts() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low < 8192 {
		return 0, 0, false
	}
	return low / 2, low, true
}

// Listen returns a listener on a free loopback port, closed when the test ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// Context returns a context that ends after d or when the test ends, whichever is first, so a
// call that hangs fails the test instead of the whole package's -timeout.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond every 50 ms until it returns nil and fails the test with cond's last
// error if that takes longer than d. It bounds a wait for a condition (a hang becomes a
// failure that says what was still missing), not the speed of what it waits for.
func Eventually(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not so after %v: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops a service (or anything with its Stop) within a generous deadline and requires it
// to stop cleanly.
func Stop(t testing.TB, s interface{ Stop(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(ctx))
}

// LogWriter is where services under test log: nowhere, unless LogEnv names a file (appended
// to, so several tests and processes can share it).
func LogWriter(t testing.TB) io.Writer {
	t.Helper()
	path := os.Getenv(LogEnv)
	if path == "" {
		return io.Discard
	}
	return appendTo(t, path)
}

func appendTo(t testing.TB, path string) io.Writer {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// LogLevel is debug when logs go to LogEnv's file (whoever reads them wants everything) and
// info otherwise (the level of what is discarded costs formatting only).
func LogLevel() slog.Level {
	if os.Getenv(LogEnv) != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// Telemetry is a service's telemetry in a test: logs to LogEnv's file at LogLevel, or else
// the last lines kept and printed if the test fails (tailOnFailure), no OTEL_*
// variable read (a developer's exporter settings must not make tests dial a collector), shut
// down when the test ends.
func Telemetry(t testing.TB, service string, node uint64) *telemetry.Telemetry {
	t.Helper()
	var w io.Writer = tailOnFailure(t, describe(service, node))
	if path := os.Getenv(LogEnv); path != "" {
		w = appendTo(t, path)
	}
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{
		ServiceName: service, NodeID: node, LogWriter: w, LogLevel: LogLevel(),
		Getenv: func(string) string { return "" },
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}
