package verify

import (
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// logState is a channel's log as the model sees it: a persistent list, so that a step shares
// the log before it instead of copying it (porcupine keeps many states alive).
type logState struct {
	prev *logState
	id   string
	n    uint64 // messages in the log, this one included
	hash uint64 // of all the ids, in order
}

func (s *logState) len() uint64 {
	if s == nil {
		return 0
	}
	return s.n
}

func (s *logState) append(id string) *logState {
	h := fnv.New64a()
	var prev uint64
	if s != nil {
		prev = s.hash
	}
	fmt.Fprintf(h, "%d|%s", prev, id)
	return &logState{prev: s, id: id, n: s.len() + 1, hash: h.Sum64()}
}

// slice returns the ids at seqs [from, to] (1-based, inclusive); to <= len.
func (s *logState) slice(from, to uint64) []string {
	out := make([]string, 0, to-from+1)
	for n := s; n != nil && n.n >= from; n = n.prev {
		if n.n <= to {
			out = append(out, n.id)
		}
	}
	slices.Reverse(out)
	return out
}

type sendInput struct{ ids []string }

type sendOutput struct {
	seqs  []uint64
	known bool
}

type readInput struct {
	from  uint64
	limit int
}

type readOutput struct{ ids []string }

// logModel is the model of one channel: an append-only log numbered from 1.
var logModel = porcupine.Model{
	Init: func() any { return (*logState)(nil) },
	Step: func(state, input, output any) (bool, any) {
		s := state.(*logState)
		switch in := input.(type) {
		case sendInput:
			out := output.(sendOutput)
			if out.known {
				for i, seq := range out.seqs {
					if seq != s.len()+uint64(i)+1 {
						return false, s
					}
				}
			}
			for _, id := range in.ids {
				s = s.append(id)
			}
			return true, s
		case readInput:
			got := output.(readOutput).ids
			first := max(in.from, 1)
			end := first - 1 + uint64(len(got))
			if end > s.len() && len(got) > 0 {
				return false, s
			}
			if len(got) > 0 && !slices.Equal(s.slice(first, end), got) {
				return false, s
			}
			// Fewer than asked for means the read reached the end of the log.
			if len(got) < in.limit && end < s.len() {
				return false, s
			}
			return true, s
		}
		return false, s
	},
	Equal: func(a, b any) bool {
		x, y := a.(*logState), b.(*logState)
		return x.len() == y.len() && (x == nil || x.hash == y.hash)
	},
	Hash: func(state any) uint64 {
		if s := state.(*logState); s != nil {
			return s.hash
		}
		return 0
	},
	DescribeOperation: func(input, output any) string {
		switch in := input.(type) {
		case sendInput:
			out := output.(sendOutput)
			if !out.known {
				return fmt.Sprintf("send %s -> ?", strings.Join(in.ids, ","))
			}
			return fmt.Sprintf("send %s -> %v", strings.Join(in.ids, ","), out.seqs)
		case readInput:
			return fmt.Sprintf("read from %d (limit %d) -> %d: %s", in.from, in.limit,
				len(output.(readOutput).ids), strings.Join(output.(readOutput).ids, ","))
		}
		return "?"
	},
	DescribeState: func(state any) string {
		s := state.(*logState)
		if s.len() <= 8 {
			return fmt.Sprintf("%d: %s", s.len(), strings.Join(s.slice(1, s.len()), ","))
		}
		return fmt.Sprintf("%d: ...,%s", s.len(), strings.Join(s.slice(s.len()-7, s.len()), ","))
	},
}

// ErrNotLinearizable: a channel's history has no order consistent with the log model.
var ErrNotLinearizable = errors.New("history is not linearizable")

// ErrUndecided: porcupine ran out of time on a channel's history.
var ErrUndecided = errors.New("linearizability check did not finish in time")

// Linearizable checks the history of every channel against the log model, each channel with
// up to timeout. For a channel that fails it writes porcupine's visualization to
// vizDir/<channel>.html (when vizDir is set) and names it in the error. Sends whose outcome
// is unknown may take effect at any time after their call, or never; failed reads are left
// out (they observed nothing).
func Linearizable(ops []Op, timeout time.Duration, vizDir string) error {
	byChannel := map[string][]porcupine.Operation{}
	for _, op := range ops {
		p := porcupine.Operation{ClientId: op.Client, Call: int64(op.Call), Return: int64(op.Return)}
		switch op.Kind {
		case Send:
			p.Input = sendInput{ids: op.IDs}
			p.Output = sendOutput{seqs: op.Seqs, known: op.Known}
			if !op.Known {
				p.Return = math.MaxInt64
			}
		case Read:
			p.Input = readInput{from: op.From, limit: op.Limit}
			p.Output = readOutput{ids: op.Got}
		default:
			continue
		}
		byChannel[op.Channel] = append(byChannel[op.Channel], p)
	}
	var errs []error
	for _, ch := range slices.Sorted(maps.Keys(byChannel)) {
		res, info := porcupine.CheckOperationsVerbose(logModel, byChannel[ch], timeout)
		switch res {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			errs = append(errs, fmt.Errorf("%s: %w (%d operations, %v)", ch, ErrUndecided, len(byChannel[ch]), timeout))
			continue
		}
		err := fmt.Errorf("%s: %w (%d operations)", ch, ErrNotLinearizable, len(byChannel[ch]))
		if vizDir != "" {
			path := filepath.Join(vizDir, sanitize(ch)+".html")
			if verr := os.MkdirAll(vizDir, 0o755); verr == nil {
				if verr = porcupine.VisualizePath(logModel, info, path); verr == nil {
					err = fmt.Errorf("%w; visualization in %s", err, path)
				}
			}
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r == ' ' {
			return '_'
		}
		return r
	}, s)
}
