// Package channelctl is tier 2, the channel control tier: for every channel in the slots the
// arbiter gives it, it runs the channel state machine (hibernated, activating, active, electing,
// hibernating) and carries out what the arbiter decides: it loads groups on the replicas, orders
// the most up-to-date replica to campaign, confirms and records the leader, and hibernates idle
// channels.
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the channel state
// machine is pure Go in its own file set.
package channelctl
