package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// verified is a call context whose peer presented a verified certificate naming id.
func verified(id ID) context.Context {
	cert := &x509.Certificate{URIs: []*url.URL{id.URI()}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}},
	}})
}

func TestEveryServiceMethodHasARule(t *testing.T) {
	p := DefaultPolicy()
	for _, sd := range []grpc.ServiceDesc{
		arbiterv1.ArbiterService_ServiceDesc, channelctlv1.ChannelControlService_ServiceDesc,
		replicav1.ReplicaService_ServiceDesc, replicav1.ReplicaControlService_ServiceDesc,
		raftv1.RaftTransportService_ServiceDesc, triarchv1.TriarchService_ServiceDesc,
	} {
		for _, m := range sd.Methods {
			_, ok := p["/"+sd.ServiceName+"/"+m.MethodName]
			require.True(t, ok, "%s/%s has no rule (it would be refused to everyone)", sd.ServiceName, m.MethodName)
		}
		for _, s := range sd.Streams {
			_, ok := p["/"+sd.ServiceName+"/"+s.StreamName]
			require.True(t, ok, "%s/%s has no rule", sd.ServiceName, s.StreamName)
		}
	}
}

// TestPolicyTable checks who may call what, on which server: the item 1 rules of issue 17.
func TestPolicyTable(t *testing.T) {
	p := DefaultPolicy()
	type call struct {
		server Role
		method string
		caller ID
		allow  bool
	}
	replica2, ctl1, gw1, admin1 := ID{RoleReplica, 2}, ID{RoleChannelctl, 1}, ID{RoleGateway, 1}, ID{RoleAdmin, 1}
	arb1, arb2 := ID{RoleArbiter, 1}, ID{RoleArbiter, 2}
	calls := []call{
		// Control of the replicas: the channelctl only.
		{RoleReplica, replicav1.ReplicaControlService_ChangeReplicas_FullMethodName, ctl1, true},
		{RoleReplica, replicav1.ReplicaControlService_ChangeReplicas_FullMethodName, replica2, false},
		{RoleReplica, replicav1.ReplicaControlService_ChangeReplicas_FullMethodName, gw1, false},
		{RoleReplica, replicav1.ReplicaControlService_ChangeReplicas_FullMethodName, admin1, false},
		{RoleReplica, replicav1.ReplicaControlService_LoadGroups_FullMethodName, ctl1, true},
		{RoleReplica, replicav1.ReplicaControlService_Campaign_FullMethodName, gw1, false},
		{RoleReplica, replicav1.ReplicaControlService_TransferLeader_FullMethodName, replica2, false},
		{RoleReplica, replicav1.ReplicaControlService_UnloadGroups_FullMethodName, arb1, false},
		// Data: the gateway (and admins).
		{RoleReplica, replicav1.ReplicaService_Append_FullMethodName, gw1, true},
		{RoleReplica, replicav1.ReplicaService_Read_FullMethodName, replica2, false},
		// Admin RPCs: admins only.
		{RoleArbiter, arbiterv1.ArbiterService_DrainNode_FullMethodName, admin1, true},
		{RoleArbiter, arbiterv1.ArbiterService_DrainNode_FullMethodName, replica2, false},
		{RoleArbiter, arbiterv1.ArbiterService_DrainNode_FullMethodName, ctl1, false},
		{RoleChannelctl, channelctlv1.ChannelControlService_Instruct_FullMethodName, admin1, true},
		{RoleChannelctl, channelctlv1.ChannelControlService_Instruct_FullMethodName, gw1, false},
		// Metadata writes: the channelctl.
		{RoleArbiter, arbiterv1.ArbiterService_CompareAndSetChannels_FullMethodName, ctl1, true},
		{RoleArbiter, arbiterv1.ArbiterService_CompareAndSetChannels_FullMethodName, replica2, false},
		{RoleArbiter, arbiterv1.ArbiterService_RegisterNode_FullMethodName, replica2, true},
		{RoleArbiter, arbiterv1.ArbiterService_RegisterNode_FullMethodName, gw1, false},
		{RoleArbiter, arbiterv1.ArbiterService_Watch_FullMethodName, gw1, true},
		// Raft frames: within a tier only.
		{RoleReplica, raftv1.RaftTransportService_Send_FullMethodName, replica2, true},
		{RoleReplica, raftv1.RaftTransportService_Send_FullMethodName, arb1, false},
		{RoleArbiter, raftv1.RaftTransportService_Send_FullMethodName, arb2, true},
		{RoleArbiter, raftv1.RaftTransportService_Send_FullMethodName, replica2, false},
		{RoleArbiter, arbiterv1.ArbiterService_RejoinMember_FullMethodName, arb2, true},
		{RoleArbiter, arbiterv1.ArbiterService_RejoinMember_FullMethodName, admin1, false},
		// Unknown methods: nobody.
		{RoleReplica, "/triarch.replica.v1.ReplicaService/Nope", admin1, false},
		// The public API: anyone with a certificate too.
		{RoleGateway, triarchv1.TriarchService_SendMessages_FullMethodName, replica2, true},
	}
	for _, c := range calls {
		_, _, err := p.Authorize(verified(c.caller), c.server, c.method)
		if c.allow {
			require.NoError(t, err, "%s calling %s on a %s", c.caller, c.method, c.server)
		} else {
			require.Equal(t, codes.PermissionDenied, status.Code(err), "%s calling %s on a %s: %v", c.caller, c.method, c.server, err)
		}
	}

	// No certificate: the public API and health only.
	anon := context.Background()
	_, _, err := p.Authorize(anon, RoleGateway, triarchv1.TriarchService_SubscribeMessages_FullMethodName)
	require.NoError(t, err)
	_, _, err = p.Authorize(anon, RoleReplica, "/grpc.health.v1.Health/Check")
	require.NoError(t, err)
	_, _, err = p.Authorize(anon, RoleArbiter, arbiterv1.ArbiterService_GetClusterStatus_FullMethodName)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	_, _, err = p.Authorize(anon, RoleReplica, "/no.such/Method")
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	// A certificate the handshake did not verify counts for nothing.
	unverified := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{admin1.URI()}}}},
	}})
	_, _, err = p.Authorize(unverified, RoleArbiter, arbiterv1.ArbiterService_DrainNode_FullMethodName)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
}

