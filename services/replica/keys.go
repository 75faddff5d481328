package replica

import "encoding/binary"

// The layout of the engine's records in the store's state key space.

// Record kinds in a group's state key space; group 0 holds node-wide records.
const (
	kindSeq        = 's' // 's' | first seq (big-endian) -> SeqIndexRecord
	kindCheckpoint = 'c' // 'c' -> ChannelCheckpoint
	kindDedup      = 'd' // 'd' | first id counter (big-endian) -> DedupChunk (chanlog.Checkpoint)
	kindSpec       = 'g' // 'g' -> GroupSpec (channel id, peers)
	kindChannelID  = 'n' // group 0: 'n' | channel id -> group id (big-endian)
)

func seqKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindSeq
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func channelKey(channelID string) []byte { return append([]byte{kindChannelID}, channelID...) }

func dedupKey(start uint64) []byte {
	k := make([]byte, 9)
	k[0] = kindDedup
	binary.BigEndian.PutUint64(k[1:], start)
	return k
}
