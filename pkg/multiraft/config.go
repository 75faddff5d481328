package multiraft

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"

	"go.etcd.io/raft/v3"

	"github.com/triarch-io/triarch/pkg/raftstore"
)

// Config configures a Host. Zero values of the tuning fields take the defaults below.
type Config struct {
	// NodeID is this replica's raft id in every group it hosts. Required, not 0.
	NodeID uint64
	// Store persists the logs of all groups. Required.
	Store raftstore.Store
	// Transport carries messages to peer hosts. Required.
	Transport Transport
	// Applier receives committed entries. Required.
	Applier Applier
	// Manual makes the host deterministic for tests: nothing runs unless the caller calls
	// ProcessRound, and every method runs on the calling goroutine, so one goroutine must
	// drive the host. Run refuses a manual host and ProcessRound refuses any other.
	Manual bool

	// Logger receives the host's logs, and raft's with a "group" attribute (raft's Info is
	// logged at Debug: with thousands of groups it is noise). Default: discard.
	Logger *slog.Logger

	// Workers is the number of raft worker loops; groups are sharded over them by id so that
	// a RawNode is only ever touched by one goroutine. Default: GOMAXPROCS.
	Workers int

	// SelfElecting lets the groups elect their leaders themselves, as plain raft does: every
	// group is ticked, followers and candidates included, so a follower that hears nothing
	// from a leader for an election timeout campaigns, and CheckQuorum is on, so a leader
	// that loses touch with a quorum for an election timeout steps down (PreVote stays on).
	// This is for a host whose groups have no control tier above them: the arbiter's
	// metadata group. The replica tier leaves it off, and its groups elect no one unless
	// ordered to (see the package documentation).
	SelfElecting bool

	// HeartbeatTick and ElectionTick are in host ticks. Unless SelfElecting, followers are
	// never ticked, so ElectionTick only bounds how long a leader waits for a leader
	// transfer; when SelfElecting it is raft's election timeout (randomized by raft within
	// [ElectionTick, 2*ElectionTick)). Defaults 1, 10.
	HeartbeatTick int
	ElectionTick  int

	// SnapshotEntries makes the host snapshot a group after that many entries were applied
	// since its last snapshot (0, the default: never). The Applier must implement
	// Snapshotter. The snapshot is taken on the apply stage right after the entries it
	// covers are applied, recorded in the Store (SaveSnapshot) with the group's
	// configuration as of its index, and the log is then compacted to SnapshotKeepEntries
	// entries up to that index. A follower that needs compacted entries is sent the
	// snapshot.
	SnapshotEntries uint64
	// SnapshotKeepEntries is how many entries up to a snapshot's index compaction keeps, so
	// that a follower slightly behind still catches up with entries rather than with the
	// whole snapshot. 1 keeps only the entry at the snapshot's index. Default 1000.
	SnapshotKeepEntries uint64

	// Raft flow control, per group (see raft.Config). Defaults: 1 MiB per append message,
	// 256 messages and 8 MiB in flight per follower, 8 MiB of uncommitted entries on a
	// leader (proposals beyond it fail with raft.ErrProposalDropped), 4 MiB of committed
	// entries being applied.
	MaxSizePerMsg             uint64
	MaxInflightMsgs           int
	MaxInflightBytes          uint64
	MaxUncommittedEntriesSize uint64
	MaxCommittedSizePerReady  uint64

	// MaxProposalBatchBytes caps the entries of one MsgProp: the proposals a worker finds
	// queued for a group in one round go to raft as few MsgProps as this allows (one raft
	// step per MsgProp costs several times one entry in a shared MsgProp). Default 1 MiB.
	MaxProposalBatchBytes uint64
	// MaxPendingProposals caps the proposals queued per worker between two rounds; more
	// fail with ErrOverloaded. Default 65536.
	MaxPendingProposals int
	// MaxInboxMessages caps the peer messages queued per worker between two rounds; more
	// are dropped (raft recovers from loss). Default 65536.
	MaxInboxMessages int
	// MaxRoundItems caps the peer messages, and separately the proposals, one worker round
	// takes; the rest wait for the next round, so that a burst makes several short rounds
	// whose output the stages pipeline, not one long lock-step round. Default 4096.
	MaxRoundItems int
	// MaxAppendBatchBytes caps the entry bytes of one Store.Save. Default 16 MiB.
	MaxAppendBatchBytes uint64
	// MaxApplyBatchBytes caps the entry bytes of one Applier.Apply. Default 16 MiB.
	MaxApplyBatchBytes uint64
	// MaxAppendBacklogBytes caps the entry bytes waiting for the append stage; while it is
	// exceeded new proposals fail with ErrOverloaded, so a slow disk pushes back on clients
	// instead of growing raft's unstable logs. Default 64 MiB.
	MaxAppendBacklogBytes uint64
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	switch {
	case cfg.NodeID == 0 || raft.IsLocalMsgTarget(cfg.NodeID):
		return cfg, fmt.Errorf("multiraft: invalid node id %d", cfg.NodeID)
	case cfg.Store == nil:
		return cfg, errors.New("multiraft: Store is required")
	case cfg.Transport == nil:
		return cfg, errors.New("multiraft: Transport is required")
	case cfg.Applier == nil:
		return cfg, errors.New("multiraft: Applier is required")
	}
	if _, ok := cfg.Applier.(Snapshotter); cfg.SnapshotEntries > 0 && !ok {
		return cfg, fmt.Errorf("multiraft: SnapshotEntries is %d but the Applier %T does not implement Snapshotter", cfg.SnapshotEntries, cfg.Applier)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&cfg.Workers, runtime.GOMAXPROCS(0))
	setDefault(&cfg.HeartbeatTick, 1)
	setDefault(&cfg.ElectionTick, 10*cfg.HeartbeatTick)
	setDefault(&cfg.MaxSizePerMsg, 1<<20)
	setDefault(&cfg.MaxInflightMsgs, 256)
	setDefault(&cfg.MaxInflightBytes, 8<<20)
	setDefault(&cfg.MaxUncommittedEntriesSize, 8<<20)
	setDefault(&cfg.MaxCommittedSizePerReady, 4<<20)
	setDefault(&cfg.MaxProposalBatchBytes, 1<<20)
	setDefault(&cfg.MaxPendingProposals, 1<<16)
	setDefault(&cfg.MaxInboxMessages, 1<<16)
	setDefault(&cfg.MaxRoundItems, 4096)
	setDefault(&cfg.MaxAppendBatchBytes, 16<<20)
	setDefault(&cfg.MaxApplyBatchBytes, 16<<20)
	setDefault(&cfg.MaxAppendBacklogBytes, 64<<20)
	setDefault(&cfg.SnapshotKeepEntries, 1000)
	if cfg.Workers < 0 || cfg.HeartbeatTick < 0 || cfg.MaxInflightMsgs < 0 ||
		cfg.MaxPendingProposals < 0 || cfg.MaxInboxMessages < 0 || cfg.MaxRoundItems < 0 {
		return cfg, errors.New("multiraft: negative limit in config")
	}
	if cfg.ElectionTick <= cfg.HeartbeatTick {
		return cfg, fmt.Errorf("multiraft: ElectionTick %d must exceed HeartbeatTick %d", cfg.ElectionTick, cfg.HeartbeatTick)
	}
	if cfg.MaxInflightBytes < cfg.MaxSizePerMsg {
		return cfg, fmt.Errorf("multiraft: MaxInflightBytes %d below MaxSizePerMsg %d", cfg.MaxInflightBytes, cfg.MaxSizePerMsg)
	}
	return cfg, nil
}

