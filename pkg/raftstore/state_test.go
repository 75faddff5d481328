package raftstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The StateStore contract, run against every implementation.
func TestStateContract(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s, reopen := im.open(t)
			st := s.(StateStore)
			get := func(g uint64, k string) []byte {
				v, err := st.GetState(g, []byte(k))
				require.NoError(t, err)
				return v
			}
			seek := func(g uint64, k string) (string, string) {
				key, v, err := st.SeekStateLE(g, []byte(k))
				require.NoError(t, err)
				return string(key), string(v)
			}
			require.Nil(t, get(1, "c"))
			k, _ := seek(1, "s5")
			require.Empty(t, k)

			require.NoError(t, st.SaveState([]StateWrite{
				{GroupID: 1, Key: []byte("s1"), Value: []byte("one")},
				{GroupID: 1, Key: []byte("s4"), Value: []byte("four")},
				{GroupID: 1, Key: []byte("s7"), Value: []byte("seven")},
				{GroupID: 1, Key: []byte("c"), Value: []byte("cp1")},
				{GroupID: 2, Key: []byte("s3"), Value: []byte("other group")},
				{GroupID: 1, Key: []byte("c"), Value: []byte("cp2")}, // later writes win
			}))
			require.Equal(t, []byte("cp2"), get(1, "c"))

			for _, tc := range []struct{ seek, key, val string }{
				{"s0", "", ""}, // nothing at or below
				{"s1", "s1", "one"},
				{"s3", "s1", "one"},
				{"s4", "s4", "four"},
				{"s6", "s4", "four"},
				{"s9", "s7", "seven"},
				{"t0", "", ""}, // another kind: never crosses into it
			} {
				key, val := seek(1, tc.seek)
				require.Equal(t, tc.key, key, "seek %s", tc.seek)
				require.Equal(t, tc.val, val, "seek %s", tc.seek)
			}
			key, val := seek(2, "s9")
			require.Equal(t, "s3", key, "groups are separate")
			require.Equal(t, "other group", val)
			key, _ = seek(3, "s9")
			require.Empty(t, key)

			require.NoError(t, st.SaveState([]StateWrite{{GroupID: 1, Key: []byte("s7")}})) // delete
			key, _ = seek(1, "s9")
			require.Equal(t, "s4", key)

			// Records survive a clean restart.
			st = reopen().(StateStore)
			require.Equal(t, []byte("cp2"), get(1, "c"))

			// Delete of a group removes its records, not another group's.
			require.NoError(t, st.(Store).Save([]Update{{GroupID: 1, Entries: ents(1, 1, 3, 1)}}))
			require.NoError(t, st.(Store).Delete(1))
			require.Nil(t, get(1, "c"))
			key, _ = seek(1, "s9")
			require.Empty(t, key)
			require.Equal(t, []byte("other group"), get(2, "s3"))
		})
	}
}
