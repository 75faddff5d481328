package tlsx

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/pkg/identity"
)

func filesOf(dir string, id identity.ID) Files {
	return Files{CA: filepath.Join(dir, CACertFile), Cert: filepath.Join(dir, CertFile(id)), Key: filepath.Join(dir, KeyFile(id))}
}

// handshake runs one TLS handshake between client and server configs over loopback TCP and
// returns the identities each side saw of the other (the server's "" for no certificate).
func handshake(t *testing.T, server, client *tls.Config) (clientSaw, serverSaw string, err error) {
	t.Helper()
	a, b := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := tls.Server(a, server)
	errc := make(chan error, 1)
	go func() {
		err := srv.HandshakeContext(ctx)
		if err != nil {
			_ = a.Close() // unblocks the client waiting for the server's flight
		}
		errc <- err
	}()
	cl := tls.Client(b, client)
	cerr := cl.HandshakeContext(ctx)
	if cerr != nil {
		_ = b.Close()
	}
	serr := <-errc
	if cerr != nil || serr != nil {
		return "", "", firstErr(cerr, serr)
	}
	id, err := identity.FromCertificate(cl.ConnectionState().PeerCertificates[0])
	require.NoError(t, err)
	clientSaw = id.String()
	if chains := srv.ConnectionState().VerifiedChains; len(chains) > 0 {
		peer, err := identity.FromCertificate(chains[0][0])
		require.NoError(t, err)
		serverSaw = peer.String()
	}
	return clientSaw, serverSaw, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func TestMutualHandshakeAndRoles(t *testing.T) {
	dir := t.TempDir()
	r1, r2, gw := identity.ID{Role: identity.RoleReplica, Node: 1}, identity.ID{Role: identity.RoleReplica, Node: 2}, identity.ID{Role: identity.RoleGateway, Node: 1}
	_, err := Issue(IssueOptions{Dir: dir, IDs: []identity.ID{r1, r2, gw}})
	require.NoError(t, err)
	srv, err := NewSource(filesOf(dir, r1), nil)
	require.NoError(t, err)
	cl, err := NewSource(filesOf(dir, r2), nil)
	require.NoError(t, err)

	clientSaw, serverSaw, err := handshake(t, srv.ServerConfig(false), cl.ClientConfig(identity.RoleReplica))
	require.NoError(t, err)
	require.Equal(t, r1.String(), clientSaw)
	require.Equal(t, r2.String(), serverSaw)

	// A client that wants a gateway does not accept a replica.
	_, _, err = handshake(t, srv.ServerConfig(false), cl.ClientConfig(identity.RoleGateway))
	require.ErrorContains(t, err, "want a")

	// A certificate from another CA is refused both ways.
	other := t.TempDir()
	_, err = Issue(IssueOptions{Dir: other, IDs: []identity.ID{r2}})
	require.NoError(t, err)
	stranger, err := NewSource(filesOf(other, r2), nil)
	require.NoError(t, err)
	_, _, err = handshake(t, srv.ServerConfig(false), stranger.ClientConfig())
	require.Error(t, err)
	_, _, err = handshake(t, stranger.ServerConfig(false), cl.ClientConfig())
	require.Error(t, err)

	// No client certificate: refused unless the server makes it optional.
	anon, err := ClientConfig(Files{CA: filepath.Join(dir, CACertFile)})
	require.NoError(t, err)
	_, _, err = handshake(t, srv.ServerConfig(false), anon)
	require.Error(t, err)
	_, serverSaw, err = handshake(t, srv.ServerConfig(true), anon)
	require.NoError(t, err)
	require.Empty(t, serverSaw)
}

// tcpPair is both ends of a loopback TCP connection (a net.Pipe does not buffer, and a
// handshake failing on one side would block the other's write).
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	client, err = net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	server, err = lis.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// Rotation: new files are used at the next handshake, without a restart; a half-written
// rotation (a key that does not match the certificate) keeps the previous pair.
func TestSourceReloadsChangedFiles(t *testing.T) {
	dir := t.TempDir()
	r1, r2 := identity.ID{Role: identity.RoleReplica, Node: 1}, identity.ID{Role: identity.RoleReplica, Node: 2}
	_, err := Issue(IssueOptions{Dir: dir, IDs: []identity.ID{r1, r2}})
	require.NoError(t, err)
	srv, err := NewSource(filesOf(dir, r1), nil)
	require.NoError(t, err)
	cl, err := NewSource(filesOf(dir, r2), nil)
	require.NoError(t, err)
	serial := func() string {
		t.Helper()
		c, _ := srv.current()
		return c.Leaf.SerialNumber.String()
	}
	before := serial()

	// A new certificate for the same node, as `triarch certs init` writes it.
	_, err = Issue(IssueOptions{Dir: dir, IDs: []identity.ID{r1}})
	require.NoError(t, err)
	after := serial()
	require.NotEqual(t, before, after, "the new certificate is used")
	_, _, err = handshake(t, srv.ServerConfig(false), cl.ClientConfig())
	require.NoError(t, err)

	// A key that does not match: the previous pair stays.
	otherKey, err := os.ReadFile(filepath.Join(dir, KeyFile(r2)))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, KeyFile(r1)), otherKey, 0o600))
	require.Equal(t, after, serial())
	_, _, err = handshake(t, srv.ServerConfig(false), cl.ClientConfig())
	require.NoError(t, err, "handshakes go on with the previous pair")

	// A new CA (the server's pair from it): a client still holding the old CA refuses it,
	// one given the new CA accepts it.
	require.NoError(t, os.Remove(filepath.Join(dir, CACertFile)))
	require.NoError(t, os.Remove(filepath.Join(dir, CAKeyFile)))
	_, err = Issue(IssueOptions{Dir: dir, IDs: []identity.ID{r1}})
	require.NoError(t, err)
	old, err := NewSource(filesOf(t.TempDir(), r2), nil)
	require.Error(t, err, "no files there")
	require.Nil(t, old)
	_, _, err = handshake(t, srv.ServerConfig(true), mustClient(t, Files{CA: filepath.Join(dir, CACertFile)}))
	require.NoError(t, err)
}

