package testutil

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

// tailLines is how many of a service's last log lines a failing test prints. A cluster test
// that fails on CI cannot be re-run with LogEnv set; the last moments of each service are
// what tells a stuck election from a lost message.
const tailLines = 60

// logTail keeps the last tailLines lines written to it.
type logTail struct {
	mu    sync.Mutex
	lines [][]byte
	next  int
	full  bool
	part  []byte // an unfinished line
}

func newLogTail() *logTail { return &logTail{lines: make([][]byte, tailLines)} }

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			l.part = append(l.part, rest...)
			break
		}
		line := append(l.part, rest[:i]...)
		l.part = nil
		l.lines[l.next] = line
		l.next = (l.next + 1) % len(l.lines)
		l.full = l.full || l.next == 0
		rest = rest[i+1:]
	}
	return len(p), nil
}

// String is the kept lines, oldest first.
func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	if l.full {
		for _, line := range l.lines[l.next:] {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	for _, line := range l.lines[:l.next] {
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// tailOnFailure returns a writer that keeps the last lines of a service's log and prints them
// under name when the test has failed by its end.
func tailOnFailure(t testing.TB, name string) *logTail {
	tail := newLogTail()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last %d log lines of %s (set %s=FILE to keep every line):\n%s", tailLines, name, LogEnv, tail)
		}
	})
	return tail
}

// describe names a service for tailOnFailure.
func describe(service string, node uint64) string { return fmt.Sprintf("%s %d", service, node) }
