package raftstore

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// Issue 12, item 3: a replica's status read of a channel from disk opened and released the
// group while its raft host held it open (a concurrent load), and the Release closed the log
// under the host: raft then failed on ErrClosed and stopped the process. Opens are counted now.
func TestReleaseClosesOnlyAfterTheLastOpen(t *testing.T) {
	b := openBadger(t, t.TempDir())
	save(t, b, Update{GroupID: 1, Entries: []*raftpb.Entry{ent(1, 1, 1), ent(1, 2, 1)}})

	host, err := b.Open(1)
	require.NoError(t, err)
	reader, err := b.Open(1) // the status read
	require.NoError(t, err)
	b.Release(1) // the status read is done

	last, err := host.LastIndex()
	require.NoError(t, err, "the host's log must survive another holder's Release")
	require.Equal(t, uint64(2), last)
	_, err = host.Entries(1, 3, noLimit)
	require.NoError(t, err)

	b.Release(1) // the host unloads the group: now it is closed
	_, err = reader.Entries(1, 3, noLimit)
	require.ErrorIs(t, err, ErrClosed)

	// A later Open loads it again from disk.
	again, err := b.Open(1)
	require.NoError(t, err)
	last, err = again.LastIndex()
	require.NoError(t, err)
	require.Equal(t, uint64(2), last)
	b.Release(1)
}
