// Package tlsx holds the TLS material of a triarch node: the cluster's CA, the node's
// certificate and key, read from PEM files and read again whenever the files change, so
// that certificates are rotated by replacing the files, without a restart. It builds the
// tls.Configs of both ends of a mutual-TLS connection (TLS 1.3, a client certificate
// required and verified against the CA) and issues the certificates of a cluster (Issue,
// behind `triarch certs init`).
//
// Peers are verified by the identity in their certificate (pkg/identity), not by host name:
// nodes dial each other by address, and the CA vouches for the node the certificate names.
package tlsx
