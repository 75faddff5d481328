//go:build race

package replica

// raceEnabled is set when the race detector runs: it slows everything ten times or more,
// so the largest tests scale down and skip their memory bounds.
const raceEnabled = true
