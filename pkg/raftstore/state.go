package raftstore

// StateWrite sets (or, with a nil Value, deletes) one key of a group's state-machine records,
// which live beside the group's raft log in the same store. Group 0 is a node-wide namespace.
type StateWrite struct {
	GroupID uint64
	Key     []byte
	Value   []byte
}

// StateStore holds what state machines derive from their logs (indexes, checkpoints). Those
// records can always be recomputed by re-applying the log, so they need not be durable when
// written: after a crash a store holds some prefix of the writes, in the order they were saved,
// and the state machine resumes from its last checkpoint, which it writes after the records it
// covers.
type StateStore interface {
	// SaveState applies the writes in order. It need not block until they are on stable
	// storage, but it MUST NOT weaken Store.Save's guarantee: its writes MUST NOT be able to
	// leave any write of a Save that has returned, or that returns later, off stable storage
	// (the apply stage calls it concurrently with the append stage's Save). After a power
	// failure the store holds a prefix of all SaveState writes, in order.
	//
	// The Badger store meets both by returning only once the writes are synced, as every
	// Badger commit is (SyncWrites): the apply stage waits for its own sync.
	SaveState(writes []StateWrite) error
	// GetState returns the value of a key, or nil when absent.
	GetState(groupID uint64, key []byte) ([]byte, error)
	// SeekStateLE returns the greatest key of the group that is <= key and shares its first
	// byte (a record kind), with its value; nil when there is none.
	SeekStateLE(groupID uint64, key []byte) (k, v []byte, err error)
}
