package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/services/gateway"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestEnvName(t *testing.T) {
	require.Equal(t, "TRIARCH_NODE_ID", envName("node-id"))
	require.Equal(t, "TRIARCH_ADMIN_ADDR", envName("admin-addr"))
	require.Equal(t, "TRIARCH_HIBERNATE_AFTER", envName("hibernate-after"))
}

// parseService parses args for a service subcommand without running it, applying env the way
// the root command does.
func parseService(t *testing.T, cmd *cobra.Command, args []string, env map[string]string) *pflag.FlagSet {
	t.Helper()
	fs := cmd.Flags()
	require.NoError(t, fs.Parse(args))
	require.NoError(t, applyEnv(fs, envOf(env)))
	return fs
}

func TestFlagsFromEnvAndCommandLine(t *testing.T) {
	cmd := newReplicaCmd()
	fs := parseService(t, cmd, []string{"--node-id", "7", "--listen", "127.0.0.1:1234"}, map[string]string{
		"TRIARCH_NODE_ID":       "9", // the command line wins
		"TRIARCH_ADMIN_ADDR":    "127.0.0.1:5555",
		"TRIARCH_ARBITERS":      "a:1,b:2,c:3",
		"TRIARCH_DEDUP_WINDOW":  "90m",
		"TRIARCH_DEDUP_MAX_IDS": "42",
		"TRIARCH_ZONE":          "eu-1",
	})
	get := func(name string) string { return fs.Lookup(name).Value.String() }
	require.Equal(t, "7", get("node-id"))
	require.Equal(t, "127.0.0.1:1234", get("listen"))
	require.Equal(t, "127.0.0.1:5555", get("admin-addr"))
	arbiters, err := fs.GetStringSlice("arbiters")
	require.NoError(t, err)
	require.Equal(t, []string{"a:1", "b:2", "c:3"}, arbiters)
	require.Equal(t, "1h30m0s", get("dedup-window"))
	require.Equal(t, "42", get("dedup-max-ids"))
	require.Equal(t, "eu-1", get("zone"))
}

func TestBadEnvValueIsAnError(t *testing.T) {
	cmd := newReplicaCmd()
	require.NoError(t, cmd.Flags().Parse(nil))
	err := applyEnv(cmd.Flags(), envOf(map[string]string{"TRIARCH_NODE_ID": "seven"}))
	require.ErrorContains(t, err, "TRIARCH_NODE_ID")
}

func TestResolveDefaults(t *testing.T) {
	c := commonFlags{logLevel: "debug", logFormat: "json"}
	c.NodeID = 3
	common, lvl, err := c.resolve("replica")
	require.NoError(t, err)
	require.Equal(t, "./triarch-data/replica-3", common.DataDir)
	require.Equal(t, "DEBUG", lvl.String())

	c.logFormat = "xml"
	_, _, err = c.resolve("replica")
	require.ErrorContains(t, err, "--log-format")
	c.logFormat, c.logLevel = "text", "loud"
	_, _, err = c.resolve("replica")
	require.ErrorContains(t, err, "--log-level")
}

func TestParsePeers(t *testing.T) {
	peers, err := parsePeers("1=a:7400, 2=b:7400,3=c:7400")
	require.NoError(t, err)
	require.Equal(t, map[uint64]string{1: "a:7400", 2: "b:7400", 3: "c:7400"}, peers)

	peers, err = parsePeers("")
	require.NoError(t, err)
	require.Empty(t, peers)

	for _, bad := range []string{"1", "0=a:1", "x=a:1", "1=nohost", "1=a:1,1=b:2"} {
		_, err := parsePeers(bad)
		require.Error(t, err, bad)
	}
}

func TestInvalidConfigIsRefusedBeforeServing(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"replica", "--node-id", "0", "--data-dir", t.TempDir(),
		"--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, envOf(nil), &bytes.Buffer{}, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "--node-id must be a positive integer")
}

