package machine

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"google.golang.org/protobuf/types/known/timestamppb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
	replicav1 "github.com/triarch-io/triarch/gen/triarch/replica/v1"
)

// TestInteraction runs the scripts in testdata/*.txt in the style of pkg/multiraft's
// interaction tests: each file is one environment holding one or more machines, created from
// channel records the script gives, and driven one event at a time. Every event command steps
// the machine once and prints the actions it returned, one a line (their String forms; a
// load adds the stores it names, a replica change the voters it wants), then "error: ..." when
// Step returned an error; "ok" when there is neither. Times are offsets from a fixed t0 (the
// time each machine is created at), written +3m, +90s, ... Run with -rewrite to regenerate the
// expected output.
//
// Every event command takes ch=ID to pick the machine; without it, the last one created.
//
//	channel id=c replicas=(1,2,3) leader=1 term=5 epoch=10 state=active|hibernated|activating|electing|hibernating
//	        [group=7] [slot=3] [seq=40] [next=(1,2,4)] [stores=(1:101,2:202,3:303)]
//	        [hibernate-after=2m] [attempts=3]
//	    New on that record (Config.HibernateAfter default 2m, MaxElectionAttempts default 0),
//	    at t0; prints the machine's state as "state" does.
//	state
//	    The machine's state and phase, waiters, dead nodes, whether it is fenced or repairing,
//	    and its record (the arbiter's channel as of the last accepted CAS).
//
// Requests and orders:
//
//	resolve w=N [at=+d] [stale=L]       Resolve{Waiter: N, At: t0+d, StaleLeader: L}
//	cancel w=N                          CancelWaiter
//	activate | hibernate | check-leader | retry
//	                                    Activate, Hibernate, CheckLeader, Retry
//	idle-timeout now=+d                 IdleTimeout{Now: t0+d}
//	move-leader T                       MoveLeader{Target: T}
//	repair dead=D with=W                Repair (D == W is a rejoin)
//	node-dead N... | node-alive N...    NodeDead / NodeAlive, one Step per node, in order
//
// Results (a status is written S = (k=v,...), see parseStatus; errN=text is node N's error):
//
//	cas-result accepted [at=+d] [epoch=E]
//	    The arbiter accepts the CAS in flight: the result carries the machine's record with the
//	    change applied as the tests' fake arbiter does (apply). epoch= overrides the result's
//	    epoch (a result for some other CAS). With no CAS in flight, the record at epoch+1.
//	cas-result refused=stale|not-owner [reason=text] [norecord] [record fields as for channel]
//	    The arbiter refuses, sending its current record: the machine's own record with the
//	    fields given replaced (norecord: none sent).
//	loaded epoch=E [N=S]... [errN=text]...        GroupsLoaded
//	positions epoch=E [N=S]... [errN=text]...     PositionsReported
//	campaign-result N epoch=E [leader] [term=T] [status=S] [err=text]
//	                                              CampaignResult from node N
//	confirm-result N epoch=E [status=S] [err=text]
//	                                              ConfirmResult from node N (neither: answered
//	                                              without the group, a nil status)
//	transfer-result N epoch=E [err=text]          TransferResult for target N
//	unload-result epoch=E unloaded=(1,2,...) [errN=text]...
//	                                              UnloadResult
//	replicas-changed epoch=E [status=S] [err=text]
//	                                              ReplicasChanged; the status is the leader's
//
// Lines starting with # are comments.
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := &interactionEnv{machines: map[string]*Machine{}}
		datadriven.RunTest(t, path, env.handle)
	})
}

type interactionEnv struct {
	machines map[string]*Machine
	last     string
}

func (env *interactionEnv) handle(t *testing.T, d *datadriven.TestData) string {
	out, err := env.run(d)
	if err != nil {
		// A script error (a typo, a missing argument) is the test's failure, not output.
		d.Fatalf(t, "%s: %v", d.Pos, err)
	}
	return out
}

