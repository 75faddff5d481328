package verify

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/triarch-io/triarch/internal/verify"
)

// The subscription check passes only a subscriber that got its channel's whole final log, in
// order; a different message at a position, more than the channel holds, a delivery out of
// order, or a subscription left behind are all reported.
func TestSubscriptionsAgree(t *testing.T) {
	final := map[string][]verify.Entry{"c": {{Seq: 1, ID: "a"}, {Seq: 2, ID: "b"}}}
	sub := func(got ...verify.Entry) []*subscriber { return []*subscriber{{ch: "c", got: got}} }
	require.NoError(t, subscriptionsAgree(sub(verify.Entry{Seq: 1, ID: "a"}, verify.Entry{Seq: 2, ID: "b"}), final, 0))
	require.ErrorContains(t, subscriptionsAgree(sub(verify.Entry{Seq: 1, ID: "x"}), final, 0), "delivered {1 x} at position 0")
	require.ErrorContains(t, subscriptionsAgree(sub(final["c"][0], final["c"][1], verify.Entry{Seq: 3, ID: "z"}), final, 0),
		"delivered 3 messages, the channel holds 2")
	require.ErrorContains(t, subscriptionsAgree(sub(final["c"][0]), final, 10*time.Millisecond), "subscription at 1 of 2 messages")
	gap := []*subscriber{{ch: "c", err: errors.New("c: subscription delivered seq 3 where 2 was next")}}
	require.ErrorContains(t, subscriptionsAgree(gap, final, 0), "where 2 was next")
}
