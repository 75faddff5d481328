package arbiter

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/arbiterclient"
	"github.com/triarch-io/triarch/pkg/grpcx"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// Issue 17 item 1: three members with mutual TLS form the metadata group (the join of new
// members and raft between them run over TLS, each member as itself) and serve a node's
// registration; a replica's certificate may register only its own node.
func TestMembersFormOverTLS(t *testing.T) {
	dir := t.TempDir()
	replica := identity.ID{Role: identity.RoleReplica, Node: 7}
	ids := []identity.ID{replica}
	for id := uint64(1); id <= 3; id++ {
		ids = append(ids, identity.ID{Role: identity.RoleArbiter, Node: id})
	}
	_, err := tlsx.Issue(tlsx.IssueOptions{Dir: dir, IDs: ids})
	require.NoError(t, err)
	files := func(id identity.ID) tlsx.Files {
		return tlsx.Files{CA: filepath.Join(dir, tlsx.CACertFile), Cert: filepath.Join(dir, tlsx.CertFile(id)), Key: filepath.Join(dir, tlsx.KeyFile(id))}
	}
	m := newMembers(t, 3)
	for id := range m.peers {
		s, err := Start(context.Background(), Config{
			Common:       process.Common{NodeID: id, Listen: m.peers[id], AdminAddr: "127.0.0.1:0", DataDir: m.dirs[id]},
			TLS:          files(identity.ID{Role: identity.RoleArbiter, Node: id}),
			Peers:        m.peers,
			TickInterval: 10 * time.Millisecond,
		}, testutil.Telemetry(t, "arbiter", id))
		require.NoError(t, err)
		m.svcs[id] = s
	}
	require.Eventually(t, func() bool {
		for _, s := range m.svcs {
			if !s.admitted.Load() {
				return false
			}
		}
		return true
	}, 30*time.Second, 5*time.Millisecond, "the members did not form the metadata group over TLS")
	m.leader()

	sec, err := grpcx.NewSecurity(grpcx.SecurityConfig{Files: files(replica), Self: replica})
	require.NoError(t, err)
	var addrs []string
	for _, a := range m.peers {
		addrs = append(addrs, a)
	}
	c, err := arbiterclient.New(arbiterclient.Config{Members: addrs, RetryBackoff: 5 * time.Millisecond,
		Dial: sec.Dialer(nil, identity.RoleArbiter)})
	require.NoError(t, err)
	defer c.Close()
	ctx := tctx(t)
	_, err = c.RegisterNode(ctx, &arbiterv1.RegisterNodeRequest{NodeId: 7, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, Address: "127.0.0.1:7607"})
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = c.RegisterNode(cctx, &arbiterv1.RegisterNodeRequest{NodeId: 8, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, Address: "127.0.0.1:7608"})
	require.Error(t, err, "replica 7 registering node 8")
	for _, n := range m.svcs[m.leader()].FSM().Nodes() {
		require.NotEqual(t, uint64(8), n.ID, "node 8 got registered by replica 7")
	}
}
