package fsm

import (
	"fmt"
	"net"
	"slices"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Bounds on free-form fields: they are replicated and kept forever, so a bad client must not
// be able to grow the state without limit.
const (
	maxAddressLen = 256
	maxZoneLen    = 64
	maxReasonLen  = 256
)

func (f *FSM) registerNode(c *arbiterv1.RegisterNodeCommand) (RegisterNodeResult, error) {
	id, role, addr, zone := c.GetNodeId(), c.GetRole(), c.GetAddress(), c.GetZone()
	wrap := func(format string, args ...any) error {
		return fmt.Errorf("register node %d: "+format, append([]any{id}, args...)...)
	}
	if id == 0 {
		return RegisterNodeResult{}, wrap("%w: node id 0 is reserved", ErrInvalidArgument)
	}
	if role != arbiterv1.NodeRole_NODE_ROLE_REPLICA && role != arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL {
		return RegisterNodeResult{}, wrap("%w: role %v is not replica or channelctl", ErrInvalidArgument, role)
	}
	if len(addr) > maxAddressLen {
		return RegisterNodeResult{}, wrap("%w: address longer than %d bytes", ErrInvalidArgument, maxAddressLen)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return RegisterNodeResult{}, wrap("%w: address %q: %w", ErrInvalidArgument, addr, err)
	}
	if len(zone) > maxZoneLen {
		return RegisterNodeResult{}, wrap("%w: zone longer than %d bytes", ErrInvalidArgument, maxZoneLen)
	}
	now, err := commandTime(c.GetTime())
	if err != nil {
		return RegisterNodeResult{}, wrap("%w", err)
	}

	n, known := f.st.nodes[id]
	if known {
		if n.Role != role {
			// Channels and slots refer to the id in its old role; reusing it for another role
			// would leave replicas owning slots or channelctls hosting channels.
			return RegisterNodeResult{}, wrap("%w: registered as %v, not %v", ErrRoleConflict, n.Role, role)
		}
		if n.Address != addr && n.Liveness != arbiterv1.NodeState_NODE_STATE_DEAD {
			// Two live processes claiming one id would split its channels' traffic; only a
			// node the arbiter has declared dead may come back somewhere else.
			return RegisterNodeResult{}, wrap("%w: registered at %q (state %v), not %q; allowed only once it is dead",
				ErrAddressConflict, n.Address, n.State, addr)
		}
		n.Incarnation++
	} else {
		n = &Node{ID: id, Role: role, Incarnation: 1}
		f.st.nodes[id] = n
		i, _ := slices.BinarySearch(f.st.nodeIDs, id)
		f.st.nodeIDs = slices.Insert(f.st.nodeIDs, i, id)
	}
	n.Address, n.Zone = addr, zone
	// The store id is whatever this registration names, 0 included: a restarted process
	// vouches only for the store it has now. Channels keep naming the store that holds their
	// group, so a node back with a new store is seen not to hold what its channels count on.
	n.StoreID = c.GetStoreId()
	n.Liveness = arbiterv1.NodeState_NODE_STATE_ALIVE
	// A restart ends a drain: draining is how a node is taken out for an upgrade, and the
	// restarted node is what should take load again.
	n.Draining = false
	n.RegisterTime, n.StateTime, n.StateReason = now, now, "registered"
	n.refreshState()
	f.emit(Event{Kind: EventNode, Node: *n})
	if role == arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL {
		f.rebalanceSlots()
	}
	return RegisterNodeResult{Node: *n, Created: !known, Revision: f.st.revision}, nil
}

func (f *FSM) setNodeState(c *arbiterv1.SetNodeStateCommand) (SetNodeStateResult, error) {
	id, to, reason := c.GetNodeId(), c.GetState(), c.GetReason()
	wrap := func(format string, args ...any) error {
		return fmt.Errorf("set node %d state %v: "+format, append([]any{id, to}, args...)...)
	}
	switch to {
	case arbiterv1.NodeState_NODE_STATE_ALIVE, arbiterv1.NodeState_NODE_STATE_SUSPECT,
		arbiterv1.NodeState_NODE_STATE_DEAD, arbiterv1.NodeState_NODE_STATE_DRAINING:
	default:
		return SetNodeStateResult{}, wrap("%w: not a node state", ErrInvalidArgument)
	}
	if len(reason) > maxReasonLen {
		return SetNodeStateResult{}, wrap("%w: reason longer than %d bytes", ErrInvalidArgument, maxReasonLen)
	}
	now, err := commandTime(c.GetTime())
	if err != nil {
		return SetNodeStateResult{}, wrap("%w", err)
	}
	n, ok := f.st.nodes[id]
	if !ok {
		return SetNodeStateResult{}, wrap("%w", ErrUnknownNode)
	}

	if to == arbiterv1.NodeState_NODE_STATE_DRAINING {
		if n.Draining {
			return SetNodeStateResult{Node: *n, Revision: f.st.revision}, nil
		}
		n.Draining = true
	} else {
		// Leader fields of the node's channels stay as recorded even when it dies: the
		// channelctl owning each channel re-elects with a compare-and-set, and only it knows
		// which replica is most up to date.
		if n.Liveness == to {
			return SetNodeStateResult{Node: *n, Revision: f.st.revision}, nil
		}
		n.Liveness = to
	}
	n.StateTime, n.StateReason = now, reason
	n.refreshState()
	f.emit(Event{Kind: EventNode, Node: *n})
	if n.Role == arbiterv1.NodeRole_NODE_ROLE_CHANNELCTL {
		f.rebalanceSlots()
	}
	return SetNodeStateResult{Node: *n, Changed: true, Revision: f.st.revision}, nil
}
