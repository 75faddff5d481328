package raftstore

import (
	"errors"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("raftstore: closed")

// Store holds the raft logs, hard states and snapshots of all the groups of one node.
//
// A Store is safe for concurrent use. Save is called by one append stage at a time; Log reads
// may run concurrently with it and see either the state before or after a Save, never a mix
// within one group.
type Store interface {
	// Open returns the log of a group, loading its positions from disk. A group that was never
	// saved opens empty. Opening a group that is open returns the same Log. Opens are counted:
	// each must be matched by one Release, and the group stays in memory until the last.
	Open(groupID uint64) (Log, error)
	// Save writes the updates of many groups as one batch, each update entirely or not at all.
	//
	// Save MUST block until every write it made (entries, hard state, snapshot) is on stable
	// storage: raft acknowledges the entries (MsgAppResp, the leader's own vote) and keeps its
	// term and vote promises as soon as Save returns, so after a power failure at any instant
	// the store MUST hold every returned Save in full. Writes made by other calls meanwhile
	// (SaveState on the apply stage, Release, Compact) MUST NOT be able to defeat this, for
	// instance by making the underlying engine switch files between a Save's writes and its
	// sync. A Save interrupted by the failure may survive in part, but only as whole updates,
	// and what survives of all Saves is a prefix in the order they were made. Entries of an update replace any stored entries of that group from
	// the first new index on (raft's log truncation); a snapshot replaces the whole log, entries
	// after its index included (raft installs one only when its log does not hold the
	// snapshot's index and term), as raft.MemoryStorage.ApplySnapshot does.
	Save(updates []Update) error
	// Release ends one Open. The last one drops the group's in-memory state (hibernation); its
	// data stays on disk and a later Open reloads it. Logs handed out before the last Release
	// must no longer be used; one holder's Release never closes the log under another's.
	Release(groupID uint64)
	// Compact discards a group's entries before index (which must be applied), keeping the
	// term of index-1 for raft's log matching. A caller that wants a follower needing the
	// discarded entries to be able to catch up compacts only up to a snapshot saved before
	// (SaveSnapshot), index <= snapshot index + 1: raft then sends that snapshot instead.
	Compact(groupID, index uint64) error
	// SaveSnapshot records snap, the state machine as of snap's index, as the group's snapshot:
	// Log.Snapshot returns it from now on (raft sends it to followers that need compacted
	// entries) and its ConfState is a configuration record (see ConfState). Unlike a snapshot
	// in Save, it keeps the log: entries before and after its index stay until Compact, so
	// followers slightly behind still get entries.
	//
	// The index must be in the log (first-1 <= index <= last) with the log's term there, and
	// newer than the stored snapshot, else the error wraps raft.ErrSnapOutOfDate (a snapshot
	// installed meanwhile is newer) or explains the mismatch. The snapshot MUST be durable when
	// SaveSnapshot returns: callers compact up to it next, and a crash must not leave a log
	// compacted past its newest snapshot.
	SaveSnapshot(groupID uint64, snap *raftpb.Snapshot) error
	// SaveConfState records that cs is the group's configuration once every entry up to and
	// including index is applied. A record at or below the newest one is ignored: records only
	// move forward.
	//
	// It need not be durable on return (it is made durable by the next Save) and a crash may
	// lose it: a record only ever states a fact about committed entries, so the previous one
	// (or the snapshot's) is still true, and a caller that replays the committed entries after
	// the record it finds recovers the rest. Records from one caller survive in order.
	SaveConfState(groupID, index uint64, cs *raftpb.ConfState) error
	// ConfState returns the group's newest configuration record: the one SaveConfState wrote,
	// or the stored snapshot's, whichever has the higher index (the snapshot's on a tie);
	// (0, empty) for a group with neither. InitialState keeps returning the snapshot's
	// configuration, which is what plain raft expects of a raft.Storage; a node that resumes
	// after the newer record passes that configuration to raft itself.
	ConfState(groupID uint64) (index uint64, cs *raftpb.ConfState, err error)
	// Groups lists every group with data in the store, open or not, in increasing order.
	Groups() ([]uint64, error)
	// Delete removes a group and all its data.
	Delete(groupID uint64) error
	// Close releases all resources. Pending Saves have returned before Close is called.
	Close() error
}

// Log is one group's view of a Store. It implements raft.Storage and reflects every Save that
// has returned. Entries it returns are never mutated, by it or by callers.
type Log interface {
	raft.Storage
}

// Update is what one group's MsgStorageAppend asks to persist.
type Update struct {
	GroupID uint64
	// HardState is nil when unchanged.
	HardState *raftpb.HardState
	// Entries are consecutive, in increasing index order.
	Entries []*raftpb.Entry
	// Snapshot is nil when there is none to install.
	Snapshot *raftpb.Snapshot
}

// UpdateFromMessage converts a MsgStorageAppend of group groupID into an Update.
func UpdateFromMessage(groupID uint64, m *raftpb.Message) Update {
	u := Update{GroupID: groupID, Entries: m.GetEntries()}
	// Term, vote and commit are all set when any of them changed (see raftpb.Message).
	if m.Term != nil || m.Vote != nil || m.Commit != nil {
		u.HardState = &raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
	}
	if s := m.GetSnapshot(); s != nil && !raft.IsEmptySnap(s) {
		u.Snapshot = s
	}
	return u
}
