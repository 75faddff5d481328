package channelctl

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
	"github.com/triarch-io/triarch/services/channelctl/machine"
)

// maxInstructions bounds one Instruct call, as the batched replica calls are bounded.
const maxInstructions = 1000

type instructReq struct {
	instructions []*channelctlv1.Instruction
	reply        chan []*channelctlv1.InstructionResult
}

// Instruct hands operator orders to the channels' machines: move the leader, hibernate now,
// activate now. A result says whether the machine took the order on; the transition itself
// runs like any other (every step committed in the arbiter) and shows in the channel's state.
func (c *Controller) Instruct(ctx context.Context, instructions []*channelctlv1.Instruction) ([]*channelctlv1.InstructionResult, error) {
	if len(instructions) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no instructions")
	}
	if len(instructions) > maxInstructions {
		return nil, status.Errorf(codes.InvalidArgument, "%d instructions, at most %d per call", len(instructions), maxInstructions)
	}
	for i, in := range instructions {
		if in.GetChannelId() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "instruction %d names no channel", i)
		}
		if _, err := instructionEvent(in); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "instruction %d (%s): %v", i, in.GetChannelId(), err)
		}
	}
	req := &instructReq{instructions: instructions, reply: make(chan []*channelctlv1.InstructionResult, 1)}
	select {
	case c.events <- posted{instruct: req}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case res := <-req.reply:
		return res, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func instructionEvent(in *channelctlv1.Instruction) (machine.Event, error) {
	switch k := in.GetKind().(type) {
	case *channelctlv1.Instruction_MoveLeaderToNodeId:
		if k.MoveLeaderToNodeId == 0 {
			return nil, fmt.Errorf("move to node 0")
		}
		return machine.MoveLeader{Target: k.MoveLeaderToNodeId}, nil
	case *channelctlv1.Instruction_Hibernate:
		if !k.Hibernate {
			return nil, fmt.Errorf("hibernate: false")
		}
		return machine.Hibernate{}, nil
	case *channelctlv1.Instruction_Activate:
		if !k.Activate {
			return nil, fmt.Errorf("activate: false")
		}
		return machine.Activate{}, nil
	default:
		return nil, fmt.Errorf("no instruction kind set")
	}
}

// instruct steps each instruction's machine on the run goroutine.
func (c *Controller) instruct(r *instructReq) []machine.Action {
	results := make([]*channelctlv1.InstructionResult, len(r.instructions))
	var actions []machine.Action
	for i, in := range r.instructions {
		res := &channelctlv1.InstructionResult{ChannelId: in.GetChannelId()}
		results[i] = res
		ev, _ := instructionEvent(in) // validated by Instruct
		acts, ok := c.ensureMachine(in.GetChannelId())
		if !ok {
			res.Error = fmt.Sprintf("channel %s is not in a slot this channelctl (node %d) owns, or does not exist",
				in.GetChannelId(), c.cfg.NodeID)
			continue
		}
		actions = append(actions, acts...)
		acts, err := c.stepErr(in.GetChannelId(), ev)
		actions = append(actions, acts...)
		if err != nil {
			res.Error = err.Error()
			continue
		}
		res.Succeeded = true
	}
	r.reply <- results
	return actions
}
