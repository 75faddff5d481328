// Package members is the order in which a client tries the members of a replicated service:
// the one believed to lead (or to own what is asked) first, then the others (LeaderFirst), each
// at most once, with a member that an answer names (a NotLeader or NotOwner hint) put next
// (Queue). The arbiter's client (pkg/arbiterclient) tries arbiter members so, and the gateway
// tries channelctls so, the owner of a channel's slot first.
package members
