// Package suite boots the whole triarch suite in one process on loopback: one arbiter, one
// channelctl, three replicas and the gateway. `triarch dev` runs it for a laptop, and the
// whole-cluster tests boot the same wiring, so every such test also checks the wiring.
package suite
