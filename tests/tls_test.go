package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/internal/testutil"
	"github.com/triarch-io/triarch/pkg/client"
	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/process"
	"github.com/triarch-io/triarch/pkg/tlsx"
	"github.com/triarch-io/triarch/services/arbiter"
	"github.com/triarch-io/triarch/services/channelctl"
	"github.com/triarch-io/triarch/services/gateway"
	"github.com/triarch-io/triarch/services/replica"
)

// tlsCluster is the suite's shape (one arbiter, one channelctl, three replicas, a gateway)
// with mutual TLS everywhere, each service with its own certificate.
type tlsCluster struct {
	dir      string
	arbiter  *arbiter.Service
	ctl      *channelctl.Service
	replicas []*replica.Service
	gateway  *gateway.Service
}

func (c *tlsCluster) files(id identity.ID) tlsx.Files {
	return tlsx.Files{CA: filepath.Join(c.dir, tlsx.CACertFile), Cert: filepath.Join(c.dir, tlsx.CertFile(id)), Key: filepath.Join(c.dir, tlsx.KeyFile(id))}
}

func startTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	ctx := context.Background()
	c := &tlsCluster{dir: t.TempDir()}
	ids := []identity.ID{{Role: identity.RoleArbiter, Node: 1}, {Role: identity.RoleChannelctl, Node: 101}, {Role: identity.RoleGateway, Node: 1},
		{Role: identity.RoleAdmin, Node: 1}}
	for i := uint64(1); i <= 3; i++ {
		ids = append(ids, identity.ID{Role: identity.RoleReplica, Node: i})
	}
	_, err := tlsx.Issue(tlsx.IssueOptions{Dir: c.dir, IDs: ids})
	require.NoError(t, err)
	data := t.TempDir()
	common := func(node uint64, dir string) process.Common {
		cm := process.Common{NodeID: node, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DataDir: filepath.Join(data, dir)}
		if c.arbiter != nil {
			cm.Arbiters = []string{c.arbiter.Advertise()}
		}
		return cm
	}
	c.arbiter, err = arbiter.Start(ctx, arbiter.Config{Common: common(1, "arbiter"), TLS: c.files(ids[0])}, testutil.Telemetry(t, "arbiter", 1))
	require.NoError(t, err)
	t.Cleanup(func() { stopAll(t, c) })
	c.ctl, err = channelctl.Start(ctx, channelctl.Config{Common: common(101, ""), TLS: c.files(ids[1]),
		HibernateAfter: 2 * time.Minute, ReplaceDeadAfter: 10 * time.Minute}, testutil.Telemetry(t, "channelctl", 101))
	require.NoError(t, err)
	for i := uint64(1); i <= 3; i++ {
		r, err := replica.Start(ctx, replica.Config{Common: common(i, fmt.Sprint("replica-", i)),
			TLS: c.files(identity.ID{Role: identity.RoleReplica, Node: i}), DedupWindow: time.Hour, DedupMaxIDs: 1000},
			testutil.Telemetry(t, "replica", i))
		require.NoError(t, err)
		c.replicas = append(c.replicas, r)
	}
	// Formed: every replica registered (over TLS, as itself) and the channelctl follows.
	require.Eventually(t, func() bool {
		alive := 0
		for _, n := range c.arbiter.FSM().Nodes() {
			if n.Role == arbiterv1.NodeRole_NODE_ROLE_REPLICA && n.Liveness == arbiterv1.NodeState_NODE_STATE_ALIVE {
				alive++
			}
		}
		select {
		case <-c.ctl.Controller.Ready():
			return alive == 3
		default:
			return false
		}
	}, 60*time.Second, 10*time.Millisecond, "the TLS cluster did not form")
	gc := common(1, "")
	c.gateway, err = gateway.Start(ctx, gateway.Config{Common: gc, TLS: c.files(ids[2]), HTTPAddr: "127.0.0.1:0", DefaultReplication: 3,
		Channelctls: []string{c.ctl.Advertise()}}, testutil.Telemetry(t, "gateway", 1))
	require.NoError(t, err)
	return c
}

func stopAll(t *testing.T, c *tlsCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c.gateway != nil {
		require.NoError(t, c.gateway.Stop(ctx))
	}
	for _, r := range c.replicas {
		require.NoError(t, r.Stop(ctx))
	}
	if c.ctl != nil {
		require.NoError(t, c.ctl.Stop(ctx))
	}
	require.NoError(t, c.arbiter.Stop(ctx))
}

