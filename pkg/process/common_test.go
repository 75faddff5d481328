package process

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCommonValidate(t *testing.T) {
	ok := Common{NodeID: 1, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Arbiters: []string{"a:7400"}}
	require.NoError(t, ok.Validate())

	for name, tc := range map[string]struct {
		mut  func(*Common)
		want string
	}{
		"zero node id":   {func(c *Common) { c.NodeID = 0 }, "--node-id"},
		"bad listen":     {func(c *Common) { c.Listen = "nohost" }, "--listen"},
		"bad advertise":  {func(c *Common) { c.Advertise = "x" }, "--advertise"},
		"bad admin addr": {func(c *Common) { c.AdminAddr = "" }, "--admin-addr"},
		"bad arbiter":    {func(c *Common) { c.Arbiters = []string{"a:1", "b"} }, "--arbiters"},
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mut(&c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
}
