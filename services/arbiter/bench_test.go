package arbiter

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	arbiterv1 "github.com/triarch-io/triarch/gen/triarch/arbiter/v1"
)

// BenchmarkMetadataWrites measures channel creations per second through the API of a 3-member
// arbiter over real gRPC and Badger (each is a raft entry committed on two members' disks).
func BenchmarkMetadataWrites(b *testing.B) {
	m := startMembers(b, 3, longLeases) // registered replicas that never heartbeat stay placeable
	m.leader()
	c := m.client()
	registerReplicas(b, c, 1, 2, 3)
	var n atomic.Int64
	b.SetParallelism(16)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", n.Add(1))
			if _, err := c.CreateChannel(context.Background(), &arbiterv1.CreateChannelRequest{ChannelId: id, ReplicationFactor: 3}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
}

// TestHeartbeatBytes reports what an idle replica's heartbeats cost on the wire: the request
// and reply protobufs (gRPC and HTTP/2 framing add about 30 bytes each way).
func TestHeartbeatBytes(t *testing.T) {
	req := &arbiterv1.HeartbeatRequest{NodeId: 3, Incarnation: 1, LastRtt: durationpb.New(800 * time.Microsecond),
		Load:  &arbiterv1.NodeLoad{Channels: 1000, Leaders: 333, ActiveGroups: 10},
		Peers: []*arbiterv1.PeerReachability{{NodeId: 1, Reachable: true, LastContactAge: durationpb.New(time.Millisecond)}, {NodeId: 2, Reachable: true, LastContactAge: durationpb.New(time.Millisecond)}}}
	resp := &arbiterv1.HeartbeatResponse{LeaseTtl: durationpb.New(600 * time.Millisecond), HeartbeatInterval: durationpb.New(250 * time.Millisecond),
		State: arbiterv1.NodeState_NODE_STATE_ALIVE, Revision: 123456}
	per := proto.Size(req) + proto.Size(resp) + 2*30
	if per <= 0 || per > 300 {
		t.Fatalf("a heartbeat exchange is %d bytes", per)
	}
	t.Logf("heartbeat exchange %d bytes; at the calm-link interval of 250 ms: %d bytes/s per node", per, per*4)
}
