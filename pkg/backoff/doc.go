// Package backoff is the pause between retries that every tier's client side shares: the
// gateway's calls to replicas and channelctls, the Go client's calls to the gateway, and the
// replicas' reconnects to their peers. It doubles from a minimum to a maximum with jitter, so
// that callers that failed together do not retry in lock step, and it never sleeps past what a
// caller's deadline leaves for the next attempt.
package backoff
