package arbiter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// Joining the metadata group when this member's store holds nothing of it (issue 12, item 3).
//
// A member whose store is empty is either one of the members of a new cluster, which
// bootstrap the group together with the configured voters, or a member of an existing
// cluster whose disk was wiped or replaced. Bootstrapping the second as a voter would be
// unsafe: it forgot its vote in the current term (it could vote twice, and elect a leader
// that misses committed metadata) and its log (the leader's heartbeats carry a commit index
// beyond it, which stops the group). So the member asks the others first (GetMemberState)
// and decides:
//
//   - rejoin when any member holds the cluster: a term beyond the bootstrap term (1), a log
//     beyond BootstrapIndex, or a member that is itself rejoining (it saw one of these);
//   - bootstrap when a majority of the members, this one included, answered and none of them
//     holds the cluster, unless the operator said the cluster exists (Config.Existing);
//   - otherwise ask again every askEvery.
//
// Why the bootstrap is safe: nothing is ever committed beyond the bootstrap state before a
// leader is elected, and the first election (PreVote is on, so a term moves past 1 only once
// a majority granted the pre-vote) leaves a majority of the members with a term of at least
// 2 in their stores, which never goes back. Any two majorities share a member, so a member
// that finds a majority all at term 1 or less with nothing in their logs knows that no
// leader was ever elected, unless the only member the two majorities share is this one, with
// its store gone: for three members, a cluster that only ever ran on two of them (the third
// never reached by any leader), one of which lost its disk while the other is down. Then the
// metadata was only ever on two disks and one is lost; no rule that reads only what the
// members hold can tell this from a new cluster. The operator can, and says so with
// --initial-cluster-state=existing: the member then waits for the member that holds the
// cluster to come back. A member that never ran may still bootstrap meanwhile; that is safe,
// since its empty store never voted nor acknowledged anything, and it cannot elect a leader
// without a second vote.
//
// Why the rejoin always finds a quorum: a member holds the cluster only after a majority of
// the members bootstrapped as voters and granted a pre-vote, and a rejoining member never
// counts towards that (on probation it grants no vote). Those voters elect a leader, and the
// leader gives this member its place back (RejoinMember, rejoin.go): out of the configuration,
// back in as a learner carrying this store's id (which admits it), caught up, a voter again.
//
// A member that decided to rejoin leaves a marker file in its data directory until it is a
// voter again: restarted before that, its store may already hold part of the log, and it
// must rejoin again on probation, not load as the voter its old store was.

const (
	// bootstrapTerm is the term multiraft writes with a new group's bootstrap state.
	bootstrapTerm uint64 = 1
	// askEvery is the pause between rounds of questions to the other members.
	askEvery = 500 * time.Millisecond
	// askTimeout bounds one GetMemberState call.
	askTimeout = time.Second
	// rejoinTimeout bounds one RejoinMember call, which includes this member's catch-up.
	rejoinTimeout = 30 * time.Second
	// admitWait is how long, after the leader's answer, this member waits to apply the
	// change that made it a voter before it asks again.
	admitWait = 5 * time.Second
	// waitLogEvery is how often a member that keeps waiting says what for.
	waitLogEvery = 5 * time.Second
	// rejoinMarker is the marker file of a rejoin in progress, in the data directory.
	rejoinMarker = "arbiter-rejoin.pending"
)

// storeView is what this member's store held of the metadata group at start.
type storeView struct {
	empty              bool
	term, last, commit uint64
}

// readStoreView reads the metadata group's state from its log, as multiraft judges an empty
// log: no hard state, no entries and no configuration.
func readStoreView(log raftstore.Log) (storeView, error) {
	hs, cs, err := log.InitialState()
	if err != nil {
		return storeView{}, fmt.Errorf("arbiter: read the metadata group's state: %w", err)
	}
	last, err := log.LastIndex()
	if err != nil {
		return storeView{}, fmt.Errorf("arbiter: read the metadata log's last index: %w", err)
	}
	return storeView{
		empty: raft.IsEmptyHardState(hs) && last == 0 && len(cs.GetVoters()) == 0 && len(cs.GetLearners()) == 0,
		term:  hs.GetTerm(), last: last, commit: hs.GetCommit(),
	}, nil
}

