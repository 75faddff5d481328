package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	var notReady atomic.Bool
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "triarch_up 1\n")
	})
	ready := func(context.Context) error {
		if notReady.Load() {
			return errors.New("no arbiter leader")
		}
		return nil
	}
	s, err := Listen("127.0.0.1:0", Handler(metrics, ready), nil)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	base := "http://" + s.Addr().String()

	code, body := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)

	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	notReady.Store(true)
	code, body = get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "no arbiter leader")

	code, body = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "triarch_up 1\n", body)

	code, body = get(t, base+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.Contains(body, "goroutine"), "pprof index lists profiles")

	code, _ = get(t, base+"/nope")
	require.Equal(t, http.StatusNotFound, code)

	require.NoError(t, s.Shutdown(context.Background()))
	require.NoError(t, <-served)
}