func mustClient(t *testing.T, f Files) *tls.Config {
	t.Helper()
	c, err := ClientConfig(f)
	require.NoError(t, err)
	return c
}

func TestFilesValidate(t *testing.T) {
	require.NoError(t, Files{}.Validate())
	require.NoError(t, Files{CA: "a", Cert: "b", Key: "c"}.Validate())
	err := Files{CA: "a", Cert: "b"}.Validate()
	require.ErrorContains(t, err, "--tls-key")
}

// A CA rotation: a node whose CA file holds both the old and the new CA accepts peers of
// either, which is what lets a cluster move to a new CA one node at a time (README, Security).
func TestCAFileWithTwoCAsAcceptsBoth(t *testing.T) {
	oldDir, newDir := t.TempDir(), t.TempDir()
	r1, r2 := identity.ID{Role: identity.RoleReplica, Node: 1}, identity.ID{Role: identity.RoleReplica, Node: 2}
	_, err := Issue(IssueOptions{Dir: oldDir, IDs: []identity.ID{r1, r2}})
	require.NoError(t, err)
	_, err = Issue(IssueOptions{Dir: newDir, IDs: []identity.ID{r2}})
	require.NoError(t, err)
	oldCA, err := os.ReadFile(filepath.Join(oldDir, CACertFile))
	require.NoError(t, err)
	newCA, err := os.ReadFile(filepath.Join(newDir, CACertFile))
	require.NoError(t, err)
	bundle := filepath.Join(t.TempDir(), "bundle.crt")
	require.NoError(t, os.WriteFile(bundle, append(append([]byte{}, oldCA...), newCA...), 0o644))

	f := filesOf(oldDir, r1)
	f.CA = bundle
	srv, err := NewSource(f, nil)
	require.NoError(t, err)
	for _, dir := range []string{oldDir, newDir} {
		f := filesOf(dir, r2)
		f.CA = bundle
		cl, err := NewSource(f, nil)
		require.NoError(t, err)
		_, serverSaw, err := handshake(t, srv.ServerConfig(false), cl.ClientConfig())
		require.NoError(t, err, "replica 2 certified by the CA of %s", dir)
		require.Equal(t, r2.String(), serverSaw)
	}
}

// BenchmarkHandshake is one mutual-TLS handshake between two nodes over loopback, the
// server and the client each checking their three files for a change (the cost of
// rotation without restart).
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	r1, r2 := identity.ID{Role: identity.RoleReplica, Node: 1}, identity.ID{Role: identity.RoleReplica, Node: 2}
	if _, err := Issue(IssueOptions{Dir: dir, IDs: []identity.ID{r1, r2}}); err != nil {
		b.Fatal(err)
	}
	srv, err := NewSource(filesOf(dir, r1), nil)
	if err != nil {
		b.Fatal(err)
	}
	cl, err := NewSource(filesOf(dir, r2), nil)
	if err != nil {
		b.Fatal(err)
	}
	scfg, ccfg := srv.ServerConfig(false), cl.ClientConfig(identity.RoleReplica)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = tls.Server(c, scfg).Handshake()
			}()
		}
	}()
	b.ResetTimer()
	for b.Loop() {
		c, err := tls.Dial("tcp", lis.Addr().String(), ccfg)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}

// BenchmarkSourceCurrent is the per-handshake check of the files alone.
func BenchmarkSourceCurrent(b *testing.B) {
	dir := b.TempDir()
	r1 := identity.ID{Role: identity.RoleReplica, Node: 1}
	if _, err := Issue(IssueOptions{Dir: dir, IDs: []identity.ID{r1}}); err != nil {
		b.Fatal(err)
	}
	s, err := NewSource(filesOf(dir, r1), nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s.current()
	}
}
