package machine

import "errors"

// Sentinel errors. Step, ChooseLeader and CanHibernate wrap them with the channel, the state and
// the numbers that led to the refusal; match them with errors.Is.
var (
	// ErrNoMajority: fewer than a strict majority of the replica set answered, so no replica can
	// be proven to hold every committed entry and nobody may be elected.
	ErrNoMajority = errors.New("no majority reachable")
	// ErrMissingPosition: a replica was called reachable but reported no position; electing
	// without it could pick a replica behind it.
	ErrMissingPosition = errors.New("reachable replica reported no position")
	// ErrInvalidReplicaSet: the replica set is empty, holds node 0 or holds a node twice.
	ErrInvalidReplicaSet = errors.New("invalid replica set")

	// ErrStaleEpoch: a result or change belongs to an earlier epoch of the channel than the one
	// the machine works under.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrCASRefused: the arbiter refused a compare-and-set; the machine has adopted the
	// arbiter's channel and dropped what it was doing.
	ErrCASRefused = errors.New("compare-and-set refused by the arbiter")
	// ErrNotOwner: this channelctl no longer owns the channel's slot. The machine is fenced:
	// it refuses every later event and must be discarded.
	ErrNotOwner = errors.New("channel slot not owned by this channelctl")

	// ErrUnexpectedEvent: a result arrived that nothing in flight asked for (late, duplicated,
	// or for another node).
	ErrUnexpectedEvent = errors.New("unexpected event")
	// ErrBusy: work for the channel is already in flight (a move or hibernation check, a leader
	// check, an election step); one piece of work at a time keeps results unambiguous.
	ErrBusy = errors.New("channel busy")
	// ErrNotActive: the event needs an active channel (idle timeout, hibernate, move).
	ErrNotActive = errors.New("channel not active")
	// ErrNotIdle: the channel saw activity within the hibernation delay.
	ErrNotIdle = errors.New("channel not idle")
	// ErrNotCaughtUp: some replica does not hold, commit and apply the whole log, so unloading
	// now could leave it unable to catch up without a leader in memory.
	ErrNotCaughtUp = errors.New("replicas not caught up")
	// ErrNotReplica: a move names a node outside the channel's replica set.
	ErrNotReplica = errors.New("node not in the replica set")
	// ErrNodeDead: a move names a node the arbiter has declared dead.
	ErrNodeDead = errors.New("node declared dead")
	// ErrTargetLagging: the move target does not hold the leader's whole log; raft would stall
	// the transfer and the channel would stop taking writes meanwhile.
	ErrTargetLagging = errors.New("move target lags the leader")
	// ErrStaleTerm: a replica claims to lead in a term below the recorded leader term,
	// which raft cannot produce for a fresh election.
	ErrStaleTerm = errors.New("leader term below the recorded term")
	// ErrNotDead: a repair names a replica the arbiter has not declared dead.
	ErrNotDead = errors.New("replica not declared dead")
	// ErrRejoinLeader: a rejoin names the channel's leader, which cannot take itself out of
	// its own group's configuration; leadership has to move (an election, which leaves out a
	// replica whose store was replaced or whose copy failed) before it can rejoin.
	ErrRejoinLeader = errors.New("the leader cannot rejoin its own group")
	// ErrRepairFailed: a step of a replica-set repair failed; the channel stays active with its
	// replica set as recorded, and the repair can be ordered again.
	ErrRepairFailed = errors.New("replica-set repair failed")
	// ErrLeaderUnknown: a check of the recorded leader failed without an answer; it may well
	// still lead. The waiters retry; only repeated failures count as a leader that cannot serve.
	ErrLeaderUnknown = errors.New("leader check failed, outcome unknown")
	// ErrElectionFailed: every attempt of an election failed; the channel stays without a
	// leader until Retry, a Resolve or a returning node starts a new one.
	ErrElectionFailed = errors.New("election failed")
	// ErrUnloadRefused: a replica did not unload a group it should no longer hold (a joiner of
	// a next replica set raft never applied); the record is right, the copy stays in memory.
	ErrUnloadRefused = errors.New("unload refused")
)