func (env *interactionEnv) run(d *datadriven.TestData) (string, error) {
	if d.Cmd == "channel" {
		return env.newChannel(d)
	}
	m, err := env.machine(d)
	if err != nil {
		return "", err
	}
	if d.Cmd == "state" {
		return describe(m), nil
	}
	if d.Cmd == "node-dead" || d.Cmd == "node-alive" {
		nodes := bareNumbers(d)
		if len(nodes) == 0 {
			return "", fmt.Errorf("%s needs a node", d.Cmd)
		}
		var b strings.Builder
		for _, n := range nodes {
			var ev Event = NodeDead{Node: n}
			if d.Cmd == "node-alive" {
				ev = NodeAlive{Node: n}
			}
			if len(nodes) > 1 {
				fmt.Fprintf(&b, "node %d:\n", n)
			}
			b.WriteString(render(m.Step(ev)))
		}
		return b.String(), nil
	}
	ev, err := event(m, d)
	if err != nil {
		return "", err
	}
	return render(m.Step(ev)), nil
}

func (env *interactionEnv) machine(d *datadriven.TestData) (*Machine, error) {
	id := env.last
	if arg, ok := findArg(d, "ch"); ok {
		id = val(arg)
	}
	m := env.machines[id]
	if m == nil {
		return nil, fmt.Errorf("no channel %q (create one with channel id=...)", id)
	}
	return m, nil
}

func (env *interactionEnv) newChannel(d *datadriven.TestData) (string, error) {
	ch := &arbiterv1.Channel{ChannelId: "c", GroupId: 7, Slot: 3}
	if err := setRecord(ch, d.CmdArgs); err != nil {
		return "", err
	}
	cfg := Config{HibernateAfter: 2 * time.Minute}
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "hibernate-after":
			dur, err := time.ParseDuration(val(a))
			if err != nil {
				return "", err
			}
			cfg.HibernateAfter = dur
		case "attempts":
			n, err := strconv.Atoi(val(a))
			if err != nil {
				return "", err
			}
			cfg.MaxElectionAttempts = n
		}
	}
	m, err := New(ch, cfg, t0)
	if err != nil {
		return fmt.Sprintf("error: %v\n", err), nil
	}
	env.machines[ch.GetChannelId()] = m
	env.last = ch.GetChannelId()
	return describe(m), nil
}

// setRecord sets the record fields among args on ch; other keys are left to the caller.
func setRecord(ch *arbiterv1.Channel, args []datadriven.CmdArg) error {
	for _, a := range args {
		var err error
		switch a.Key {
		case "id":
			ch.ChannelId = val(a)
		case "group":
			ch.GroupId, err = parseUint(val(a))
		case "slot":
			var s uint64
			s, err = parseUint(val(a))
			ch.Slot = uint32(s)
		case "replicas":
			ch.ReplicaNodeIds, err = parseList(a.Vals)
		case "next":
			ch.NextReplicaNodeIds, err = parseList(a.Vals)
		case "leader":
			ch.LeaderNodeId, err = parseUint(val(a))
		case "term":
			ch.LeaderTerm, err = parseUint(val(a))
		case "epoch":
			ch.Epoch, err = parseUint(val(a))
		case "seq":
			ch.LastSeq, err = parseUint(val(a))
		case "state":
			ch.State, err = parseState(val(a))
		case "stores":
			ch.ReplicaStoreIds, err = parsePairs(a.Vals)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", a.Key, err)
		}
	}
	return nil
}

