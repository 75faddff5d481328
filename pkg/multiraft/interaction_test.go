package multiraft_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/triarch-io/triarch/pkg/multiraft"
	"github.com/triarch-io/triarch/pkg/multiraft/memnet"
	"github.com/triarch-io/triarch/pkg/raftstore"
)

// TestInteraction runs the scripts in testdata/*.txt, in the style of etcd raft's rafttest
// InteractionEnv: each file is a fresh environment of manual hosts (Config.Manual) on one
// memnet hub, with memory stores and memAppliers (corruptAppliers, so that a script can damage
// a node), driven one command at a time. Run with -rewrite to regenerate the expected output.
//
// Commands (node and group ids are numbers). A command that settles the cluster runs rounds
// on every running host and deliveries (memnet's Stabilize) until nothing moves, then prints
// what changed since the last print (see report): each group whose role, term, known leader,
// probation or configuration changed on a node, each group that failed on a node, and each
// proposal that finished. A command with nothing else to say prints "ok", or its error.
//
//	add-hosts n
//	    Starts n more hosts, numbered after the existing ones, each with an empty store.
//	load group=G [voters=(1,2,3)] [join] [admit-token=T] [on=(1,2)]
//	    Loads group G on the given nodes (default: every running host). A group without data
//	    is bootstrapped with voters (default: every host added), or joins empty with join;
//	    admit-token loads it on probation. Prints each node's state after the load.
//	campaign node group=G
//	    Orders node to campaign for G (Host.Campaign). Does not settle: run stabilize.
//	propose node group=G data...
//	    Proposes each datum as its own entry on node (ProposeAsync, all in one round), then
//	    settles and prints the outcome of every proposal done, or that it is pending (it is
//	    then printed by the command that settles it).
//	propose-conf node group=G add|remove|add-learner target [token=T]
//	    Proposes a one-change ConfChangeV2 on node (token is its Context), then settles.
//	stabilize
//	    Settles the cluster and prints what changed ("no change" when nothing did).
//	tick node|all [n]
//	    n times (default 1): ticks the node, or every running host, then settles. Prints the
//	    changes of all n ticks together.
//	isolate node | partition a b | heal
//	    Cuts every link of node, or the link a-b; heal restores every link.
//	status [node...] group=G
//	    The group's state on the nodes (default: every running host): role, term, vote,
//	    leader, last index@term, commit, applied, configuration, probation, and on a leader
//	    the progress of every replica.
//	applied [node...] group=G
//	    Every entry the node's Applier applied for G: index/term and data.
//	unload node group=G
//	    UnloadGroup (hibernation).
//	crash node
//	    Drops node's host; its store and Applier survive (a durable state machine). Its
//	    pending proposals are abandoned.
//	restart node [wipe]
//	    Starts a new host for node on its store and Applier, as the restart tests do; with
//	    wipe, on a new empty store and a fresh Applier (the disk was replaced). Groups are
//	    not loaded: use load.
//	damage node
//	    From now on node's Applier cannot read entries whose data starts with "corrupt": it
//	    fails their group on that node only (corrupt_group_test.go).
//	reset node group=G
//	    ResetGroup on node; its Applier forgets what it applied of G and is no longer damaged:
//	    the corruption was in its own copy (corruptApplier.resetCopy).
//
// Lines starting with # are comments.
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := newInteractionEnv(t)
		datadriven.RunTest(t, path, env.handle)
	})
}

// nodeGroup keys what the environment last printed of a group on a node.
type nodeGroup struct{ group, node uint64 }

// pendingProposal is a proposal the scripts have not seen settle yet.
type pendingProposal struct {
	id    int
	node  uint64
	group uint64
	what  string
	p     *multiraft.Proposal
}

type interactionEnv struct {
	c *cluster[*corruptApplier]
	// seen is each group's state on each node as last printed, so that settling prints
	// only what changed.
	seen map[nodeGroup]string
	// confSeen is the configuration likewise.
	confSeen map[nodeGroup]string
	// failSeen holds the group failures already printed.
	failSeen map[nodeGroup]bool
	pending  []*pendingProposal
	nextProp int
}

