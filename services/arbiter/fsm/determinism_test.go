package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// Two members fed the same entries end in the same state with the same results, entry by
// entry. The commands travel encoded, as they do through raft.
func TestDeterminism(t *testing.T) {
	a, b := New(), New()
	w := newWorkload(7)
	stats := map[string]int{}
	for _, c := range w.bootstrap() {
		oa, ob := applyBoth(t, a, b, c)
		require.Equal(t, oa, ob)
	}
	for i := range 3000 {
		cmd := w.step(a)
		oa, ob := applyBoth(t, a, b, cmd)
		require.Equal(t, oa, ob, "entry %d", i)
		if i%500 == 0 {
			require.Equal(t, dumpOf(a), dumpOf(b), "entry %d", i)
		}
		switch r := oa.Result.(type) {
		case CompareAndSetResult:
			for j, cr := range r.Results {
				if len(cmd.GetCompareAndSetChannels().GetChanges()[j].GetReplicaStoreIds()) > 0 {
					switch {
					case cr.Succeeded:
						stats["cas stores ok"]++
					case strings.Contains(fmt.Sprint(cr.Err), "store id"):
						stats["cas stores invalid"]++
					}
				}
				if chg := cmd.GetCompareAndSetChannels().GetChanges()[j]; len(chg.GetNextReplicaNodeIds()) > 0 {
					switch {
					case cr.Succeeded:
						stats["cas next ok"]++
					case errors.Is(cr.Err, ErrInvalidChange):
						stats["cas next invalid"]++
					}
				}
				switch {
				case cr.Succeeded:
					stats["cas ok"]++
				case errors.Is(cr.Err, ErrStaleEpoch):
					stats["cas stale"]++
				case errors.Is(cr.Err, ErrNotSlotOwner):
					stats["cas not owner"]++
				case errors.Is(cr.Err, ErrInvalidChange):
					stats["cas invalid"]++
				}
			}
		case CreateChannelResult:
			if r.Created {
				stats["created"]++
			} else {
				stats["existing"]++
			}
		case nil:
			stats["refused"]++
		}
	}
	require.Equal(t, dumpOf(a), dumpOf(b))
	t.Logf("outcomes: %v", stats)
	// The workload must reach the interesting paths, or the comparison proves little.
	for _, k := range []string{"cas ok", "cas stale", "cas not owner", "cas invalid", "cas stores ok", "cas stores invalid", "cas next ok", "cas next invalid",
		"created", "existing", "refused"} {
		require.Greater(t, stats[k], 10, "workload outcome %q: %v", k, stats)
	}
}

func TestEncodeDecode(t *testing.T) {
	cmds := []*arbiterv1.Command{
		RegisterNodeCommand(1, replica, addr(1), "z", t0),
		SetNodeStateCommand(1, dead, "lease", t0),
		CreateChannelCommand("room", 3, t0),
		CompareAndSetChannelsCommand(9, &arbiterv1.ChannelChange{ChannelId: "room", ExpectedEpoch: 4, LeaderNodeId: ptr[uint64](0)}),
	}
	for _, c := range cmds {
		c.ProposalId = 77
		data, err := Encode(c)
		require.NoError(t, err)
		got, err := Decode(data)
		require.NoError(t, err)
		require.True(t, proto.Equal(c, got), "%v != %v", c, got)
		// Explicit presence survives: a leader explicitly set to 0 is not "unset".
		if chg := got.GetCompareAndSetChannels().GetChanges(); len(chg) > 0 {
			require.NotNil(t, chg[0].LeaderNodeId)
		}
	}
	for name, data := range map[string][]byte{
		"empty":       nil,
		"no kind":     mustMarshal(t, &arbiterv1.Command{ProposalId: 3}),
		"garbage":     {0xff, 0x01, 0x02},
		"truncated":   mustMarshal(t, cmds[2])[:5],
		"future kind": {0xa2, 0x06, 0x00}, // field 100, empty message: a kind this version lacks
	} {
		_, err := Decode(data)
		require.ErrorIs(t, err, ErrInvalidCommand, name)
		f := New()
		_, err = f.ApplyEntry(data)
		require.ErrorIs(t, err, ErrInvalidCommand, name)
		require.Zero(t, f.Revision())
	}
	_, err := Encode(nil)
	require.ErrorIs(t, err, ErrInvalidCommand)
	_, err = Encode(&arbiterv1.Command{})
	require.ErrorIs(t, err, ErrInvalidCommand)
	_, err = New().Apply(nil)
	require.ErrorIs(t, err, ErrInvalidCommand)
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}
