// Package identity names the nodes of a triarch cluster in their TLS certificates and says
// which node may call what.
//
// A node's identity is a SPIFFE-style URI in its certificate's subject alternative names,
// spiffe://triarch/<role>/<node-id>: an arbiter member, a channelctl, a replica or a gateway
// with its node id in its tier, or an operator (admin). The transport (pkg/tlsx, pkg/grpcx)
// proves that the peer holds the certificate's key and that the cluster's CA issued it; this
// package reads the identity of a verified peer (FromContext) and enforces the Policy: which
// roles may call each gRPC method, and the node ids a call may speak for (a replica
// registers and heartbeats only as itself, raft frames come only from the node the
// certificate names). Nothing here runs without TLS: a plaintext cluster (dev mode, tests)
// installs no interceptor.
package identity
