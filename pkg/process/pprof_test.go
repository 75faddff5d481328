package process

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/telemetry"
)

// startProcess starts a bare process on loopback with pprof as given and returns its admin URL.
func startProcess(t *testing.T, pprof bool) string {
	t.Helper()
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "process-test", NodeID: 1, LogWriter: io.Discard,
		Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) })
	p, err := Start(Common{NodeID: 1, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Pprof: pprof}, tel, Options{})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	})
	return "http://" + p.AdminAddr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// pprofPaths are the profile endpoints, and spellings of them the mux cleans or redirects.
var pprofPaths = []string{"/debug/pprof/", "/debug/pprof", "/debug/pprof/cmdline", "/debug/pprof/symbol",
	"/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "//debug/pprof/cmdline", "/x/../debug/pprof/cmdline",
	"/debug/pprof/../pprof/cmdline"}

func TestPprofIsOffByDefault(t *testing.T) {
	base := startProcess(t, false)
	for _, p := range pprofPaths {
		code, body := get(t, base+p)
		require.Equal(t, http.StatusNotFound, code, "%s: %s", p, body)
		require.NotContains(t, body, "goroutine", p)
		require.NotContains(t, body, os.Args[0], p) // nor the command line
	}
	// The other admin endpoints are served as before.
	code, body := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	code, body = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "go_goroutines")
}

func TestPprofWithTheFlag(t *testing.T) {
	base := startProcess(t, true)
	code, body := get(t, base+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.Contains(body, "goroutine"), "the pprof index lists the profiles")
	code, body = get(t, base+"/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine profile")
	code, body = get(t, base+"/debug/pprof/cmdline")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, os.Args[0])
	code, _ = get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
}