// memberAnswer is one member's GetMemberState answer.
type memberAnswer = arbiterv1.GetMemberStateResponse

// holdsCluster reports whether a member's answer shows that the cluster exists.
func holdsCluster(a *memberAnswer) bool {
	return a.GetTerm() > bootstrapTerm || a.GetLastIndex() > multiraft.BootstrapIndex || a.GetOnProbation()
}

// decideJoin tells from what the members answer whether this member, its store empty, must
// rejoin an existing cluster (rejoin) or may bootstrap a new one with the others (ok and not
// rejoin); when neither is known yet, ok is false. answers are those of the other members;
// members counts every member, this one included; existing forbids the bootstrap.
func decideJoin(answers []*memberAnswer, members int, existing bool) (rejoin, ok bool) {
	for _, a := range answers {
		if holdsCluster(a) {
			return true, true
		}
	}
	return false, !existing && 2*(len(answers)+1) > members
}

// peerClients dials the other members, lazily and once each.
type peerClients struct {
	s     *Service
	mu    sync.Mutex
	conns map[uint64]*grpc.ClientConn
}

func (p *peerClients) client(id uint64) (arbiterv1.ArbiterServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[id]; ok {
		return arbiterv1.NewArbiterServiceClient(c), nil
	}
	c, err := p.s.dial(p.s.cfg.Peers[id])
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[uint64]*grpc.ClientConn{}
	}
	p.conns[id] = c
	return arbiterv1.NewArbiterServiceClient(c), nil
}

func (p *peerClients) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// others returns the other members' ids, in order.
func (s *Service) others() []uint64 {
	var ids []uint64
	for id := range s.cfg.Peers {
		if id != s.cfg.NodeID {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// ask asks every other member for its state at once and returns the answers that came.
func (p *peerClients) ask(ctx context.Context) []*memberAnswer {
	ids := p.s.others()
	out := make([]*memberAnswer, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			c, err := p.client(id)
			if err != nil {
				return
			}
			actx, cancel := context.WithTimeout(ctx, askTimeout)
			defer cancel()
			a, err := c.GetMemberState(actx, &arbiterv1.GetMemberStateRequest{MemberId: p.s.cfg.NodeID})
			if err == nil && a.GetMemberId() == id {
				out[i] = a
			}
		})
	}
	wg.Wait()
	return slices.DeleteFunc(out, func(a *memberAnswer) bool { return a == nil })
}

// join runs in the background of a member that started with an empty metadata store, or in
// the middle of a rejoin (rejoining): it decides how to join the group (see the top of this
// file), loads the group and, to rejoin, has the leader give its place back.
func (s *Service) join(ctx context.Context, peers *peerClients, rejoining bool) {
	defer peers.close()
	if !rejoining {
		rejoin, err := s.findCluster(ctx, peers)
		if err != nil {
			return // stopping
		}
		if !rejoin {
			if err := s.host.LoadGroup(ctx, multiraft.GroupSpec{GroupID: metaGroup, Voters: s.voters()}); err != nil {
				s.failJoin(ctx, fmt.Errorf("arbiter: bootstrap the metadata group: %w", err))
				return
			}
			s.loaded.Store(true)
			s.admitted.Store(true)
			return
		}
		if err := s.loadOnProbation(ctx); err != nil {
			s.failJoin(ctx, err)
			return
		}
	}
	s.rejoin(ctx, peers)
}

func (s *Service) failJoin(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.log.Logger.ErrorContext(ctx, "could not join the metadata group", "err", err)
		s.Fail(err)
	}
}

