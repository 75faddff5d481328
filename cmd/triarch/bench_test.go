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
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "nosuch"}, "unknown scenario"},
		{[]string{"bench", "throughput", "--dev", "--gateway", "127.0.0.1:1"}, "exclude each other"},
		{[]string{"bench", "throughput", "--duration", "0"}, "the load must end"},
		{[]string{"bench", "throughput", "--batch", "0"}, "--batch"},
		{[]string{"bench", "latency", "--rate", "0"}, "--rate"},
		{[]string{"bench", "failover"}, "--kill-cmd"},
		{[]string{"bench", "failover", "--gateway", "127.0.0.1:1"}, "cannot kill a replica itself"},
		{[]string{"bench", "failover", "--dev", "--kill-cmd", "true"}, "--kill-cmd is for --gateway"},
		{[]string{"bench", "failover", "--dev", "--warmup", "10s", "--duration", "5s"}, "--warmup"},
		{[]string{"bench", "failover", "--dev", "--fault", "unplug"}, "want kill, pause or blackhole"},
		{[]string{"bench", "failover", "--dev", "--heal-cmd", "true"}, "--heal-cmd is for --gateway"},
		{[]string{"bench", "failover", "--kill-cmd", "true", "--procs"}, "--procs is for --dev"},
		{[]string{"bench", "hibernate", "--gateway", "127.0.0.1:1"}, "--replica-metrics"},
		{[]string{"bench", "hibernate", "--dev", "--channels", "5", "--sample", "6"}, "--sample"},
		{[]string{"bench", "fanout", "--dev", "--size", "4"}, "--size"},
		{[]string{"bench", "fanout", "--dev", "--subscribers", "0"}, "--subscribers"},
	} {
		var out bytes.Buffer
		require.Equal(t, 1, run(context.Background(), tc.args, envOf(nil), &out, &out), "%v", tc.args)
		require.Contains(t, out.String(), "bench", "%v", tc.args)
		require.Contains(t, out.String(), tc.want, "%v", tc.args)
	}
}

// bench without a scenario lists all five.
func TestBenchHelpListsEveryScenario(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"bench"}, envOf(nil), &out, &out))
	for _, s := range []string{"throughput", "latency", "failover", "hibernate", "fanout"} {
		require.Contains(t, out.String(), "\n  "+s+" ", s)
	}
	require.NotContains(t, out.String(), "not built")
}

// benchDev runs a bench scenario against a dev suite and decodes its --json into v.
func benchDev(t *testing.T, v any, args ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a dev suite")
	}
	path := filepath.Join(t.TempDir(), "r.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), append(append([]string{"bench"}, args...), "--dev", "--json", path), envOf(nil), &out, &errb)
	t.Log(out.String())
	require.Equal(t, 0, code, errb.String())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v))
	return out.String()
}

// Killing the replica that leads the most channels: the led channels recover, the node is
// seen dead, and every acked message reads back once.
func TestBenchFailoverDev(t *testing.T) {
	var r bench.FailoverResult
	out := benchDev(t, &r, "failover", "--channels", "12", "--warmup", "1s", "--duration", "5s")
	require.Equal(t, "failover", r.Scenario)
	require.Positive(t, r.NumCPU)
	require.NotZero(t, r.KilledNode)
	require.Positive(t, r.LedChannels)
	require.Equal(t, uint64(r.LedChannels), r.UnavailabilityLed.Count)
	require.Equal(t, uint64(12), r.UnavailabilityAll.Count)
	require.Zero(t, r.Unrecovered)
	require.Positive(t, r.UnavailabilityLed.Max)
	require.NotNil(t, r.DetectionMs, "the killed node was never seen dead")
	require.NotNil(t, r.Verification)
	require.True(t, r.Verification.OK)
	require.Equal(t, 12, r.Verification.Channels)
	require.Equal(t, r.AckedMsgs, r.Verification.Acked)
	require.Contains(t, out, "unavailability")
}

// Channels with one message each hibernate; memory is measured; the woken sample holds both
// messages.
func TestBenchHibernateDev(t *testing.T) {
	var r bench.HibernateResult
	out := benchDev(t, &r, "hibernate", "--channels", "30", "--sample", "5", "--hibernate-after", "1s", "--hibernate-wait", "60s")
	require.Equal(t, "hibernate", r.Scenario)
	require.Positive(t, r.Before.RSS)
	require.Positive(t, r.After.HeapInuse)
	require.Equal(t, 1, r.Processes)
	require.Equal(t, uint64(5), r.Wake.Count)
	require.Positive(t, r.Wake.P50)
	require.True(t, r.Verification.OK)
	require.Equal(t, int64(10), r.Verification.Acked)
	require.Equal(t, int64(10), r.Verification.Read)
	require.Contains(t, out, "per hibernated channel")
}

// Every subscriber of every channel gets every acked message once, in order.
func TestBenchFanoutDev(t *testing.T) {
	var r bench.FanoutResult
	out := benchDev(t, &r, "fanout", "--channels", "2", "--subscribers", "3", "--rate", "200", "--duration", "2s")
	require.Equal(t, "fanout", r.Scenario)
	require.Positive(t, r.AckedMsgs)
	require.True(t, r.Check.OK, r.Check.Examples)
	require.Equal(t, 6, r.Check.Subscribers)
	require.Equal(t, 3*r.AckedMsgs, r.Check.Expected)
	require.Equal(t, uint64(r.Check.Received), r.Delivery.Count)
	require.Contains(t, out, "delivery check")
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
