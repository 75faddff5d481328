//go:build !plantedbug

package gateway

import triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"

// Without -tags plantedbug there are no planted bugs (see planted_bug.go): these compile to
// nothing.

func plantedLostAck(*triarchv1.SendMessagesRequest) (*triarchv1.SendMessagesResponse, bool) {
	return nil, false
}

func plantedStaleRead(*triarchv1.ReadMessagesResponse) {}