func setDefault[T int | uint64](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// raftConfig is the configuration of one group's RawNode.
func (c *Config) raftConfig(groupID, applied uint64, log raftstore.Log) *raft.Config {
	return &raft.Config{
		ID:            c.NodeID,
		ElectionTick:  c.ElectionTick,
		HeartbeatTick: c.HeartbeatTick,
		Storage:       log,
		Applied:       applied,
		// Storage writes and applies run in the host's shared append and apply stages.
		AsyncStorageWrites: true,
		// PreVote keeps a stale or partitioned replica that is ordered to campaign (or times
		// out, when self-electing) from bumping the term and deposing a healthy leader.
		// CheckQuorum is off in the replica tier: liveness is judged by the control tier,
		// and a leader must not step down on its own timer. A self-electing group has no
		// such tier: a leader cut off from a quorum steps down, and with PreVote its
		// followers refuse to vote while they hear from a leader (raft's leader lease).
		PreVote:     true,
		CheckQuorum: c.SelfElecting,
		// Proposals are only taken on the leader; a follower must refuse, not forward.
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		MaxSizePerMsg:             c.MaxSizePerMsg,
		MaxInflightMsgs:           c.MaxInflightMsgs,
		MaxInflightBytes:          c.MaxInflightBytes,
		MaxUncommittedEntriesSize: c.MaxUncommittedEntriesSize,
		MaxCommittedSizePerReady:  c.MaxCommittedSizePerReady,
		Logger:                    raftLogger{l: c.Logger, group: groupID},
	}
}
