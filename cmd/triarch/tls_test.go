package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
	"github.com/triarch-io/triarch/services/gateway"
)

// The tools speak TLS to a gateway that requires it: `triarch health` with the CA only (the
// public port needs no client certificate), or with a node's files, as a container's
// TRIARCH_TLS_* give it; plaintext fails.
func TestToolsConnectWithTLS(t *testing.T) {
	dir := t.TempDir()
	gw := identity.ID{Role: identity.RoleGateway, Node: 1}
	_, err := tlsx.Issue(tlsx.IssueOptions{Dir: dir, IDs: []identity.ID{gw}})
	require.NoError(t, err)
	files := tlsx.Files{CA: filepath.Join(dir, tlsx.CACertFile), Cert: filepath.Join(dir, tlsx.CertFile(gw)), Key: filepath.Join(dir, tlsx.KeyFile(gw))}
	g, err := gateway.Start(context.Background(), gateway.Config{
		Common: process.Common{NodeID: 1, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}, TLS: files,
		HTTPAddr: "127.0.0.1:0", DefaultReplication: 3}, testutil.Telemetry(t, "gateway", 1))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g.Stop(ctx))
	})
	health := func(env map[string]string, args ...string) (int, string) {
		var out bytes.Buffer
		code := run(context.Background(), append([]string{"health", "--addr", g.Addr(), "--timeout", "5s"}, args...), envOf(env), &out, &out)
		return code, out.String()
	}
	code, out := health(nil)
	require.Equal(t, 1, code, "plaintext: %s", out)
	code, out = health(nil, "--tls-ca", files.CA)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "SERVING")
	code, out = health(map[string]string{"TRIARCH_TLS_CA": files.CA, "TRIARCH_TLS_CERT": files.Cert, "TRIARCH_TLS_KEY": files.Key})
	require.Equal(t, 0, code, out)
	code, out = health(nil, "--tls-ca", files.CA, "--tls-cert", files.Cert)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "go together")
}
