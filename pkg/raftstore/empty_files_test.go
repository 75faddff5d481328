package raftstore

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A power cut right after an open, before the first write, leaves the files Badger created at
// that open with their names but without the size ftruncate gave them: an empty memtable WAL
// and an empty value log. Badger refuses to open a directory holding either ("Create a new
// file"). They hold no write, so the store removes them and opens (make verify
// FAULTS=powerloss, seeds 2 and 3, stopped at a replica that never started again).
func TestOpenAfterAPowerCutBeforeTheFirstWrite(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir)
	require.NoError(t, err)
	ents := []*raftpb.Entry{{Index: proto.Uint64(1), Term: proto.Uint64(1), Data: []byte("kept")}}
	require.NoError(t, b.Save([]Update{{GroupID: 7, Entries: ents}}))
	require.NoError(t, b.Close())

	// The files of the next open, as the cut leaves them.
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var vlogs []string
	for _, de := range des {
		if filepath.Ext(de.Name()) == ".vlog" {
			vlogs = append(vlogs, de.Name())
		}
	}
	slices.Sort(vlogs)
	require.NotEmpty(t, vlogs)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "999999.vlog"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "99999.mem"), nil, 0o600))

	b, err = OpenBadger(dir)
	require.NoError(t, err, "the store opens again")
	defer func() { require.NoError(t, b.Close()) }()
	log, err := b.Open(7)
	require.NoError(t, err)
	got, err := log.Entries(1, 2, 0)
	require.NoError(t, err)
	require.Equal(t, []byte("kept"), got[0].GetData())
}
