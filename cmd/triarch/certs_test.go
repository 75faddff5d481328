package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

func TestCertsInitWritesTheClustersCertificates(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"certs", "init", "--dir", dir, "--nodes", "arbiter/1,replica/2,admin/1"}, envOf(nil), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	lines := strings.Fields(out.String())
	require.Len(t, lines, 8, "the CA and three pairs: %s", out.String())
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "replica-2.crt"), filepath.Join(dir, "replica-2.key"))
	require.NoError(t, err)
	id, err := identity.FromCertificate(pair.Leaf)
	require.NoError(t, err)
	require.Equal(t, identity.ID{Role: identity.RoleReplica, Node: 2}, id)

	// Again: the CA stays, the named nodes are issued anew.
	out.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"certs", "init", "--dir", dir, "--nodes", "replica/3"}, envOf(nil), &out, &errOut))
	require.NotContains(t, out.String(), tlsx.CACertFile)

	for _, bad := range []string{"replica", "replica/x", "client/1", "replica/0", "replica/2,replica/2"} {
		errOut.Reset()
		code := run(context.Background(), []string{"certs", "init", "--dir", dir, "--nodes", bad}, envOf(nil), &out, &errOut)
		require.Equal(t, 1, code, bad)
		require.Contains(t, errOut.String(), "--nodes", bad)
	}
}

func TestTLSFlagsOnEveryService(t *testing.T) {
	for _, svc := range []func() *cobra.Command{newArbiterCmd, newChannelctlCmd, newReplicaCmd, newGatewayCmd, newHealthCmd} {
		fs := parseService(t, svc(), []string{"--tls-cert", "node.crt"}, map[string]string{
			"TRIARCH_TLS_CA": "ca.crt", "TRIARCH_TLS_KEY": "node.key", "TRIARCH_TLS_CERT": "other.crt"})
		require.Equal(t, "ca.crt", fs.Lookup("tls-ca").Value.String())
		require.Equal(t, "node.crt", fs.Lookup("tls-cert").Value.String(), "the command line wins")
		require.Equal(t, "node.key", fs.Lookup("tls-key").Value.String())
	}
	// Half a TLS configuration is refused before anything serves.
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"replica", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--tls-ca", "ca.crt"}, envOf(nil), &bytes.Buffer{}, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "--tls-cert is required")
}
