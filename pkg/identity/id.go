package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Role is what a node is in the cluster.
type Role string

// The roles. Admin is an operator's tool (the CLI's cluster commands), not a node.
const (
	RoleArbiter    Role = "arbiter"
	RoleChannelctl Role = "channelctl"
	RoleReplica    Role = "replica"
	RoleGateway    Role = "gateway"
	RoleAdmin      Role = "admin"
)

// Roles lists every role, in a fixed order.
var Roles = []Role{RoleArbiter, RoleChannelctl, RoleReplica, RoleGateway, RoleAdmin}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// TrustDomain is the authority of every triarch identity URI.
const TrustDomain = "triarch"

// ID is a node's identity: its role and its node id in that role's tier.
type ID struct {
	Role Role
	Node uint64
}

// String is the identity's URI, spiffe://triarch/<role>/<node-id>.
func (id ID) String() string { return id.URI().String() }

// URI is the identity as it appears in a certificate.
func (id ID) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + string(id.Role) + "/" + strconv.FormatUint(id.Node, 10)}
}

// Validate checks that id names a known role and a positive node id.
func (id ID) Validate() error {
	if !id.Role.Valid() {
		return fmt.Errorf("identity: unknown role %q", id.Role)
	}
	if id.Node == 0 {
		return errors.New("identity: node id must be positive")
	}
	return nil
}

// Parse reads an identity URI, spiffe://triarch/<role>/<node-id>, and nothing looser: no
// other scheme or trust domain, no port, user, query or fragment, no extra path segment.
func Parse(u *url.URL) (ID, error) {
	if u.Scheme != "spiffe" || u.Host != TrustDomain || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return ID{}, fmt.Errorf("identity: %q is not a spiffe://%s/<role>/<node-id> URI", u.String(), TrustDomain)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 || !strings.HasPrefix(u.Path, "/") {
		return ID{}, fmt.Errorf("identity: %q: want the path /<role>/<node-id>", u.String())
	}
	node, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil || parts[1] != strconv.FormatUint(node, 10) {
		return ID{}, fmt.Errorf("identity: %q: node id %q is not a decimal number", u.String(), parts[1])
	}
	id := ID{Role: Role(parts[0]), Node: node}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("%w (in %q)", err, u.String())
	}
	return id, nil
}

// ParseString is Parse of a URI in text, as written on a command line.
func ParseString(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("identity: %w", err)
	}
	return Parse(u)
}

// FromCertificate reads the identity of a certificate: its one spiffe:// URI SAN. A
// certificate with none, or with several (it would speak for two nodes), has no identity.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	var (
		found ID
		n     int
	)
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := Parse(u)
		if err != nil {
			return ID{}, err
		}
		found = id
		n++
	}
	switch n {
	case 0:
		return ID{}, errors.New("identity: the certificate names no spiffe://triarch/<role>/<node-id>")
	case 1:
		return found, nil
	default:
		return ID{}, errors.New("identity: the certificate names several identities")
	}
}