// dialAs connects to addr with id's certificate.
func (c *tlsCluster) dialAs(t *testing.T, addr string, id identity.ID) *grpc.ClientConn {
	t.Helper()
	cfg, err := tlsx.ClientConfig(c.files(id))
	require.NoError(t, err)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Issue 17 item 1: a cluster with mutual TLS forms and serves sends and reads, over gRPC and
// REST; every service refuses plaintext; a certificate of the wrong role or node id is
// refused what it may not do.
func TestTLSClusterServesAndRefusesStrangers(t *testing.T) {
	c := startTLSCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A public client: TLS with the CA, no certificate of its own.
	creds, err := tlsx.ClientConfig(tlsx.Files{CA: filepath.Join(c.dir, tlsx.CACertFile)}, identity.RoleGateway)
	require.NoError(t, err)
	cl, err := client.Dial(ctx, c.gateway.Addr(), client.Options{DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(creds))}})
	require.NoError(t, err)
	defer cl.Close()
	res, err := cl.Send(ctx, "tls-room", client.Text("alice", "over mTLS"))
	require.NoError(t, err)
	require.Len(t, res, 1)
	read, err := cl.Read(ctx, "tls-room", 1, 10)
	require.NoError(t, err)
	require.Len(t, read.Messages, 1)
	require.Equal(t, "over mTLS", string(read.Messages[0].Payload))

	// REST reaches the gRPC API through the gateway's own TLS connection.
	resp, err := http.Get("http://" + c.gateway.HTTPAddr() + "/v1/channels/tls-room/messages?from_seq=1")
	require.NoError(t, err)
	var body struct {
		Messages []json.RawMessage `json:"messages"`
	}
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.NoError(t, resp.Body.Close())
	require.Len(t, body.Messages, 1)

	// Plaintext: refused by every service.
	addrs := []string{c.arbiter.Addr(), c.ctl.Addr(), c.gateway.Addr()}
	for _, r := range c.replicas {
		addrs = append(addrs, r.Addr())
	}
	for _, a := range addrs {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		require.Equal(t, codes.Unavailable, status.Code(err), "plaintext to %s: %v", a, err)
		require.NoError(t, conn.Close())
	}

	denied := func(err error, what string) {
		t.Helper()
		code := status.Code(err)
		require.True(t, code == codes.PermissionDenied || code == codes.Unauthenticated, "%s: %v", what, err)
	}
	replica2 := identity.ID{Role: identity.RoleReplica, Node: 2}
	arb := arbiterv1.NewArbiterServiceClient(c.dialAs(t, c.arbiter.Addr(), replica2))
	_, err = arb.DrainNode(ctx, &arbiterv1.DrainNodeRequest{NodeId: 1})
	denied(err, "a replica draining a node")
	_, err = arb.Heartbeat(ctx, &arbiterv1.HeartbeatRequest{NodeId: 3})
	denied(err, "replica 2 heartbeating for replica 3")
	_, err = arb.RegisterNode(ctx, &arbiterv1.RegisterNodeRequest{NodeId: 3, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA, Address: "127.0.0.1:1"})
	denied(err, "replica 2 registering as replica 3")
	_, err = arb.GetClusterStatus(ctx, &arbiterv1.GetClusterStatusRequest{})
	require.NoError(t, err, "reading the cluster's state is any node's business")

	ctl := replicav1.NewReplicaControlServiceClient(c.dialAs(t, c.replicas[0].Addr(), replica2))
	_, err = ctl.ChangeReplicas(ctx, &replicav1.ChangeReplicasRequest{})
	denied(err, "a replica ordering another's raft groups")
	gw := replicav1.NewReplicaControlServiceClient(c.dialAs(t, c.replicas[0].Addr(), identity.ID{Role: identity.RoleGateway, Node: 1}))
	_, err = gw.Campaign(ctx, &replicav1.CampaignRequest{})
	denied(err, "a gateway ordering a campaign")
	_, err = channelctlv1.NewChannelControlServiceClient(c.dialAs(t, c.ctl.Addr(), replica2)).Instruct(ctx, &channelctlv1.InstructRequest{})
	denied(err, "a replica instructing the channelctl")

	// Raft frames as another node.
	stream, err := raftv1.NewRaftTransportServiceClient(c.dialAs(t, c.replicas[0].Addr(), replica2)).Send(ctx)
	require.NoError(t, err)
	_ = stream.Send(&raftv1.SendRequest{FromNodeId: 3, ToNodeId: 1})
	_, err = stream.CloseAndRecv()
	denied(err, "replica 2 sending raft frames as replica 3")

	// The cluster still serves after all that.
	_, err = cl.Send(ctx, "tls-room", client.Text("bob", "still here"))
	require.NoError(t, err)
}
