//go:build linux && !amd64 && !arm64

package testcluster

// sysSetns is unknown here: Degrade reports it cannot run.
const sysSetns = 0