// event builds the event of every command but channel, state, node-dead and node-alive.
func event(m *Machine, d *datadriven.TestData) (Event, error) {
	switch d.Cmd {
	case "resolve":
		w, err := uintArg(d, "w", 0)
		if err != nil {
			return nil, err
		}
		at, err := timeArg(d, "at")
		if err != nil {
			return nil, err
		}
		stale, err := uintArg(d, "stale", 0)
		return Resolve{Waiter: w, At: at, StaleLeader: stale}, err
	case "cancel":
		w, err := uintArg(d, "w", 0)
		return CancelWaiter{Waiter: w}, err
	case "activate":
		return Activate{}, nil
	case "hibernate":
		return Hibernate{}, nil
	case "check-leader":
		return CheckLeader{}, nil
	case "retry":
		return Retry{}, nil
	case "idle-timeout":
		now, err := timeArg(d, "now")
		return IdleTimeout{Now: now}, err
	case "move-leader":
		n, err := oneNumber(d)
		return MoveLeader{Target: n}, err
	case "repair":
		dead, err := uintArg(d, "dead", 0)
		if err != nil {
			return nil, err
		}
		with, err := uintArg(d, "with", 0)
		return Repair{Dead: dead, With: with}, err
	case "cas-result":
		return casResult(m, d)
	case "loaded":
		epoch, statuses, errs, err := statusArgs(d)
		return GroupsLoaded{Epoch: epoch, Statuses: statuses, Errors: errs}, err
	case "positions":
		epoch, statuses, errs, err := statusArgs(d)
		return PositionsReported{Epoch: epoch, Statuses: statuses, Errors: errs}, err
	case "campaign-result":
		n, err := oneNumber(d)
		if err != nil {
			return nil, err
		}
		ev := CampaignResult{Node: n, Err: errArg(d, "err")}
		_, ev.Leader = findArg(d, "leader")
		if ev.Epoch, err = uintArg(d, "epoch", 0); err != nil {
			return nil, err
		}
		if ev.Term, err = uintArg(d, "term", 0); err != nil {
			return nil, err
		}
		ev.Status, err = statusArg(d, n)
		return ev, err
	case "confirm-result":
		n, err := oneNumber(d)
		if err != nil {
			return nil, err
		}
		ev := ConfirmResult{Node: n, Err: errArg(d, "err")}
		if ev.Epoch, err = uintArg(d, "epoch", 0); err != nil {
			return nil, err
		}
		ev.Status, err = statusArg(d, n)
		return ev, err
	case "transfer-result":
		n, err := oneNumber(d)
		if err != nil {
			return nil, err
		}
		epoch, err := uintArg(d, "epoch", 0)
		return TransferResult{Target: n, Epoch: epoch, Err: errArg(d, "err")}, err
	case "unload-result":
		epoch, _, errs, err := statusArgs(d)
		if err != nil {
			return nil, err
		}
		ev := UnloadResult{Epoch: epoch, Errors: errs}
		if a, ok := findArg(d, "unloaded"); ok {
			if ev.Unloaded, err = parseList(a.Vals); err != nil {
				return nil, err
			}
		}
		return ev, nil
	case "replicas-changed":
		epoch, err := uintArg(d, "epoch", 0)
		if err != nil {
			return nil, err
		}
		st, err := statusArg(d, m.ch.GetLeaderNodeId())
		return ReplicasChanged{Epoch: epoch, Status: st, Err: errArg(d, "err")}, err
	}
	return nil, fmt.Errorf("unknown command %q", d.Cmd)
}

func casResult(m *Machine, d *datadriven.TestData) (Event, error) {
	at, err := timeArg(d, "at")
	if err != nil {
		return nil, err
	}
	if _, ok := findArg(d, "accepted"); ok {
		ch := m.Channel()
		if m.pending != nil {
			ch = apply(m.ch, m.pending)
		} else {
			ch.Epoch++
		}
		if a, ok := findArg(d, "epoch"); ok {
			if ch.Epoch, err = parseUint(val(a)); err != nil {
				return nil, err
			}
		}
		return CASResult{Accepted: true, Channel: ch, At: at}, nil
	}
	a, ok := findArg(d, "refused")
	if !ok {
		return nil, errors.New("cas-result needs accepted or refused=stale|not-owner")
	}
	ev := CASResult{At: at, Reason: val(a)}
	switch ev.Reason {
	case "stale":
		ev.Refusal = RefusedStaleEpoch
	case "not-owner":
		ev.Refusal = RefusedNotOwner
	default:
		return nil, fmt.Errorf("refused=%s", ev.Reason)
	}
	if r, ok := findArg(d, "reason"); ok {
		ev.Reason = val(r)
	}
	if _, ok := findArg(d, "norecord"); !ok {
		ch := m.Channel()
		if err := setRecord(ch, d.CmdArgs); err != nil {
			return nil, err
		}
		ev.Channel = ch
	}
	return ev, nil
}

// statusArgs reads epoch=E, one status per N=S argument and one error per errN=text.
func statusArgs(d *datadriven.TestData) (uint64, map[uint64]*replicav1.GroupStatus, map[uint64]error, error) {
	epoch, err := uintArg(d, "epoch", 0)
	if err != nil {
		return 0, nil, nil, err
	}
	var statuses map[uint64]*replicav1.GroupStatus
	var errs map[uint64]error
	for _, a := range d.CmdArgs {
		if rest, ok := strings.CutPrefix(a.Key, "err"); ok && rest != "" {
			n, err := parseUint(rest)
			if err != nil {
				return 0, nil, nil, fmt.Errorf("%s: %w", a.Key, err)
			}
			if errs == nil {
				errs = map[uint64]error{}
			}
			errs[n] = errors.New(strings.Join(a.Vals, ","))
			continue
		}
		n, err := strconv.ParseUint(a.Key, 10, 64)
		if err != nil || len(a.Vals) == 0 {
			continue
		}
		st, err := parseStatus(n, a.Vals)
		if err != nil {
			return 0, nil, nil, fmt.Errorf("status of %d: %w", n, err)
		}
		if statuses == nil {
			statuses = map[uint64]*replicav1.GroupStatus{}
		}
		statuses[n] = st
	}
	return epoch, statuses, errs, nil
}

