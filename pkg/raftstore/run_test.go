package raftstore

import (
	"bytes"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// runSamples are entries that differ in every way the encoding cares about, field presence
// included.
func runSamples() []*raftpb.Entry {
	return []*raftpb.Entry{
		{Index: proto.Uint64(5), Term: proto.Uint64(1)}, // raft's empty entry: no type, no data
		{Index: proto.Uint64(6), Term: proto.Uint64(1), Type: raftpb.EntryType_EntryNormal.Enum(), Data: []byte{}},
		{Index: proto.Uint64(7), Term: proto.Uint64(math.MaxUint64), Type: raftpb.EntryType_EntryConfChangeV2.Enum(), Data: []byte("cc")},
		{Index: proto.Uint64(8), Data: bytes.Repeat([]byte{0xab}, 300)},
	}
}

func TestRunRoundTrip(t *testing.T) {
	in := runSamples()
	v := encodeRun(in)
	require.Len(t, v, cap(v), "size precomputed exactly")
	out, err := decodeRun(v, 5)
	require.NoError(t, err)
	require.Len(t, out, len(in))
	for i := range in {
		require.True(t, proto.Equal(in[i], out[i]), "entry %d: %v != %v", i, in[i], out[i])
		require.Equal(t, proto.Size(in[i]), proto.Size(out[i]), "entry %d size", i)
	}
	// Appending to one entry's data must not overwrite the next entry.
	_ = append(out[2].Data, 'X', 'X', 'X')
	require.Equal(t, in[3].Data, out[3].Data)

	for cut := range len(v) {
		_, err := decodeRun(v[:cut], 5)
		require.Error(t, err, "truncated at %d", cut)
	}
	_, err = decodeRun(append(v[:len(v):len(v)], 0), 5)
	require.Error(t, err, "trailing byte")
}

func FuzzDecodeRun(f *testing.F) {
	f.Add(encodeRun(runSamples()), uint64(5))
	f.Add(encodeRun(ents(1, 1, 3, 2)), uint64(1))
	f.Add(encodeRun(ents(1, 1, 1, 1)), uint64(math.MaxUint64))
	f.Add([]byte{}, uint64(1))
	f.Add([]byte{runVersion, 0}, uint64(1))
	f.Add([]byte{runVersion, 1, flagData, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint64(1))
	f.Add([]byte{runVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, uint64(1))
	f.Add([]byte{runVersion, 2, flagType, 0x80, 0x80, 0x80, 0x80, 0x10, 0}, uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, first uint64) {
		es, err := decodeRun(data, first)
		if err != nil {
			return
		}
		require.NotEmpty(t, es)
		// Whatever decodes re-encodes to something that decodes to the same entries.
		again, err := decodeRun(encodeRun(es), first)
		require.NoError(t, err)
		require.Len(t, again, len(es))
		for i := range es {
			require.Equal(t, first+uint64(i), es[i].GetIndex())
			require.True(t, proto.Equal(es[i], again[i]))
		}
	})
}