// findCluster asks the other members until it knows whether this member must rejoin.
func (s *Service) findCluster(ctx context.Context, peers *peerClients) (rejoin bool, err error) {
	t := time.NewTicker(askEvery)
	defer t.Stop()
	lastLog := time.Now()
	for {
		answers := peers.ask(ctx)
		rejoin, ok := decideJoin(answers, len(s.cfg.Peers), s.cfg.Existing)
		if ok {
			var seen []string
			for _, a := range answers {
				seen = append(seen, fmt.Sprintf("%d(term %d, last %d, probation %t)", a.GetMemberId(), a.GetTerm(), a.GetLastIndex(), a.GetOnProbation()))
			}
			if rejoin {
				s.log.Logger.InfoContext(ctx, "this member's store holds nothing of the metadata group and the cluster exists: "+
					"rejoining on probation with the new store", "store", fmt.Sprintf("%016x", s.store.StoreID()), "members", seen)
			} else {
				s.log.Logger.InfoContext(ctx, "a majority of the members hold nothing of the metadata group: bootstrapping a new cluster",
					"members", seen)
			}
			return rejoin, nil
		}
		if time.Since(lastLog) >= waitLogEvery {
			lastLog = time.Now()
			var answered []uint64
			for _, a := range answers {
				answered = append(answered, a.GetMemberId())
			}
			if s.cfg.Existing {
				s.log.Logger.InfoContext(ctx, "this member's store holds nothing of the metadata group and the cluster exists "+
					"(--initial-cluster-state=existing); waiting for a member that holds it", "answered", answered)
			} else {
				s.log.Logger.InfoContext(ctx, "this member's store holds nothing of the metadata group; waiting for a majority of the members "+
					"to answer (all empty: a new cluster) or for one that holds the cluster (rejoin)",
					"members", len(s.cfg.Peers), "answered", answered, "need", len(s.cfg.Peers)/2)
			}
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-t.C:
		}
	}
}

// loadOnProbation records the rejoin in the data directory, then loads the group on
// probation: empty when the store holds nothing of it, else with what it holds.
func (s *Service) loadOnProbation(ctx context.Context) error {
	s.rejoining.Store(true)
	if err := s.writeMarker(); err != nil {
		return err
	}
	spec := multiraft.GroupSpec{GroupID: metaGroup, Join: true, AdmitToken: multiraft.StoreToken(s.store.StoreID())}
	if err := s.host.LoadGroup(ctx, spec); err != nil {
		return fmt.Errorf("arbiter: load the metadata group on probation: %w", err)
	}
	s.loaded.Store(true)
	return nil
}

