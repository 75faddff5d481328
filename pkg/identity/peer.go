package identity

import (
	"context"
	"errors"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ErrNoIdentity is the error of a call whose peer presented no verified certificate.
var ErrNoIdentity = errors.New("identity: the caller presented no verified client certificate")

// FromContext reads the identity of a gRPC call's peer from the certificate its TLS handshake
// verified. Only a verified chain counts: a certificate the server merely received proves
// nothing.
func FromContext(ctx context.Context) (ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return ID{}, ErrNoIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ID{}, ErrNoIdentity
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return ID{}, ErrNoIdentity
	}
	return FromCertificate(chains[0][0])
}
