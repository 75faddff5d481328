package verify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
	"github.com/triarch-io/triarch/internal/testcluster"
)

// replicasAgree waits until, for every channel, the arbiter's record and the replicas agree:
// the record names no next replica set (no replica-set change left half-done), its leader
// applies a raft configuration whose voters are exactly the recorded replicas, and every
// recorded replica reports the same last applied sequence number (no stuck or lagging group
// once everything healed).
func replicasAgree(ctx context.Context, c *testcluster.Cluster, names []string) error {
	deadline := time.Now().Add(settle)
	for {
		err := compareReplicas(ctx, c, names)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func compareReplicas(ctx context.Context, c *testcluster.Cluster, names []string) error {
	records, err := channelRecords(ctx, c)
	if err != nil {
		return err
	}
	var errs []error
	for _, ch := range names {
		rec := records[ch]
		if rec == nil {
			errs = append(errs, fmt.Errorf("%s: the arbiter has no record of it", ch))
			continue
		}
		errs = append(errs, compareChannel(ctx, c, rec))
	}
	return errors.Join(errs...)
}

// compareChannel checks one channel's record against its recorded replicas' group statuses.
func compareChannel(ctx context.Context, c *testcluster.Cluster, rec *arbiterv1.Channel) error {
	statuses := map[uint64]*replicav1.GroupStatus{}
	var errs []error
	for _, id := range rec.GetReplicaNodeIds() {
		st, err := replicaStatus(ctx, c, id, rec.GetChannelId())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		statuses[id] = st
	}
	return errors.Join(append(errs, judgeChannel(rec, statuses))...)
}

// judgeChannel checks a channel's record against the group statuses of the recorded replicas
// that answered: no next replica set left (a replica-set change cut short and never rolled
// forward: raft's voters and the record may differ for good, the fencing issue's item 5), the
// recorded leader's raft voters exactly the recorded replicas, and every replica at one last
// sequence number.
func judgeChannel(rec *arbiterv1.Channel, statuses map[uint64]*replicav1.GroupStatus) error {
	ch := rec.GetChannelId()
	members := slices.Sorted(slices.Values(rec.GetReplicaNodeIds()))
	seqs := map[uint64]uint64{}
	var (
		errs   []error
		detail []string
	)
	for _, id := range slices.Sorted(maps.Keys(statuses)) {
		st := statuses[id]
		seqs[id] = st.GetLastSeq()
		detail = append(detail, fmt.Sprintf("replica %d: loaded %v, %v, term %d, commit %d, applied %d, last index %d, voters %v, learners %v, store %x",
			id, st.GetLoaded(), st.GetRole(), st.GetTerm(), st.GetCommit(), st.GetApplied(), st.GetLastIndex(),
			st.GetVoters(), st.GetLearners(), st.GetStoreId()))
	}
	why := fmt.Sprintf("record: replicas %v, next %v, leader %d, epoch %d, state %v; %s", rec.GetReplicaNodeIds(),
		rec.GetNextReplicaNodeIds(), rec.GetLeaderNodeId(), rec.GetEpoch(), rec.GetState(), strings.Join(detail, "; "))
	if next := rec.GetNextReplicaNodeIds(); len(next) > 0 {
		errs = append(errs, fmt.Errorf("%s: left with a next replica set %v after healing (%s)", ch, next, why))
	}
	if rec.GetState() == arbiterv1.ChannelState_CHANNEL_STATE_ACTIVE {
		if leader := statuses[rec.GetLeaderNodeId()]; leader == nil {
			errs = append(errs, fmt.Errorf("%s: recorded leader %d did not report the group (%s)", ch, rec.GetLeaderNodeId(), why))
		} else if voters := slices.Sorted(slices.Values(leader.GetVoters())); !slices.Equal(voters, members) {
			errs = append(errs, fmt.Errorf("%s: leader %d applies voters %v, the record names %v (%s)",
				ch, rec.GetLeaderNodeId(), voters, members, why))
		}
	}
	var first uint64
	for i, id := range slices.Sorted(maps.Keys(seqs)) {
		if i == 0 {
			first = seqs[id]
		} else if seqs[id] != first {
			errs = append(errs, fmt.Errorf("%s: replicas at last seqs %v (%s)", ch, seqs, why))
			break
		}
	}
	return errors.Join(errs...)
}

// channelRecords are the arbiter's channel records by id, from the first arbiter member that
// answers.
func channelRecords(ctx context.Context, c *testcluster.Cluster) (map[string]*arbiterv1.Channel, error) {
	var errs []error
	for _, id := range c.Running(testcluster.KindArbiter) {
		out, err := listChannels(ctx, arbiterv1.NewArbiterServiceClient(c.Dial(c.Addr(testcluster.KindArbiter, id))))
		if err == nil {
			return out, nil
		}
		errs = append(errs, fmt.Errorf("arbiter %d: %w", id, err))
	}
	return nil, fmt.Errorf("listing the channels: %w", errors.Join(errs...))
}

func listChannels(ctx context.Context, arb arbiterv1.ArbiterServiceClient) (map[string]*arbiterv1.Channel, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := map[string]*arbiterv1.Channel{}
	for token := ""; ; {
		page, err := arb.ListChannels(ctx, &arbiterv1.ListChannelsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, ch := range page.GetChannels() {
			out[ch.GetChannelId()] = ch
		}
		if token = page.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// replicaStatus is the channel's group status on replica node (its last applied sequence
// number, and what explains it).
func replicaStatus(ctx context.Context, c *testcluster.Cluster, node uint64, ch string) (*replicav1.GroupStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl := replicav1.NewReplicaControlServiceClient(c.Dial(c.Addr(testcluster.KindReplica, node)))
	resp, err := cl.GetGroupStatus(ctx, &replicav1.GetGroupStatusRequest{ChannelIds: []string{ch}})
	if err != nil {
		return nil, fmt.Errorf("%s on replica %d: %w", ch, node, err)
	}
	r := resp.GetResults()[0]
	if r.GetError() != nil {
		return nil, fmt.Errorf("%s on replica %d: %s", ch, node, r.GetError().GetMessage())
	}
	return r.GetStatus(), nil
}
