package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// The repair of a channel whose copy failed here (a corrupt entry, see failChannel): the
// copy is discarded and the replica joins the group again as a new replica would, through
// the control tier's rejoin (add == remove, as for a replaced store). The store is the one
// the channel's record names, so the store check of prepare cannot tell this copy from a
// sound one; a reset mark does:
//
//  1. a join load of a failed channel writes the mark (group 0, durable before anything is
//     deleted), then has the host discard the group (multiraft.Host.ResetGroup) and loads
//     it empty, with Join, on probation;
//  2. while the mark is there, loads that are not joins are refused (ErrCopyReset): this
//     copy holds less than the configuration counts on it for, and a restart must not
//     bootstrap it as a voter, nor a load admit it;
//  3. the mark goes when the group applies the conf change that adds this replica with its
//     store's token (the leader's half of the rejoin), the same entry that admits it in the
//     host; a status of the group says reset until then.

// ErrCopyReset: this replica's copy of the channel was discarded after it failed here, and
// only a join (the control tier's rejoin) may load it until it is admitted again.
var ErrCopyReset = errors.New("copy reset after a failure: awaiting rejoin")

// kindReset is the mark of a reset copy, in group 0: 'r' | group id (big-endian) -> channel id.
const kindReset = 'r'

func resetKey(group uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindReset}, group)
}

// isReset reports whether the group's copy carries the reset mark.
func (e *Engine) isReset(group uint64) (bool, error) {
	v, err := e.cfg.Store.GetState(0, resetKey(group))
	if err != nil {
		return false, fmt.Errorf("replica: read reset mark of group %d: %w", group, err)
	}
	return v != nil, nil
}

// resetFailed discards the failed copy of a loaded channel so that it can join again.
func (e *Engine) resetFailed(ctx context.Context, ch *channel) error {
	if err := e.cfg.Store.SaveState([]raftstore.StateWrite{{GroupID: 0, Key: resetKey(ch.group), Value: []byte(ch.id)}}); err != nil {
		return fmt.Errorf("replica: mark %s reset: %w", ch.id, err)
	}
	if err := e.host.ResetGroup(context.WithoutCancel(ctx), ch.group); err != nil {
		return fmt.Errorf("replica: reset %s: %w", ch.id, err)
	}
	e.forget(ch.id)
	close(ch.unloaded) // its readers and subscribers end; a failed channel never unloads otherwise
	e.cfg.Log.Warn("failed copy discarded: the channel joins its group again as a new replica",
		"channel", ch.id, "group", ch.group)
	return nil
}

// readmitted returns the write that removes ch's reset mark if ents hold the conf change that
// adds this replica with its store's token (see multiraft.GroupSpec.AdmitToken), else nil.
// It runs on the apply stage.
func (e *Engine) readmitted(ch *channel, ents []*raftpb.Entry) []raftstore.StateWrite {
	if !ch.reset.Load() {
		return nil
	}
	token := multiraft.StoreToken(e.cfg.StoreID)
	if !slices.ContainsFunc(ents, func(ent *raftpb.Entry) bool { return multiraft.Admits(ent, e.cfg.NodeID, token) }) {
		return nil
	}
	return []raftstore.StateWrite{{GroupID: 0, Key: resetKey(ch.group)}}
}

// FailedChannels lists the channels whose copy here failed, or was reset and waits to rejoin:
// what the control tier repairs from the peers.
func (e *Engine) FailedChannels() ([]string, error) {
	seen := map[string]bool{}
	e.mu.RLock()
	for id, ch := range e.byID {
		if ch.failed.Load() != nil || ch.reset.Load() {
			seen[id] = true
		}
	}
	e.mu.RUnlock()
	// Marks of copies not loaded since (a restart): group 0's 'r' keys, from the highest down.
	key := resetKey(math.MaxUint64)
	for {
		k, v, err := e.cfg.Store.SeekStateLE(0, key)
		if err != nil {
			return nil, fmt.Errorf("replica: list reset marks: %w", err)
		}
		if len(k) != len(key) || k[0] != kindReset {
			break
		}
		seen[string(v)] = true
		group := binary.BigEndian.Uint64(k[1:])
		if group == 0 {
			break
		}
		key = resetKey(group - 1)
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}