func statusArg(d *datadriven.TestData, node uint64) (*replicav1.GroupStatus, error) {
	a, ok := findArg(d, "status")
	if !ok {
		return nil, nil
	}
	return parseStatus(node, a.Vals)
}

// parseStatus reads node's GroupStatus from the items of S = (item,...), each of:
//
//	leader | follower | candidate    the role (default follower); a leader names itself as
//	                                 leader and has its own progress at its last index
//	term=T                           the term, and the last term unless last= gives one
//	last=I@T | last=I                the last index (and term) of the log
//	commit=C, applied=A              default: the last index, then the commit
//	seq=S                            last_seq (default 40, the test record's)
//	match=(2:100,3:100)              a leader's progress: each follower's match
//	voters=(1,2,4), learners=(4)     the configuration it applies
//	store=S, reset                   store_id, copy_reset
//	activity=+d                      last_activity_time t0+d
//	unloaded                         loaded=false
func parseStatus(node uint64, items []string) (*replicav1.GroupStatus, error) {
	st := &replicav1.GroupStatus{ChannelId: "c", GroupId: 7, Loaded: true, Role: replicav1.Role_ROLE_FOLLOWER, LastSeq: 40}
	var commit, applied *uint64
	var lastTermSet bool
	var match map[uint64]uint64
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, _ := strings.Cut(item, "=")
		var err error
		switch k {
		case "leader":
			st.Role = replicav1.Role_ROLE_LEADER
			st.LeaderNodeId = node
		case "follower":
			st.Role = replicav1.Role_ROLE_FOLLOWER
		case "candidate":
			st.Role = replicav1.Role_ROLE_CANDIDATE
		case "term":
			st.Term, err = parseUint(v)
		case "last":
			idx, term, hasTerm := strings.Cut(v, "@")
			if st.LastIndex, err = parseUint(idx); err == nil && hasTerm {
				st.LastTerm, err = parseUint(term)
				lastTermSet = true
			}
		case "commit":
			var c uint64
			c, err = parseUint(v)
			commit = &c
		case "applied":
			var a uint64
			a, err = parseUint(v)
			applied = &a
		case "seq":
			st.LastSeq, err = parseUint(v)
		case "match":
			match, err = parsePairs(innerList(v))
		case "voters":
			st.Voters, err = parseList(innerList(v))
		case "learners":
			st.Learners, err = parseList(innerList(v))
		case "store":
			st.StoreId, err = parseUint(v)
		case "reset":
			st.CopyReset = true
		case "activity":
			var at time.Time
			at, err = parseTime(v)
			st.LastActivityTime = timestamppb.New(at)
		case "unloaded":
			st.Loaded = false
		default:
			err = errors.New("unknown item")
		}
		if err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
	}
	if !lastTermSet {
		st.LastTerm = st.Term
	}
	st.Commit = st.LastIndex
	if commit != nil {
		st.Commit = *commit
	}
	st.Applied = st.Commit
	if applied != nil {
		st.Applied = *applied
	}
	if st.Role == replicav1.Role_ROLE_LEADER {
		st.Progress = []*replicav1.Progress{{NodeId: node, Match: st.LastIndex, Next: st.LastIndex + 1}}
		for _, n := range slices.Sorted(maps.Keys(match)) {
			st.Progress = append(st.Progress, &replicav1.Progress{NodeId: n, Match: match[n], Next: match[n] + 1})
		}
	}
	return st, nil
}

// render prints what Step returned.
func render(acts []Action, err error) string {
	var b strings.Builder
	for _, a := range acts {
		b.WriteString(a.String())
		switch a := a.(type) {
		case LoadGroups:
			if a.StoreIDs != nil {
				fmt.Fprintf(&b, " stores=%v", a.StoreIDs)
			}
		case ChangeReplicas:
			fmt.Fprintf(&b, " voters=%v", a.Voters)
		}
		b.WriteByte('\n')
	}
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	if b.Len() == 0 {
		return "ok\n"
	}
	return b.String()
}

