package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/triarch-io/triarch/pkg/client"
)

// Ack is an acknowledged message: the gateway committed ClientMsgID at Seq.
type Ack struct {
	ClientMsgID string
	Seq         uint64
}

// Ledger keeps the acknowledged messages of a sample of channels. It is safe for concurrent
// use.
type Ledger struct {
	mu   sync.Mutex
	acks map[string][]Ack
}

// NewLedger tracks the given channels; Record ignores any other.
func NewLedger(channels []string) *Ledger {
	l := &Ledger{acks: make(map[string][]Ack, len(channels))}
	for _, ch := range channels {
		l.acks[ch] = nil
	}
	return l
}

// Tracks reports whether the ledger keeps channel's acks.
func (l *Ledger) Tracks(channel string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.acks[channel]
	return ok
}

// Record adds acks of a tracked channel.
func (l *Ledger) Record(channel string, acks ...Ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.acks[channel]; ok {
		l.acks[channel] = append(cur, acks...)
	}
}

// Reader reads a channel's committed messages; *client.Client is one.
type Reader interface {
	Read(ctx context.Context, channel string, from uint64, limit int) (*client.ReadResult, error)
}

// Verification is the outcome of reading back the ledger's channels.
type Verification struct {
	Channels int   `json:"channels"`
	Acked    int64 `json:"acked"`
	// Read is how many messages the channels held.
	Read int64 `json:"read"`
	// Missing acks have their id nowhere in the channel; Duplicated ones appear more than once;
	// Misplaced ones appear once but at another seq than acknowledged; Gaps counts seqs the
	// read skipped.
	Missing    int64 `json:"missing"`
	Duplicated int64 `json:"duplicated"`
	Misplaced  int64 `json:"misplaced"`
	Gaps       int64 `json:"gaps"`
	// Examples describes the first few problems.
	Examples []string `json:"examples,omitempty"`
	OK       bool     `json:"ok"`
}

// Err is nil when the check passed, else an error counting what it found.
func (v Verification) Err() error {
	if v.OK {
		return nil
	}
	return fmt.Errorf("read-back verification failed: %d missing, %d duplicated, %d misplaced, %d seq gaps",
		v.Missing, v.Duplicated, v.Misplaced, v.Gaps)
}

const maxExamples = 10

func (v *Verification) problem(format string, args ...any) {
	if len(v.Examples) < maxExamples {
		v.Examples = append(v.Examples, fmt.Sprintf(format, args...))
	}
}

// readPage is the largest page the gateway serves.
const readPage = 1000

// Verify reads every tracked channel from seq 1 through r and checks that each acknowledged
// message is present exactly once, at the seq it was acknowledged with. It returns an error
// only when reading fails; problems found are in the Verification.
func Verify(ctx context.Context, r Reader, l *Ledger) (Verification, error) {
	l.mu.Lock()
	chans := make([]string, 0, len(l.acks))
	for ch := range l.acks {
		chans = append(chans, ch)
	}
	l.mu.Unlock()
	slices.Sort(chans)
	v := Verification{Channels: len(chans)}
	for _, ch := range chans {
		l.mu.Lock()
		acks := slices.Clone(l.acks[ch])
		l.mu.Unlock()
		if err := verifyChannel(ctx, r, ch, acks, &v); err != nil {
			return v, err
		}
	}
	v.OK = v.Missing == 0 && v.Duplicated == 0 && v.Misplaced == 0 && v.Gaps == 0
	return v, nil
}

func verifyChannel(ctx context.Context, r Reader, ch string, acks []Ack, v *Verification) error {
	var maxAcked uint64
	for _, a := range acks {
		maxAcked = max(maxAcked, a.Seq)
	}
	v.Acked += int64(len(acks))
	// seqs maps each id found to the seqs it was found at.
	seqs := make(map[string][]uint64, len(acks))
	want := uint64(1)
	for {
		page, err := r.Read(ctx, ch, want, readPage)
		if err != nil {
			return fmt.Errorf("verify %s: %w", ch, err)
		}
		for _, m := range page.Messages {
			if m.Seq != want {
				if m.Seq > want {
					v.Gaps += int64(m.Seq - want)
					v.problem("%s: seqs %d..%d missing from the read", ch, want, m.Seq-1)
				}
			}
			seqs[m.ClientMsgID] = append(seqs[m.ClientMsgID], m.Seq)
			want = m.Seq + 1
			v.Read++
		}
		if len(page.Messages) == 0 || (page.NextSeq > page.LastSeq && want > maxAcked) {
			break
		}
		want = max(want, page.NextSeq)
	}
	for _, a := range acks {
		got := seqs[a.ClientMsgID]
		switch {
		case len(got) == 0:
			v.Missing++
			v.problem("%s: acked %s at seq %d is missing", ch, a.ClientMsgID, a.Seq)
		case len(got) > 1:
			v.Duplicated++
			v.problem("%s: acked %s at seq %d is present %d times (seqs %v)", ch, a.ClientMsgID, a.Seq, len(got), got)
		case got[0] != a.Seq:
			v.Misplaced++
			v.problem("%s: acked %s at seq %d is at seq %d", ch, a.ClientMsgID, a.Seq, got[0])
		}
	}
	return nil
}

// Acks returns a copy of channel's recorded acks, in the order recorded.
func (l *Ledger) Acks(channel string) []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks[channel])
}
