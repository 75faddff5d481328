package testutil

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// FreeAddr hands out distinct ports, below the kernel's ephemeral range where one exists, so
// that no outgoing connection of the test takes one before its listener binds it.
func TestFreeAddrAvoidsTheEphemeralRange(t *testing.T) {
	lo, hi, quiet := quietPorts()
	seen := map[string]bool{}
	for range 500 {
		addr := FreeAddr(t)
		require.False(t, seen[addr], "%s handed out twice", addr)
		seen[addr] = true
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		p, err := strconv.Atoi(port)
		require.NoError(t, err)
		if quiet {
			require.GreaterOrEqual(t, p, lo)
			require.Less(t, p, hi, "below the ephemeral range")
		}
	}
	if !quiet {
		t.Log("no ephemeral range to stay below here: ports come from the kernel")
	}
}
