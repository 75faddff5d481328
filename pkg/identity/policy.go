package identity

import (
	"fmt"
	"slices"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// Rule says who may call one gRPC method.
type Rule struct {
	// Public lets anyone call, with or without a certificate: the public API, whose callers
	// are authenticated (if at all) by other means, and health checks.
	Public bool
	// Roles are the roles that may call.
	Roles []Role
	// SameRole lets the roles call that the server itself has: raft frames go between
	// members of one tier only.
	SameRole bool
	// Check, when set, checks every message the caller sends (a unary request, each message
	// of a stream) against the caller's identity: the node ids it may speak for.
	Check func(caller ID, msg any) error
}

// Allows reports whether a caller of role r may call under the rule on a server of role self.
func (r Rule) Allows(self, caller Role) bool {
	return r.Public || (r.SameRole && caller == self) || slices.Contains(r.Roles, caller)
}

// Policy maps full gRPC method names (/package.Service/Method) to their rules. A method it
// does not list is refused: a service added later is closed until someone writes its rule.
type Policy map[string]Rule

// The rule sets of the policy. Every internal role may read the cluster's metadata; only
// admins change what an operator changes.
var (
	internal    = []Role{RoleArbiter, RoleChannelctl, RoleReplica, RoleGateway, RoleAdmin}
	nodes       = []Role{RoleReplica, RoleChannelctl} // hold node leases
	adminOnly   = []Role{RoleAdmin}
	ctlOnly     = []Role{RoleChannelctl}
	dataCallers = []Role{RoleGateway, RoleAdmin}
)

// DefaultPolicy is the cluster's policy: the roles of every method of every triarch service,
// and the node ids calls must match.
func DefaultPolicy() Policy {
	p := Policy{
		// Leases: a node registers and heartbeats as itself only, under its own role.
		arbiterv1.ArbiterService_RegisterNode_FullMethodName: {Roles: nodes, Check: checkRegister},
		arbiterv1.ArbiterService_Heartbeat_FullMethodName:    {Roles: nodes, Check: checkNodeID},
		// Operator actions.
		arbiterv1.ArbiterService_DrainNode_FullMethodName: {Roles: adminOnly},
		// Channel metadata: the channelctl owning a slot writes it, as itself.
		arbiterv1.ArbiterService_CompareAndSetChannels_FullMethodName: {Roles: ctlOnly, Check: checkNodeID},
		arbiterv1.ArbiterService_CreateChannel_FullMethodName:         {Roles: []Role{RoleChannelctl, RoleGateway, RoleAdmin}},
		arbiterv1.ArbiterService_GetChannel_FullMethodName:            {Roles: internal},
		arbiterv1.ArbiterService_ListChannels_FullMethodName:          {Roles: internal},
		arbiterv1.ArbiterService_ListSlots_FullMethodName:             {Roles: internal},
		arbiterv1.ArbiterService_Watch_FullMethodName:                 {Roles: internal},
		arbiterv1.ArbiterService_GetClusterStatus_FullMethodName:      {Roles: internal},
		// Membership of the arbiter cluster: between members, a member rejoining as itself.
		arbiterv1.ArbiterService_GetMemberState_FullMethodName: {Roles: []Role{RoleArbiter, RoleAdmin}},
		arbiterv1.ArbiterService_RejoinMember_FullMethodName:   {Roles: []Role{RoleArbiter}, Check: checkMemberID},

		channelctlv1.ChannelControlService_ResolveChannel_FullMethodName:  {Roles: []Role{RoleGateway, RoleChannelctl, RoleAdmin}},
		channelctlv1.ChannelControlService_GetChannelState_FullMethodName: {Roles: []Role{RoleGateway, RoleChannelctl, RoleAdmin}},
		channelctlv1.ChannelControlService_Instruct_FullMethodName:        {Roles: adminOnly},

		replicav1.ReplicaService_Append_FullMethodName:    {Roles: dataCallers},
		replicav1.ReplicaService_Read_FullMethodName:      {Roles: dataCallers},
		replicav1.ReplicaService_Subscribe_FullMethodName: {Roles: dataCallers},
		// Control of the raft groups: only the control tier orders them (a learner added by
		// anyone else would copy a channel's log out).
		replicav1.ReplicaControlService_LoadGroups_FullMethodName:     {Roles: ctlOnly},
		replicav1.ReplicaControlService_UnloadGroups_FullMethodName:   {Roles: ctlOnly},
		replicav1.ReplicaControlService_Campaign_FullMethodName:       {Roles: ctlOnly},
		replicav1.ReplicaControlService_TransferLeader_FullMethodName: {Roles: ctlOnly},
		replicav1.ReplicaControlService_ChangeReplicas_FullMethodName: {Roles: ctlOnly},
		replicav1.ReplicaControlService_GetGroupStatus_FullMethodName: {Roles: []Role{RoleChannelctl, RoleAdmin}},

		// Raft frames: between members of the server's own tier, each from the node its
		// certificate names.
		raftv1.RaftTransportService_Send_FullMethodName: {SameRole: true, Check: checkFrame},

		"/grpc.health.v1.Health/Check": {Public: true},
		"/grpc.health.v1.Health/Watch": {Public: true},
		"/grpc.health.v1.Health/List":  {Public: true},
	}
	for _, m := range triarchv1.TriarchService_ServiceDesc.Methods {
		p["/"+triarchv1.TriarchService_ServiceDesc.ServiceName+"/"+m.MethodName] = Rule{Public: true}
	}
	for _, s := range triarchv1.TriarchService_ServiceDesc.Streams {
		p["/"+triarchv1.TriarchService_ServiceDesc.ServiceName+"/"+s.StreamName] = Rule{Public: true}
	}
	return p
}

// nodeIDer is a request naming the node it is made for.
type nodeIDer interface{ GetNodeId() uint64 }

func checkNodeID(caller ID, msg any) error {
	r, ok := msg.(nodeIDer)
	if !ok {
		return fmt.Errorf("a %T names no node", msg)
	}
	if r.GetNodeId() != caller.Node {
		return fmt.Errorf("%s may not speak for node %d", caller, r.GetNodeId())
	}
	return nil
}

func checkRegister(caller ID, msg any) error {
	if err := checkNodeID(caller, msg); err != nil {
		return err
	}
	r, ok := msg.(*arbiterv1.RegisterNodeRequest)
	if !ok {
		return fmt.Errorf("a %T is not a registration", msg)
	}
	want := map[Role]arbiterv1.NodeRole{RoleReplica: arbiterv1.NodeRole_NODE_ROLE_REPLICA, RoleChannelctl: arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL}[caller.Role]
	if r.GetRole() != want {
		return fmt.Errorf("%s may not register as %s", caller, r.GetRole())
	}
	return nil
}

func checkMemberID(caller ID, msg any) error {
	r, ok := msg.(interface{ GetMemberId() uint64 })
	if !ok {
		return fmt.Errorf("a %T names no member", msg)
	}
	if r.GetMemberId() != caller.Node {
		return fmt.Errorf("%s may not speak for member %d", caller, r.GetMemberId())
	}
	return nil
}

// checkFrame checks a raft frame's sender. Its messages are checked against the frame's
// sender when the frame is decoded (raftnet.DecodeFrame), so the frame's is the one to check.
func checkFrame(caller ID, msg any) error {
	f, ok := msg.(*raftv1.SendRequest)
	if !ok {
		return fmt.Errorf("a %T is not a raft frame", msg)
	}
	if f.GetFromNodeId() != caller.Node {
		return fmt.Errorf("%s may not send raft frames as node %d", caller, f.GetFromNodeId())
	}
	return nil
}
