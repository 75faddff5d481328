package tlsx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/identity"
)

func TestIssueCreatesACAAndNodeCertificates(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ids := []identity.ID{{Role: identity.RoleArbiter, Node: 1}, {Role: identity.RoleReplica, Node: 2}}
	written, err := Issue(IssueOptions{Dir: dir, IDs: ids, Hosts: []string{"gw.example", "10.0.0.7"}, Now: now})
	require.NoError(t, err)
	require.Len(t, written, 6)

	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	require.NoError(t, err)
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	ca, _, err := loadCA(dir)
	require.NoError(t, err)
	require.True(t, ca.IsCA)
	require.WithinDuration(t, now.Add(CALifetime), ca.NotAfter, 2*time.Minute)
	requireP256(t, ca.PublicKey)

	for _, id := range ids {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile(id)), filepath.Join(dir, KeyFile(id)))
		require.NoError(t, err, id)
		leaf := pair.Leaf
		requireP256(t, leaf.PublicKey)
		require.WithinDuration(t, now.Add(LeafLifetime), leaf.NotAfter, 2*time.Minute)
		got, err := identity.FromCertificate(leaf)
		require.NoError(t, err)
		require.Equal(t, id, got)
		require.Contains(t, leaf.DNSNames, "gw.example")
		require.Contains(t, leaf.DNSNames, "localhost")
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}})
			require.NoError(t, err, "%s for %v", id, usage)
		}
		fi, err := os.Stat(filepath.Join(dir, KeyFile(id)))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "a key is its owner's only")
	}

	// Again with the same directory: the CA is kept, and a new node's certificate chains to it.
	more := identity.ID{Role: identity.RoleReplica, Node: 3}
	written, err = Issue(IssueOptions{Dir: dir, IDs: []identity.ID{more}})
	require.NoError(t, err)
	require.Len(t, written, 2, "the CA is not written again")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile(more)), filepath.Join(dir, KeyFile(more)))
	require.NoError(t, err)
	_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)

	_, err = Issue(IssueOptions{Dir: dir, IDs: []identity.ID{{Role: "client", Node: 1}}})
	require.Error(t, err)
}

func requireP256(t *testing.T, pub any) {
	t.Helper()
	k, ok := pub.(*ecdsa.PublicKey)
	require.True(t, ok, "%T", pub)
	require.Equal(t, elliptic.P256(), k.Curve)
}
