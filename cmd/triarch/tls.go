package main

import (
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/triarch-io/triarch/pkg/tlsx"
)

// clientCredentials are the transport credentials of a tool's connection: plaintext without
// --tls-* flags, else TLS verified against --tls-ca, with --tls-cert and --tls-key as the
// tool's own certificate when given.
func clientCredentials(f tlsx.Files) (grpc.DialOption, error) {
	if !f.Enabled() {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	cfg, err := tlsx.ClientConfig(f)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// addGatewayTLSFlags registers the TLS flags of a tool that talks to a gateway.
func addGatewayTLSFlags(fs *pflag.FlagSet, f *tlsx.Files) {
	fs.StringVar(&f.CA, "tls-ca", "", "PEM file of the cluster's CA: connect to the gateway with TLS and verify it against this CA")
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM file of a client certificate to present (optional, with --tls-key)")
	fs.StringVar(&f.Key, "tls-key", "", "PEM file of the client certificate's key")
}
