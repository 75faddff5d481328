package fsm

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// The constructors below build log entries; now is the leader's clock at proposal time, which
// is the only clock the state machine ever sees.

// RegisterNodeCommand builds a RegisterNode entry for a node that names no store (store id
// 0, as channelctls register).
func RegisterNodeCommand(id uint64, role arbiterv1.NodeRole, address, zone string, now time.Time) *arbiterv1.Command {
	return RegisterNodeWithStoreCommand(id, role, address, zone, 0, now)
}

// RegisterNodeWithStoreCommand builds a RegisterNode entry that records the node's store id.
func RegisterNodeWithStoreCommand(id uint64, role arbiterv1.NodeRole, address, zone string, storeID uint64, now time.Time) *arbiterv1.Command {
	return &arbiterv1.Command{Kind: &arbiterv1.Command_RegisterNode{RegisterNode: &arbiterv1.RegisterNodeCommand{
		NodeId: id, Role: role, Address: address, Zone: zone, Time: timestamppb.New(now), StoreId: storeID,
	}}}
}

// SetNodeStateCommand builds a SetNodeState entry: a liveness decision, or a drain with
// NODE_STATE_DRAINING.
func SetNodeStateCommand(id uint64, state arbiterv1.NodeState, reason string, now time.Time) *arbiterv1.Command {
	return &arbiterv1.Command{Kind: &arbiterv1.Command_SetNodeState{SetNodeState: &arbiterv1.SetNodeStateCommand{
		NodeId: id, State: state, Reason: reason, Time: timestamppb.New(now),
	}}}
}

// CreateChannelCommand builds a CreateChannel entry with no channel cap.
func CreateChannelCommand(id string, replicationFactor uint32, now time.Time) *arbiterv1.Command {
	return CreateChannelCommandCapped(id, replicationFactor, now, 0)
}

// CreateChannelCommandCapped builds a CreateChannel entry that fails with ErrChannelLimit
// when the cluster already holds maxChannels channels (0: no cap).
func CreateChannelCommandCapped(id string, replicationFactor uint32, now time.Time, maxChannels uint64) *arbiterv1.Command {
	return &arbiterv1.Command{Kind: &arbiterv1.Command_CreateChannel{CreateChannel: &arbiterv1.CreateChannelCommand{
		ChannelId: id, ReplicationFactor: replicationFactor, Time: timestamppb.New(now), MaxChannels: maxChannels,
	}}}
}

// CompareAndSetChannelsCommand builds a CompareAndSetChannels entry for the requesting
// channelctl.
func CompareAndSetChannelsCommand(requester uint64, changes ...*arbiterv1.ChannelChange) *arbiterv1.Command {
	return &arbiterv1.Command{Kind: &arbiterv1.Command_CompareAndSetChannels{CompareAndSetChannels: &arbiterv1.CompareAndSetChannelsCommand{
		NodeId: requester, Changes: changes,
	}}}
}
