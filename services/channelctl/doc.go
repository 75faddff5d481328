// Package channelctl is tier 2, the channel control tier: for every channel in the slots the
// arbiter gives it, it runs the channel state machine (hibernated, activating, active, electing,
// hibernating) and carries out what the arbiter decides: it loads groups on the replicas, orders
// the most up-to-date replica to campaign, confirms and records the leader, and hibernates idle
// channels. It also keeps the replica sets healthy: a replica node that comes back gets its
// groups again and its share of leaders (balance, drains), one dead for --replace-dead-after is
// replaced in each of its channels, and one that comes back with a store other than the one a
// channel's record names for it (a wiped or replaced disk) rejoins that channel's group as a
// learner at once, voting again only once it holds the whole log (maintenance.go).
//
// This package is the service wiring (config, lifecycle, thin gRPC handlers); the channel state
// machine is pure Go in its own file set.
package channelctl
