package identity

import (
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	good := map[string]ID{
		"spiffe://triarch/replica/2":    {RoleReplica, 2},
		"spiffe://triarch/arbiter/1":    {RoleArbiter, 1},
		"spiffe://triarch/channelctl/7": {RoleChannelctl, 7},
		"spiffe://triarch/gateway/3":    {RoleGateway, 3},
		"spiffe://triarch/admin/1":      {RoleAdmin, 1},
	}
	for s, want := range good {
		got, err := ParseString(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
		require.Equal(t, s, got.String(), "the URI round-trips")
	}
	bad := []string{
		"https://triarch/replica/2",        // scheme
		"spiffe://other/replica/2",         // trust domain
		"spiffe://triarch:443/replica/2",   // port
		"spiffe://u@triarch/replica/2",     // user
		"spiffe://triarch/replica/2?x=1",   // query
		"spiffe://triarch/replica/2#f",     // fragment
		"spiffe://triarch/replica",         // no node id
		"spiffe://triarch/replica/2/extra", // extra segment
		"spiffe://triarch/replica/0",       // node 0
		"spiffe://triarch/replica/-1",      // not a number
		"spiffe://triarch/replica/02",      // not canonical: two spellings of one node
		"spiffe://triarch/replica/+2",      //
		"spiffe://triarch/client/1",        // unknown role
		"spiffe://triarch//1",              // empty role
		"spiffe:triarch/replica/1",         // opaque
	}
	for _, s := range bad {
		_, err := ParseString(s)
		require.Error(t, err, s)
	}
}

func TestFromCertificate(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		require.NoError(t, err)
		return u
	}
	id, err := FromCertificate(&x509.Certificate{URIs: []*url.URL{uri("https://example.com/x"), uri("spiffe://triarch/replica/4")}})
	require.NoError(t, err)
	require.Equal(t, ID{RoleReplica, 4}, id, "URIs of other schemes are ignored")

	_, err = FromCertificate(&x509.Certificate{})
	require.ErrorContains(t, err, "names no")
	_, err = FromCertificate(&x509.Certificate{URIs: []*url.URL{uri("spiffe://triarch/replica/4"), uri("spiffe://triarch/replica/5")}})
	require.ErrorContains(t, err, "several", "a certificate may not speak for two nodes")
	_, err = FromCertificate(&x509.Certificate{URIs: []*url.URL{uri("spiffe://elsewhere/replica/4")}})
	require.Error(t, err, "a spiffe URI of another trust domain is not ignored silently")
}
