package channelctl

import (
	channelctlv1 "github.com/triarch-io/triarch/gen/triarch/channelctl/v1"
)

// handler adapts the channel control API to gRPC. Methods not yet implemented answer
// Unimplemented.
type handler struct {
	channelctlv1.UnimplementedChannelControlServiceServer
}
