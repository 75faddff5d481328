package multiraft

import (
	"context"
	"errors"
	"fmt"
)

// errPending is what Result reports before the proposal is done.
var errPending = errors.New("multiraft: proposal pending")

// Proposal is one entry proposed to a group, from ProposeAsync until it is applied locally or
// fails.
//
// It is identified by the (term, index) its leader gave it when the entry entered raft's log.
// By raft's log matching property that pair names exactly one entry in every replica's log,
// so when the entry applied at that index carries that term the proposal succeeded, and when
// it carries another term the proposal was truncated away.
type Proposal struct {
	group uint64
	// data is kept until the entry is seen in a Ready, to check that the position predicted
	// for it holds this very entry; it is dropped then, raft keeps its own copy.
	data []byte
	// conf says data is a ConfChangeV2: the entry is a conf change, proposed on its own.
	conf  bool
	index uint64
	term  uint64
	done  chan struct{}
	err   error
	// finished guards against finishing twice; only the owning goroutine touches it.
	finished bool
}

func newProposal(groupID uint64, data []byte) *Proposal {
	return &Proposal{group: groupID, data: data, done: make(chan struct{})}
}

// finish is called once, by the goroutine that owns the proposal's group.
func (p *Proposal) finish(index uint64, err error) {
	if p.finished {
		return
	}
	p.finished = true
	p.index, p.err = index, err
	p.data = nil
	close(p.done)
}

// Done is closed when the proposal has been applied locally or has failed.
func (p *Proposal) Done() <-chan struct{} { return p.done }

// Result returns the index of the applied entry, or why the proposal failed. Before Done is
// closed it returns an error saying the proposal is pending.
func (p *Proposal) Result() (uint64, error) {
	select {
	case <-p.done:
		return p.index, p.err
	default:
		return 0, errPending
	}
}

// Wait waits until the proposal is done or ctx ends. A proposal abandoned by ctx may still
// commit: retry with an idempotency key.
func (p *Proposal) Wait(ctx context.Context) (uint64, error) {
	select {
	case <-p.done:
		return p.index, p.err
	case <-ctx.Done():
		return 0, fmt.Errorf("multiraft: group %d: propose: %w", p.group, context.Cause(ctx))
	}
}