// TestPolicyChecksNodeIDs: a node speaks only for itself.
func TestPolicyChecksNodeIDs(t *testing.T) {
	p := DefaultPolicy()
	check := func(method string, caller ID, msg any) error {
		t.Helper()
		rule, ok := p[method]
		require.True(t, ok)
		require.NotNil(t, rule.Check, method)
		return rule.Check(caller, msg)
	}
	replica2 := ID{RoleReplica, 2}
	reg := arbiterv1.ArbiterService_RegisterNode_FullMethodName
	require.NoError(t, check(reg, replica2, &arbiterv1.RegisterNodeRequest{NodeId: 2, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA}))
	require.Error(t, check(reg, replica2, &arbiterv1.RegisterNodeRequest{NodeId: 3, Role: arbiterv1.NodeRole_NODE_ROLE_REPLICA}))
	require.Error(t, check(reg, replica2, &arbiterv1.RegisterNodeRequest{NodeId: 2, Role: arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL}),
		"a replica registers as a replica")
	require.NoError(t, check(reg, ID{RoleChannelctl, 1}, &arbiterv1.RegisterNodeRequest{NodeId: 1, Role: arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL}))

	hb := arbiterv1.ArbiterService_Heartbeat_FullMethodName
	require.NoError(t, check(hb, replica2, &arbiterv1.HeartbeatRequest{NodeId: 2}))
	require.Error(t, check(hb, replica2, &arbiterv1.HeartbeatRequest{NodeId: 1}))

	cas := arbiterv1.ArbiterService_CompareAndSetChannels_FullMethodName
	require.Error(t, check(cas, ID{RoleChannelctl, 1}, &arbiterv1.CompareAndSetChannelsRequest{NodeId: 2}))

	rejoin := arbiterv1.ArbiterService_RejoinMember_FullMethodName
	require.NoError(t, check(rejoin, ID{RoleArbiter, 3}, &arbiterv1.RejoinMemberRequest{MemberId: 3}))
	require.Error(t, check(rejoin, ID{RoleArbiter, 3}, &arbiterv1.RejoinMemberRequest{MemberId: 1}))

	send := raftv1.RaftTransportService_Send_FullMethodName
	require.NoError(t, check(send, replica2, &raftv1.SendRequest{FromNodeId: 2, ToNodeId: 1}))
	require.Error(t, check(send, replica2, &raftv1.SendRequest{FromNodeId: 3, ToNodeId: 1}), "frames as another node")
	require.Error(t, check(send, replica2, &arbiterv1.HeartbeatRequest{NodeId: 2}), "a message of the wrong type")
}
