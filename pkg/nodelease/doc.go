// Package nodelease keeps a node's lease with the arbiter: it registers the node, then sends
// node-level heartbeats (never per channel) at the interval the arbiter asks for, carrying the
// node's load, its view of which peers it can reach, and the round trip of the previous
// heartbeat, which the arbiter uses to adapt the interval.
//
// It also answers the question the one-leader-per-channel rule needs on the replica side: is
// my lease still valid? The lease is taken to start when a successful heartbeat was SENT
// (not when its reply arrived), which is never later than when the arbiter renewed it, so the
// node always believes its lease ends no later than the arbiter does. The arbiter adds a drift
// margin on top before it declares the node dead (see services/arbiter/liveness). An answer
// saying the node is DEAD renews nothing and ends the lease at once: the arbiter has given it
// up; only a new registration (a new incarnation) brings one back.
package nodelease