// describe prints the machine's state and its record.
func describe(m *Machine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s/%s waiters=%v dead=%v", m.ch.GetChannelId(), stateName(m.state), m.phase,
		m.waitersList(), slices.Sorted(maps.Keys(m.dead)))
	if m.fenced {
		b.WriteString(" fenced")
	}
	if m.repairing() {
		fmt.Fprintf(&b, " repairing=%d->%d", m.repairDead, m.repairWith)
	}
	ch := m.ch
	fmt.Fprintf(&b, "\nrecord: epoch=%d state=%s leader=%d term=%d seq=%d replicas=%v",
		ch.GetEpoch(), stateName(ch.GetState()), ch.GetLeaderNodeId(), ch.GetLeaderTerm(), ch.GetLastSeq(),
		ch.GetReplicaNodeIds())
	if len(ch.GetNextReplicaNodeIds()) > 0 {
		fmt.Fprintf(&b, " next=%v", ch.GetNextReplicaNodeIds())
	}
	if len(ch.GetReplicaStoreIds()) > 0 {
		fmt.Fprintf(&b, " stores=%v", ch.GetReplicaStoreIds())
	}
	b.WriteByte('\n')
	return b.String()
}

func (m *Machine) waitersList() []uint64 {
	if m.waiters == nil {
		return []uint64{}
	}
	return m.waiters
}

func findArg(d *datadriven.TestData, key string) (datadriven.CmdArg, bool) {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			return a, true
		}
	}
	return datadriven.CmdArg{}, false
}

func uintArg(d *datadriven.TestData, key string, def uint64) (uint64, error) {
	a, ok := findArg(d, key)
	if !ok {
		return def, nil
	}
	v, err := parseUint(val(a))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	return v, nil
}

func timeArg(d *datadriven.TestData, key string) (time.Time, error) {
	a, ok := findArg(d, key)
	if !ok {
		return t0, nil
	}
	return parseTime(val(a))
}

func errArg(d *datadriven.TestData, key string) error {
	a, ok := findArg(d, key)
	if !ok {
		return nil
	}
	return errors.New(strings.Join(a.Vals, ","))
}

// bareNumbers is the arguments that are node numbers without a value.
func bareNumbers(d *datadriven.TestData) []uint64 {
	var out []uint64
	for _, a := range d.CmdArgs {
		if len(a.Vals) > 0 {
			continue
		}
		if n, err := strconv.ParseUint(a.Key, 10, 64); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func oneNumber(d *datadriven.TestData) (uint64, error) {
	ns := bareNumbers(d)
	if len(ns) != 1 {
		return 0, fmt.Errorf("%s needs one node, got %v", d.Cmd, ns)
	}
	return ns[0], nil
}

func parseUint(s string) (uint64, error) { return strconv.ParseUint(strings.TrimSpace(s), 10, 64) }

// parseTime reads +d (an offset from t0) or a bare duration.
func parseTime(s string) (time.Time, error) {
	dur, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
	if err != nil {
		return time.Time{}, err
	}
	return t0.Add(dur), nil
}

func parseList(vals []string) ([]uint64, error) {
	out := []uint64{}
	for _, v := range vals {
		if strings.TrimSpace(v) == "" {
			continue
		}
		n, err := parseUint(v)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// parsePairs reads (k:v,...) into a map.
func parsePairs(vals []string) (map[uint64]uint64, error) {
	out := map[uint64]uint64{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, ":")
		if !ok {
			return nil, fmt.Errorf("%q is not k:v", v)
		}
		kn, err := parseUint(k)
		if err != nil {
			return nil, err
		}
		if out[kn], err = parseUint(val); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// innerList splits "(a,b,c)" (an item nested in a status) into its values.
func innerList(v string) []string {
	v = strings.TrimSuffix(strings.TrimPrefix(v, "("), ")")
	return strings.Split(v, ",")
}

func parseState(s string) (arbiterv1.ChannelState, error) {
	v, ok := arbiterv1.ChannelState_value["CHANNEL_STATE_"+strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("unknown state %q", s)
	}
	return arbiterv1.ChannelState(v), nil
}

// val is an argument's single value ("" when it has none).
func val(a datadriven.CmdArg) string { return strings.Join(a.Vals, ",") }
