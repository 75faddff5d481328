package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestExpandKillCmd(t *testing.T) {
	got, err := ExpandKillCmd("docker compose kill replica-{node}", 2, "replica-2:7600")
	require.NoError(t, err)
	require.Equal(t, "docker compose kill replica-2", got)

	got, err = ExpandKillCmd("ssh {address} pkill -9 -f 'node-id {node}' # {node}", 13, "[::1]:7600")
	require.NoError(t, err)
	require.Equal(t, "ssh [::1]:7600 pkill -9 -f 'node-id 13' # 13", got)

	for _, addr := range []string{"a;rm -rf /", "$(reboot):1", "a b", "x`y`", "h'q"} {
		_, err := ExpandKillCmd("kill {address}", 1, addr)
		require.Error(t, err, addr)
	}
	_, err = ExpandKillCmd("  ", 1, "a:1")
	require.Error(t, err)
}

func TestRunKillCmd(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "killed")
	cmd, err := ExpandKillCmd("echo {node} > "+marker, 3, "r:1")
	require.NoError(t, err)
	require.NoError(t, RunKillCmd(context.Background(), cmd))
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "3\n", string(b))

	err = RunKillCmd(context.Background(), "echo no such container >&2; exit 3")
	require.ErrorContains(t, err, "no such container")
}
