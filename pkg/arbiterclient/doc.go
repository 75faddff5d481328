// Package arbiterclient is the Go client of the arbiter (tier 1) that replicas, channelctls and
// gateways use. It hides the arbiter being a cluster: it finds the leader (following the
// NotLeader hints members attach to refused writes), retries calls across members and
// elections within the caller's deadline, and resumes watches after a member fails from the
// last revision it delivered, so a watcher sees every revision exactly once.
package arbiterclient
