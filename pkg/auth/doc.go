// Package auth is the gateway's client authentication and authorization: who a caller is, from
// the bearer token it presents (REST "Authorization: Bearer ...", gRPC metadata
// "authorization"), and what it may do, per channel pattern and action.
//
// Two kinds of credential are accepted, either or both:
//
//   - API tokens listed in a JSON file (TokenFile), each with a name and its grants. A token is
//     stored as its SHA-256 (hex) so that the file does not hold secrets, or in plain text for
//     tries; presented tokens are compared in constant time.
//   - JWTs signed by a key of a JSON Web Key Set file (RFC 7517: RSA, EC P-256/384/521 and
//     Ed25519 keys), with the issuer and audience configured, an expiry required, and the grants
//     in a claim ("triarch_grants" by default) of the same shape as a token's.
//
// Both files are read again when they change (checked at most once a second, on use), so
// tokens and keys rotate without a restart; a file that no longer parses keeps the last good
// version and the error is reported by Reload.
//
// A grant names a channel pattern ("*" matches any run of characters, everything else itself)
// and actions: send, read, subscribe, create and admin. The gateway maps each RPC to one action
// and one channel (admin RPCs to the pattern "*"). Whoever may send to a channel may create it
// implicitly when the gateway creates channels on send; to keep creation to "create" grants,
// run the gateway with --create-channels=false.
//
// This package knows nothing of gRPC: the gateway turns ErrUnauthenticated into
// codes.Unauthenticated (HTTP 401) and a refused grant into codes.PermissionDenied (403).
package auth
