// Package members is the order in which a client tries the members of a replicated service:
// the one believed to lead (or to own what is asked) first, then the others. The arbiter's
// client (pkg/arbiterclient) tries arbiter members so, and the gateway tries channelctls so,
// the owner of a channel's slot first. Both then follow the hints members answer with.
package members
