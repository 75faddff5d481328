package chanlog

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

// requireSameAsProto checks decodeBatch against proto.Unmarshal: the same entries refused
// (replicas running either must skip the same ones), the same fields read.
func requireSameAsProto(t *testing.T, data []byte) {
	var want replicav1.LogBatch
	werr := proto.Unmarshal(data, &want)
	got, err := decodeBatch(data)
	if werr != nil {
		require.Error(t, err, "proto.Unmarshal refuses it (%v)", werr)
		return
	}
	require.NoError(t, err)
	require.Len(t, got.ids, len(want.GetMessages()))
	for i, m := range want.GetMessages() {
		require.Equal(t, m.GetClientMsgId(), string(got.ids[i]))
	}
	require.Equal(t, want.GetProposeTime().AsTime().UnixNano(), got.proposeTime.UnixNano())
	require.Equal(t, want.GetProposerNodeId(), got.proposerID)
	require.Equal(t, want.GetProposalId(), got.proposalID)
	require.Equal(t, len(want.GetNonces()), len(got.nonces))
	for i, n := range want.GetNonces() {
		require.Equal(t, n, got.nonces[i])
	}
}

func decodeSeeds() [][]byte {
	full, _ := proto.Marshal(&replicav1.LogBatch{
		Messages: []*triarchv1.MessageInput{
			{ClientMsgId: "a", Sender: "s", Payload: []byte("p"), Headers: map[string]string{"k": "v", "": ""}},
			{},
			{ClientMsgId: "ü-β", Payload: make([]byte, 300)},
		},
		ProposeTime: timestamppb.New(t0), ProposerNodeId: 3, ProposalId: 1 << 62,
		Nonces: []uint64{1, 0, 1<<64 - 1},
	})
	empty, _ := proto.Marshal(&replicav1.LogBatch{})
	var odd []byte
	// propose_time twice (merged), a scalar twice (last wins), a field with an unexpected
	// wire type and an unknown group: all accepted by proto.Unmarshal.
	odd = protowire.AppendTag(odd, 2, protowire.BytesType)
	odd = protowire.AppendBytes(odd, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 100))
	odd = protowire.AppendTag(odd, 2, protowire.BytesType)
	odd = protowire.AppendBytes(odd, protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 7))
	odd = protowire.AppendTag(odd, 3, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 1)
	odd = protowire.AppendTag(odd, 3, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 2)
	odd = protowire.AppendTag(odd, 1, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 9)
	odd = protowire.AppendTag(odd, 9, protowire.StartGroupType)
	odd = protowire.AppendTag(odd, 9, protowire.EndGroupType)
	// nonces unpacked, then packed (both append), then with a wrong wire type (unknown).
	odd = protowire.AppendTag(odd, 6, protowire.Fixed64Type)
	odd = protowire.AppendFixed64(odd, 5)
	odd = protowire.AppendTag(odd, 6, protowire.BytesType)
	odd = protowire.AppendBytes(odd, protowire.AppendFixed64(protowire.AppendFixed64(nil, 6), 7))
	odd = protowire.AppendTag(odd, 6, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 8)
	// A packed run of nonces that ends inside a value.
	badNonces := protowire.AppendTag(nil, 6, protowire.BytesType)
	badNonces = protowire.AppendBytes(badNonces, make([]byte, 12))
	var badUTF8 []byte
	in := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{0xff})
	badUTF8 = protowire.AppendBytes(protowire.AppendTag(badUTF8, 1, protowire.BytesType), in)
	return [][]byte{full, empty, odd, badUTF8, badNonces, full[:len(full)-1], {0xff}, {0x00}}
}

func TestDecodeBatchAgreesWithProto(t *testing.T) {
	for _, d := range decodeSeeds() {
		requireSameAsProto(t, d)
	}
}

func FuzzDecodeBatchAgreesWithProto(f *testing.F) {
	for _, d := range decodeSeeds() {
		f.Add(d)
	}
	f.Fuzz(requireSameAsProto)
}
