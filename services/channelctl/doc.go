// Package channelctl is tier 2, the channel control tier: for every channel in the slots the
// arbiter gives it, it runs the channel state machine (hibernated, activating, active, electing,
// hibernating) and carries out what the arbiter decides: it loads groups on the replicas, orders
// the most up-to-date replica to campaign, confirms and records the leader, and hibernates idle
// channels. It also keeps the replica sets healthy: a replica node that comes back gets its
// groups again and its share of leaders (balance, drains), and one dead for
// --replace-dead-after is replaced in each of its channels (maintenance.go).
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the channel state
// machine is pure Go in its own file set.
package channelctl