// Every service documents every flag it has in --help.
func TestHelpDocumentsEveryFlag(t *testing.T) {
	for _, name := range []string{"dev", "arbiter", "channelctl", "replica", "gateway", "status", "send", "tail", "bench", "health"} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), []string{name, "--help"}, envOf(nil), &out, &out)
			require.Equal(t, 0, code)
			root := newRootCmd(envOf(nil))
			sub, _, err := root.Find([]string{name})
			require.NoError(t, err)
			n := 0
			sub.Flags().VisitAll(func(f *pflag.Flag) {
				n++
				require.Contains(t, out.String(), "--"+f.Name, "flag %s missing from help", f.Name)
				require.NotEmpty(t, strings.TrimSpace(f.Usage), "flag %s has no description", f.Name)
			})
			if name != "bench" { // bench's flags arrive with its scenarios (issue 7)
				require.Positive(t, n)
			}
		})
	}
	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"replica", "--help"}, envOf(nil), &out, &out))
	for _, common := range []string{"--node-id", "--listen", "--advertise", "--data-dir", "--arbiters", "--admin-addr"} {
		require.Contains(t, out.String(), common)
	}
}

func TestHealthFailsWhenNothingServes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	var out bytes.Buffer
	code := run(context.Background(), []string{"health", "--addr", addr, "--timeout", "300ms"}, envOf(nil), &out, &out)
	require.Equal(t, 1, code)
	require.Contains(t, out.String(), "health "+addr)
}

func TestPprofAndCreateChannelsFlags(t *testing.T) {
	for _, svc := range []func() *cobra.Command{newArbiterCmd, newChannelctlCmd, newReplicaCmd, newGatewayCmd} {
		cmd := svc()
		fs := parseService(t, cmd, nil, nil)
		require.Equal(t, "false", fs.Lookup("pprof").Value.String(), "%s: pprof is off by default", cmd.Name())
		fs = parseService(t, svc(), nil, map[string]string{"TRIARCH_PPROF": "true"})
		require.Equal(t, "true", fs.Lookup("pprof").Value.String(), cmd.Name())
	}
	fs := parseService(t, newGatewayCmd(), nil, nil)
	require.Equal(t, "true", fs.Lookup("create-channels").Value.String(), "implicit creation stays the default")
	fs = parseService(t, newGatewayCmd(), nil, map[string]string{"TRIARCH_CREATE_CHANNELS": "false"})
	require.Equal(t, "false", fs.Lookup("create-channels").Value.String())
	fs = parseService(t, newGatewayCmd(), []string{"--create-channels=false"}, map[string]string{"TRIARCH_CREATE_CHANNELS": "true"})
	require.Equal(t, "false", fs.Lookup("create-channels").Value.String(), "the command line wins")

	require.False(t, gatewayConfig(process.Common{}, gateway.Config{}, true).NoImplicitCreate)
	require.True(t, gatewayConfig(process.Common{}, gateway.Config{}, false).NoImplicitCreate)
	require.True(t, gatewayConfig(process.Common{Pprof: true}, gateway.Config{}, true).Pprof)
}

// The gateway's auth flags read their environment variables, and authentication stays off
// unless a credential file is named.
func TestGatewayAuthFlags(t *testing.T) {
	fs := parseService(t, newGatewayCmd(), nil, nil)
	require.Empty(t, fs.Lookup("auth-tokens").Value.String(), "no authentication by default")
	require.Equal(t, "triarch_grants", fs.Lookup("auth-jwt-grants-claim").Value.String())
	fs = parseService(t, newGatewayCmd(), []string{"--auth-jwt-issuer", "https://idp"},
		map[string]string{"TRIARCH_AUTH_TOKENS": "/etc/triarch/tokens.json", "TRIARCH_AUTH_JWKS": "/etc/triarch/jwks.json",
			"TRIARCH_AUTH_JWT_ISSUER": "other", "TRIARCH_AUTH_JWT_AUDIENCE": "triarch"})
	require.Equal(t, "/etc/triarch/tokens.json", fs.Lookup("auth-tokens").Value.String())
	require.Equal(t, "/etc/triarch/jwks.json", fs.Lookup("auth-jwks").Value.String())
	require.Equal(t, "https://idp", fs.Lookup("auth-jwt-issuer").Value.String(), "the command line wins")
	require.Equal(t, "triarch", fs.Lookup("auth-jwt-audience").Value.String())
}