func newInteractionEnv(t *testing.T) *interactionEnv {
	c := startCluster(t, 0, memnet.Options{Seed: 1}, memoryStore, func() *corruptApplier {
		return &corruptApplier{memApplier: newMemApplier(), failed: map[uint64]uint64{}}
	}, nil)
	return &interactionEnv{
		c:        c,
		seen:     make(map[nodeGroup]string),
		confSeen: make(map[nodeGroup]string),
		failSeen: make(map[nodeGroup]bool),
	}
}

func (e *interactionEnv) handle(t *testing.T, d *datadriven.TestData) string {
	var b strings.Builder
	var err error
	switch d.Cmd {
	case "add-hosts":
		err = e.addHosts(&b, d)
	case "load":
		err = e.load(&b, d)
	case "campaign":
		err = e.campaign(d)
	case "propose":
		err = e.propose(&b, d)
	case "propose-conf":
		err = e.proposeConf(&b, d)
	case "stabilize":
		e.settle(&b)
		if b.Len() == 0 {
			return "no change"
		}
	case "tick":
		err = e.tick(&b, d)
	case "isolate":
		err = e.isolate(d)
	case "partition":
		err = e.partition(d)
	case "heal":
		e.c.hub.Heal()
	case "status":
		err = e.status(&b, d)
	case "applied":
		err = e.applied(&b, d)
	case "unload":
		err = e.unload(d)
	case "crash":
		err = e.crash(&b, d)
	case "restart":
		err = e.restart(d)
	case "damage":
		err = e.damage(d)
	case "reset":
		err = e.reset(d)
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	if b.Len() == 0 {
		return "ok"
	}
	return b.String()
}

// Argument parsing: positional arguments are the keys without values, in order.

func positional(d *datadriven.TestData) []string {
	var out []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 {
			out = append(out, a.Key)
		}
	}
	return out
}

func parseID(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an id", s)
	}
	return n, nil
}

