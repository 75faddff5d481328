package raftnet

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/triarch-io/triarch/gen/triarch/raft/v1"
	"github.com/triarch-io/triarch/pkg/multiraft"
)

// frameKinds are the frames a loaded replica sends: appends carrying entries of one or of 100
// 128-byte messages (a LogBatch of n messages is about n*150 bytes), and the small messages that
// follow every append (responses) or every heartbeat interval. groups are the numbers of
// groups per frame to measure; frames stay within the transport's default 4 MiB.
var frameKinds = []struct {
	name   string
	groups []int
	build  func(group uint64) *raftpb.Message
}{
	{"app-1msg", []int{100, 1000}, func(g uint64) *raftpb.Message { return appMsg(g, 150) }},
	{"app-100msg", []int{10, 100}, func(g uint64) *raftpb.Message { return appMsg(g, 100*150) }},
	{"appresp", []int{100, 1000}, func(g uint64) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MessageType_MsgAppResp.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
			Term: proto.Uint64(3), Index: proto.Uint64(1000 + g)}
	}},
	{"heartbeat", []int{100, 1000}, func(g uint64) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: proto.Uint64(1), To: proto.Uint64(2),
			Term: proto.Uint64(3), Commit: proto.Uint64(1000 + g)}
	}},
}

func appMsg(g uint64, dataBytes int) *raftpb.Message {
	m := msg(1, 2, 1000+g)
	m.LogTerm, m.Commit = proto.Uint64(3), proto.Uint64(999+g)
	m.Entries = []*raftpb.Entry{{Index: proto.Uint64(1001 + g), Term: proto.Uint64(3), Data: make([]byte, dataBytes)}}
	return m
}

func frameEnvs(groups int, build func(uint64) *raftpb.Message) []multiraft.Envelope {
	envs := make([]multiraft.Envelope, groups)
	for i := range envs {
		envs[i] = multiraft.Envelope{GroupID: uint64(i + 1), Msg: build(uint64(i + 1))}
	}
	return envs
}

// BenchmarkFrameEncode measures the sending side of one frame of many groups' messages: the
// peer goroutine's encodeUpTo and gRPC's marshalling of the frame. One op is one frame.
func BenchmarkFrameEncode(b *testing.B) {
	for _, k := range frameKinds {
		for _, groups := range k.groups {
			b.Run(fmt.Sprintf("%s/groups=%d", k.name, groups), func(b *testing.B) {
				envs := frameEnvs(groups, k.build)
				req, err := EncodeFrame(1, 2, envs)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(proto.Size(req)))
				b.ReportAllocs()
				for b.Loop() {
					req, _, err := encodeUpTo(1, 2, envs, 0)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := proto.Marshal(req); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*groups)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkFrameDecode measures the receiving side: gRPC's unmarshalling of the frame and
// DecodeFrame. One op is one frame.
func BenchmarkFrameDecode(b *testing.B) {
	for _, k := range frameKinds {
		for _, groups := range k.groups {
			b.Run(fmt.Sprintf("%s/groups=%d", k.name, groups), func(b *testing.B) {
				req, err := EncodeFrame(1, 2, frameEnvs(groups, k.build))
				if err != nil {
					b.Fatal(err)
				}
				wire, err := proto.Marshal(req)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(wire)))
				b.ReportAllocs()
				for b.Loop() {
					var got raftv1.SendRequest
					if err := proto.Unmarshal(wire, &got); err != nil {
						b.Fatal(err)
					}
					if _, err := DecodeFrame(&got); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*groups)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
