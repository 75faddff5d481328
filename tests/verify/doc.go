// Package verify runs the verification suite (`make verify`): a cluster of triarch
// processes (three arbiters, two channelctls, three replicas by default, a gateway) under a seeded
// schedule of faults while clients send and read through the gateway, then every check of
// internal/verify on what the clients saw. See the README's "Verification" section.
package verify