func parseIDs(ss []string) ([]uint64, error) {
	out := make([]uint64, 0, len(ss))
	for _, s := range ss {
		n, err := parseID(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// arg returns the values of key=..., and whether it is there.
func arg(d *datadriven.TestData, key string) ([]string, bool) {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			return a.Vals, true
		}
	}
	return nil, false
}

func groupArg(d *datadriven.TestData) (uint64, error) {
	v, ok := arg(d, "group")
	if !ok || len(v) != 1 {
		return 0, errors.New("missing group=G")
	}
	return parseID(v[0])
}

// hasFlag reports a positional argument named name.
func hasFlag(d *datadriven.TestData, name string) bool {
	return slices.Contains(positional(d), name)
}

// nodeArg is the first positional argument, a running host's id.
func (e *interactionEnv) nodeArg(d *datadriven.TestData) (uint64, error) {
	pos := positional(d)
	if len(pos) == 0 {
		return 0, errors.New("missing node")
	}
	id, err := parseID(pos[0])
	if err != nil {
		return 0, err
	}
	if e.c.hosts[id] == nil {
		return 0, fmt.Errorf("node %d is not running", id)
	}
	return id, nil
}

// nodesArg is the positional node ids, or every running host when there are none.
func (e *interactionEnv) nodesArg(d *datadriven.TestData) ([]uint64, error) {
	pos := positional(d)
	if len(pos) == 0 {
		return e.running(), nil
	}
	return parseIDs(pos)
}

func (e *interactionEnv) running() []uint64 {
	var out []uint64
	for _, id := range e.c.ids {
		if e.c.hosts[id] != nil {
			out = append(out, id)
		}
	}
	return out
}

// Commands.

func (e *interactionEnv) addHosts(b *strings.Builder, d *datadriven.TestData) error {
	pos := positional(d)
	if len(pos) != 1 {
		return errors.New("usage: add-hosts n")
	}
	n, err := strconv.Atoi(pos[0])
	if err != nil {
		return err
	}
	for range n {
		id := uint64(len(e.c.ids) + 1)
		e.c.ids = append(e.c.ids, id)
		e.c.stores[id] = raftstore.NewMemory()
		e.c.appliers[id] = e.c.newApplier()
		e.c.startHost(id)
	}
	fmt.Fprintf(b, "hosts %s\n", idList(e.c.ids))
	return nil
}

func (e *interactionEnv) load(b *strings.Builder, d *datadriven.TestData) error {
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	spec := multiraft.GroupSpec{GroupID: g, Join: hasFlag(d, "join")}
	if !spec.Join {
		spec.Voters = slices.Clone(e.c.ids)
	}
	if v, ok := arg(d, "voters"); ok {
		if spec.Voters, err = parseIDs(v); err != nil {
			return err
		}
	}
	if v, ok := arg(d, "admit-token"); ok {
		spec.AdmitToken = []byte(v[0])
	}
	nodes := e.running()
	if v, ok := arg(d, "on"); ok {
		if nodes, err = parseIDs(v); err != nil {
			return err
		}
	}
	for _, id := range nodes {
		h := e.c.hosts[id]
		if h == nil {
			fmt.Fprintf(b, "node %d: not running\n", id)
			continue
		}
		if err := h.LoadGroup(context.Background(), spec); err != nil {
			fmt.Fprintf(b, "node %d: error: %v\n", id, err)
			continue
		}
		e.describe(b, id, g, true)
	}
	return nil
}

func (e *interactionEnv) campaign(d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	return e.c.hosts[id].Campaign(context.Background(), g)
}

func (e *interactionEnv) propose(b *strings.Builder, d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	data := positional(d)[1:]
	if len(data) == 0 {
		return errors.New("nothing to propose")
	}
	first := e.nextProp + 1
	for _, s := range data {
		e.track(id, g, strconv.Quote(s), e.c.hosts[id].ProposeAsync(g, []byte(s)))
	}
	e.settleProposals(b, first)
	return nil
}

func (e *interactionEnv) proposeConf(b *strings.Builder, d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	pos := positional(d)
	if len(pos) != 3 {
		return errors.New("usage: propose-conf node group=G add|remove|add-learner target [token=T]")
	}
	types := map[string]raftpb.ConfChangeType{
		"add":         raftpb.ConfChangeType_ConfChangeAddNode,
		"remove":      raftpb.ConfChangeType_ConfChangeRemoveNode,
		"add-learner": raftpb.ConfChangeType_ConfChangeAddLearnerNode,
	}
	typ, ok := types[pos[1]]
	if !ok {
		return fmt.Errorf("unknown conf change %q", pos[1])
	}
	target, err := parseID(pos[2])
	if err != nil {
		return err
	}
	cc := confChange(typ, target)
	if v, ok := arg(d, "token"); ok {
		cc.Context = []byte(v[0])
	}
	first := e.nextProp + 1
	e.track(id, g, describeConfChange(cc), e.c.hosts[id].ProposeConfChangeAsync(g, cc))
	e.settleProposals(b, first)
	return nil
}

func (e *interactionEnv) track(node, g uint64, what string, p *multiraft.Proposal) {
	e.nextProp++
	e.pending = append(e.pending, &pendingProposal{id: e.nextProp, node: node, group: g, what: what, p: p})
}

func (e *interactionEnv) tick(b *strings.Builder, d *datadriven.TestData) error {
	pos := positional(d)
	if len(pos) == 0 || len(pos) > 2 {
		return errors.New("usage: tick node|all [n]")
	}
	nodes := e.running()
	if pos[0] != "all" {
		id, err := e.nodeArg(d)
		if err != nil {
			return err
		}
		nodes = []uint64{id}
	}
	n := 1
	if len(pos) == 2 {
		var err error
		if n, err = strconv.Atoi(pos[1]); err != nil {
			return err
		}
	}
	var errs []string
	for range n {
		for _, id := range nodes {
			if h := e.c.hosts[id]; h != nil {
				h.Tick()
			}
		}
		if err := e.c.hub.Stabilize(0); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, s := range errs {
		fmt.Fprintf(b, "error: %s\n", s)
	}
	e.report(b)
	if b.Len() == 0 {
		b.WriteString("no change\n")
	}
	return nil
}

func (e *interactionEnv) isolate(d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	e.c.hub.Isolate(id)
	return nil
}

func (e *interactionEnv) partition(d *datadriven.TestData) error {
	ids, err := parseIDs(positional(d))
	if err != nil {
		return err
	}
	if len(ids) != 2 {
		return errors.New("usage: partition a b")
	}
	e.c.hub.Partition(ids[0], ids[1])
	return nil
}

func (e *interactionEnv) status(b *strings.Builder, d *datadriven.TestData) error {
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	nodes, err := e.nodesArg(d)
	if err != nil {
		return err
	}
	for _, id := range nodes {
		h := e.c.hosts[id]
		if h == nil {
			fmt.Fprintf(b, "node %d: not running\n", id)
			continue
		}
		st, err := h.Status(context.Background(), g)
		if err != nil {
			fmt.Fprintf(b, "node %d: error: %v\n", id, err)
			continue
		}
		leader := "none"
		if st.Leader != 0 {
			leader = strconv.FormatUint(st.Leader, 10)
		}
		fmt.Fprintf(b, "node %d: %s term=%d vote=%d leader=%s last=%d@%d commit=%d applied=%d\n",
			id, roleName(st), st.Term, st.Vote, leader, st.LastIndex, st.LastTerm, st.Commit, st.Applied)
		fmt.Fprintf(b, "  %s\n", confString(st.ConfState))
		if st.OnProbation {
			fmt.Fprintf(b, "  on probation\n")
		}
		for _, p := range sortedKeys(st.Progress) {
			pr := st.Progress[p]
			learner := ""
			if pr.Learner {
				learner = " learner"
			}
			fmt.Fprintf(b, "  progress %d: match=%d next=%d %s%s\n", p, pr.Match, pr.Next, pr.State, learner)
		}
	}
	return nil
}

func (e *interactionEnv) applied(b *strings.Builder, d *datadriven.TestData) error {
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	nodes, err := e.nodesArg(d)
	if err != nil {
		return err
	}
	for _, id := range nodes {
		a := e.c.appliers[id]
		if a == nil {
			fmt.Fprintf(b, "node %d: no such node\n", id)
			continue
		}
		ents := a.entries(g)
		var parts []string
		for _, en := range ents {
			parts = append(parts, fmt.Sprintf("%d/%d %s", en.Index, en.Term, describeEntry(en)))
		}
		if len(parts) == 0 {
			parts = []string{"nothing"}
		}
		fmt.Fprintf(b, "node %d: %s\n", id, strings.Join(parts, ", "))
	}
	return nil
}

func (e *interactionEnv) unload(d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	if err := e.c.hosts[id].UnloadGroup(context.Background(), g); err != nil {
		return err
	}
	key := nodeGroup{g, id}
	delete(e.seen, key)
	delete(e.confSeen, key)
	return nil
}

func (e *interactionEnv) crash(b *strings.Builder, d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	e.c.hub.Detach(id)
	delete(e.c.hosts, id)
	e.forget(id)
	e.pending = slices.DeleteFunc(e.pending, func(p *pendingProposal) bool {
		if p.node != id {
			return false
		}
		fmt.Fprintf(b, "proposal %d (node %d group %d %s): abandoned with its host\n", p.id, p.node, p.group, p.what)
		return true
	})
	return nil
}

// forget drops what was printed of node's groups: a new host starts from its store.
func (e *interactionEnv) forget(id uint64) {
	for _, m := range []map[nodeGroup]string{e.seen, e.confSeen} {
		for k := range m {
			if k.node == id {
				delete(m, k)
			}
		}
	}
	for k := range e.failSeen {
		if k.node == id {
			delete(e.failSeen, k)
		}
	}
}

func (e *interactionEnv) restart(d *datadriven.TestData) error {
	pos := positional(d)
	if len(pos) == 0 {
		return errors.New("usage: restart node [wipe]")
	}
	id, err := parseID(pos[0])
	if err != nil {
		return err
	}
	if e.c.stores[id] == nil {
		return fmt.Errorf("node %d was never added", id)
	}
	if e.c.hosts[id] != nil {
		return fmt.Errorf("node %d is running: crash it first", id)
	}
	if hasFlag(d, "wipe") {
		e.c.stores[id] = raftstore.NewMemory()
		e.c.appliers[id] = e.c.newApplier()
	}
	e.c.startHost(id)
	return nil
}

func (e *interactionEnv) damage(d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	a := e.c.appliers[id]
	a.mu.Lock()
	a.damaged = true
	a.mu.Unlock()
	return nil
}

func (e *interactionEnv) reset(d *datadriven.TestData) error {
	id, err := e.nodeArg(d)
	if err != nil {
		return err
	}
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	if err := e.c.hosts[id].ResetGroup(context.Background(), g); err != nil {
		return err
	}
	e.c.appliers[id].resetCopy(g)
	key := nodeGroup{g, id}
	delete(e.seen, key)
	delete(e.confSeen, key)
	delete(e.failSeen, key)
	return nil
}

// Settling and reporting.

// settle runs rounds and deliveries until nothing moves, then reports.
func (e *interactionEnv) settle(b *strings.Builder) {
	if err := e.c.hub.Stabilize(0); err != nil {
		fmt.Fprintf(b, "error: %v\n", err)
	}
	e.report(b)
}

// report prints, since the last report: every group whose role, term, leader or probation
// changed on a node, and its configuration if that changed; every group that failed on a
// node; every proposal that finished. Groups in increasing order, then nodes.
func (e *interactionEnv) report(b *strings.Builder) {
	type line struct {
		key  nodeGroup
		text string
	}
	var lines []line
	for _, id := range e.running() {
		h := e.c.hosts[id]
		if err := h.Err(); err != nil {
			lines = append(lines, line{nodeGroup{0, id}, fmt.Sprintf("node %d: host stopped: %v", id, err)})
			continue
		}
		for _, g := range h.FailedGroups() {
			key := nodeGroup{g, id}
			if !e.failSeen[key] {
				e.failSeen[key] = true
				lines = append(lines, line{key, fmt.Sprintf("node %d group %d: failed: %v", id, g, h.Failure(g))})
			}
		}
		groups, err := h.Groups(context.Background())
		if err != nil {
			continue
		}
		for _, g := range groups {
			var sb strings.Builder
			e.describe(&sb, id, g, false)
			if s := strings.TrimSuffix(sb.String(), "\n"); s != "" {
				lines = append(lines, line{nodeGroup{g, id}, s})
			}
		}
	}
	slices.SortStableFunc(lines, func(a, b line) int {
		if a.key.group != b.key.group {
			return cmpU(a.key.group, b.key.group)
		}
		return cmpU(a.key.node, b.key.node)
	})
	for _, l := range lines {
		b.WriteString(l.text + "\n")
	}
	e.pending = slices.DeleteFunc(e.pending, func(p *pendingProposal) bool {
		select {
		case <-p.p.Done():
		default:
			return false
		}
		idx, err := p.p.Result()
		fmt.Fprintf(b, "proposal %d (node %d group %d %s): ", p.id, p.node, p.group, p.what)
		if err != nil {
			fmt.Fprintf(b, "failed: %v\n", err)
		} else {
			fmt.Fprintf(b, "applied at index %d\n", idx)
		}
		return true
	})
}

// settleProposals settles the cluster after proposals were queued, and says which of the
// proposals from first on are still pending: the command that settles them prints them.
func (e *interactionEnv) settleProposals(b *strings.Builder, first int) {
	e.settle(b)
	for _, p := range e.pending {
		if p.id >= first {
			fmt.Fprintf(b, "proposal %d (node %d group %d %s): pending\n", p.id, p.node, p.group, p.what)
		}
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// describe prints the state of group g on node id, all of it with always, else only what
// changed since it was last printed, and records it as printed.
func (e *interactionEnv) describe(b *strings.Builder, id, g uint64, always bool) {
	st, err := e.c.hosts[id].Status(context.Background(), g)
	if err != nil {
		if always {
			fmt.Fprintf(b, "node %d group %d: error: %v\n", id, g, err)
		}
		return
	}
	key := nodeGroup{g, id}
	state := roleName(st) + " term=" + strconv.FormatUint(st.Term, 10)
	if st.Leader != 0 && st.Leader != id {
		state += " leader=" + strconv.FormatUint(st.Leader, 10)
	}
	if st.OnProbation {
		state += " on probation"
	}
	conf := confString(st.ConfState)
	prevState, hadState := e.seen[key]
	prevConf := e.confSeen[key]
	e.seen[key], e.confSeen[key] = state, conf
	switch {
	case always || !hadState:
		fmt.Fprintf(b, "node %d group %d: %s %s\n", id, g, state, conf)
	case prevState != state && prevConf != conf:
		fmt.Fprintf(b, "node %d group %d: %s %s\n", id, g, state, conf)
	case prevState != state:
		fmt.Fprintf(b, "node %d group %d: %s\n", id, g, state)
	case prevConf != conf:
		fmt.Fprintf(b, "node %d group %d: %s\n", id, g, conf)
	}
}

func roleName(st multiraft.Status) string {
	// StateFollower -> follower, StatePreCandidate -> pre-candidate, ...
	switch s := st.Role.String(); s {
	case "StatePreCandidate":
		return "pre-candidate"
	default:
		return strings.ToLower(strings.TrimPrefix(s, "State"))
	}
}

func confString(cs *raftpb.ConfState) string {
	s := "voters=(" + idList(cs.GetVoters()) + ")"
	if l := cs.GetLearners(); len(l) > 0 {
		s += " learners=(" + idList(l) + ")"
	}
	if o := cs.GetVotersOutgoing(); len(o) > 0 {
		s += " outgoing=(" + idList(o) + ")"
	}
	return s
}

func idList(ids []uint64) string {
	s := slices.Clone(ids)
	slices.Sort(s)
	parts := make([]string, len(s))
	for i, id := range s {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func describeEntry(en appliedEntry) string {
	switch en.Type {
	case raftpb.EntryNormal:
		if en.Data == "" {
			return "(empty)"
		}
		return strconv.Quote(en.Data)
	case raftpb.EntryConfChangeV2:
		var cc raftpb.ConfChangeV2
		if err := proto.Unmarshal([]byte(en.Data), &cc); err != nil {
			return "(bad conf change)"
		}
		return describeConfChange(&cc)
	default:
		return en.Type.String()
	}
}

func describeConfChange(cc *raftpb.ConfChangeV2) string {
	names := map[raftpb.ConfChangeType]string{
		raftpb.ConfChangeType_ConfChangeAddNode:        "add",
		raftpb.ConfChangeType_ConfChangeRemoveNode:     "remove",
		raftpb.ConfChangeType_ConfChangeAddLearnerNode: "add-learner",
	}
	var parts []string
	for _, c := range cc.GetChanges() {
		name, ok := names[c.GetType()]
		if !ok {
			name = c.GetType().String()
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, c.GetNodeId()))
	}
	if len(parts) == 0 {
		parts = []string{"leave-joint"}
	}
	s := "conf " + strings.Join(parts, ", ")
	if len(cc.GetContext()) > 0 {
		s += " token=" + string(cc.GetContext())
	}
	return s
}
