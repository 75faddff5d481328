// Package api holds the public API's limits (docs/ARCHITECTURE.md, "The contract") and the
// checks of a message's fields against them, so that the gateway and the replicas enforce the
// same numbers from one place.
package api
