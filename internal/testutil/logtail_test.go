package testutil

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The tail keeps the last tailLines complete lines, oldest first, across writes that split
// lines anywhere.
func TestLogTailKeepsTheLastLines(t *testing.T) {
	tail := newLogTail()
	require.Empty(t, tail.String())
	var all strings.Builder
	for i := range tailLines + 7 {
		fmt.Fprintf(&all, "line %d\n", i)
	}
	s := all.String()
	for len(s) > 0 { // in pieces of 5 bytes
		n := min(5, len(s))
		_, err := tail.Write([]byte(s[:n]))
		require.NoError(t, err)
		s = s[n:]
	}
	_, _ = tail.Write([]byte("unfinished"))
	got := strings.Split(strings.TrimSuffix(tail.String(), "\n"), "\n")
	require.Len(t, got, tailLines)
	require.Equal(t, "line 7", got[0])
	require.Equal(t, fmt.Sprintf("line %d", tailLines+6), got[len(got)-1])
}
