//go:build !race

package replica

// raceEnabled is set when the race detector runs; see race_on_test.go.
const raceEnabled = false