// rejoin asks the leader, until this member is admitted and a voter, to give this member's
// place to its new store.
func (s *Service) rejoin(ctx context.Context, peers *peerClients) {
	token := s.store.StoreID()
	var (
		hint    uint64
		lastLog = time.Now()
		lastErr error
	)
	t := time.NewTicker(askEvery)
	defer t.Stop()
	for {
		st, err := s.host.Status(ctx, metaGroup)
		if err == nil && admittedVoter(st, s.cfg.NodeID) {
			s.admitted.Store(true)
			s.rejoining.Store(false)
			if err := s.removeMarker(); err != nil {
				s.log.Logger.WarnContext(ctx, "could not remove the rejoin marker; the next start rejoins once more", "err", err)
			}
			s.log.Logger.InfoContext(ctx, "rejoined the metadata group: admitted with the new store, a voter again",
				"store", fmt.Sprintf("%016x", token), "term", st.Term, "applied", st.Applied, "leader", st.Leader)
			return
		}
		if errors.Is(err, multiraft.ErrGroupFailed) {
			s.failJoin(ctx, fmt.Errorf("arbiter: the metadata group failed while rejoining: %w", err))
			return
		}
		leader := hint
		hint = 0
		if leader == 0 && err == nil && st.Leader != s.cfg.NodeID {
			leader = st.Leader
		}
		if leader == 0 {
			leader = leaderOf(peers.ask(ctx))
		}
		if leader != 0 {
			var index uint64
			index, hint, err = s.askRejoin(ctx, peers, leader, token)
			if err == nil {
				s.awaitAdmission(ctx, index)
				continue
			}
			lastErr = err
		} else {
			lastErr = errors.New("no leader known to any member")
		}
		if time.Since(lastLog) >= waitLogEvery {
			lastLog = time.Now()
			s.log.Logger.InfoContext(ctx, "rejoining the metadata group: waiting for the leader to re-add this member",
				"leader", leader, "err", lastErr)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// askRejoin sends RejoinMember to leader; a refusal naming another leader returns it as hint.
func (s *Service) askRejoin(ctx context.Context, peers *peerClients, leader, storeID uint64) (index, hint uint64, err error) {
	c, err := peers.client(leader)
	if err != nil {
		return 0, 0, err
	}
	actx, cancel := context.WithTimeout(ctx, rejoinTimeout)
	defer cancel()
	resp, err := c.RejoinMember(actx, &arbiterv1.RejoinMemberRequest{MemberId: s.cfg.NodeID, StoreId: storeID})
	if err != nil {
		if nl := notLeaderDetail(err); nl != nil {
			hint = nl.GetLeaderId()
		}
		return 0, hint, fmt.Errorf("member %d: %w", leader, err)
	}
	return resp.GetIndex(), 0, nil
}

// admitPoll is how often awaitAdmission looks at the member's own status.
const admitPoll = 5 * time.Millisecond

// awaitAdmission waits until this member has applied the change at index that made it a
// voter with its store. The change admits it as it applies; if it is still on probation then
// (it applied the change before a restart, and replays from a later snapshot), the leader's
// answer is what admits it: its place is this store's.
func (s *Service) awaitAdmission(ctx context.Context, index uint64) {
	ctx, cancel := context.WithTimeout(ctx, admitWait)
	defer cancel()
	t := time.NewTicker(admitPoll)
	defer t.Stop()
	for {
		st, err := s.host.Status(ctx, metaGroup)
		if err == nil && st.Applied >= index && slices.Contains(st.ConfState.GetVoters(), s.cfg.NodeID) {
			if st.OnProbation {
				if err := s.host.Admit(ctx, metaGroup); err != nil {
					s.log.Logger.WarnContext(ctx, "could not admit the metadata group", "err", err)
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// admittedVoter reports whether the group runs here as a voter, off probation.
func admittedVoter(st multiraft.Status, self uint64) bool {
	return !st.OnProbation && slices.Contains(st.ConfState.GetVoters(), self)
}

// leaderOf returns the leader the answers name in the highest term, 0 when none does.
func leaderOf(answers []*memberAnswer) uint64 {
	var leader, term uint64
	for _, a := range answers {
		if a.GetLeaderId() != 0 && a.GetTerm() >= term {
			leader, term = a.GetLeaderId(), a.GetTerm()
		}
	}
	return leader
}

func (s *Service) markerPath() string { return filepath.Join(s.cfg.DataDir, rejoinMarker) }

func (s *Service) markerExists() (bool, error) {
	_, err := os.Stat(s.markerPath())
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("arbiter: read the rejoin marker: %w", err)
}

// writeMarker creates the rejoin marker durably: before the group loads on probation, so a
// restart that finds any of the group in the store also finds the marker.
func (s *Service) writeMarker() error {
	f, err := os.OpenFile(s.markerPath(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("arbiter: write the rejoin marker: %w", err)
	}
	_, err = fmt.Fprintf(f, "store %016x rejoins the metadata group; until this file is gone, every start rejoins on probation\n", s.store.StoreID())
	err = errors.Join(err, f.Sync(), f.Close(), syncDir(s.cfg.DataDir))
	if err != nil {
		return fmt.Errorf("arbiter: write the rejoin marker: %w", err)
	}
	return nil
}

func (s *Service) removeMarker() error {
	if err := os.Remove(s.markerPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(s.cfg.DataDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
