package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/bench"
)

func TestBenchRefusesBadInvocations(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "failover"},
		{"bench", "throughput", "--dev", "--gateway", "127.0.0.1:1"},
		{"bench", "throughput", "--duration", "0"},
		{"bench", "throughput", "--batch", "0"},
		{"bench", "latency", "--rate", "0"},
	} {
		var out bytes.Buffer
		require.Equal(t, 1, run(context.Background(), args, envOf(nil), &out, &out), "%v", args)
		require.Contains(t, out.String(), "bench", "%v", args)
	}
}

// A short throughput run against an in-process suite acknowledges messages and reads them
// all back.
func TestBenchThroughputDev(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dev suite")
	}
	path := filepath.Join(t.TempDir(), "r.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "throughput", "--dev", "--duration", "2s", "--channels", "10",
		"--producers", "8", "--json", path}, envOf(nil), &out, &errb)
	t.Log(out.String())
	require.Equal(t, 0, code, errb.String())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var r bench.Result
	require.NoError(t, json.Unmarshal(b, &r))
	require.Equal(t, "throughput", r.Scenario)
	require.Positive(t, r.AckedMsgs)
	require.NotNil(t, r.Verification)
	require.True(t, r.Verification.OK)
	require.Equal(t, 10, r.Verification.Channels)
	require.Positive(t, r.Verification.Acked)
	require.Contains(t, out.String(), "read-back")
}
