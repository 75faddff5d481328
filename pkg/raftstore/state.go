package raftstore

// StateWrite sets (or, with a nil Value, deletes) one key of a group's state-machine records,
// which live beside the group's raft log in the same store. Group 0 is a node-wide namespace.
type StateWrite struct {
	GroupID uint64
	Key     []byte
	Value   []byte
}

// StateStore holds what state machines derive from their logs (indexes, checkpoints). Those
// records can always be recomputed by re-applying the log, so they are written without fsync:
// after a crash a store holds some prefix of the writes, in the order they were saved, and the
// state machine resumes from its last checkpoint, which it writes after the records it covers.
type StateStore interface {
	// SaveState applies the writes in order, without waiting for fsync.
	SaveState(writes []StateWrite) error
	// GetState returns the value of a key, or nil when absent.
	GetState(groupID uint64, key []byte) ([]byte, error)
	// SeekStateLE returns the greatest key of the group that is <= key and shares its first
	// byte (a record kind), with its value; nil when there is none.
	SeekStateLE(groupID uint64, key []byte) (k, v []byte, err error)
}
