// Package testutil holds the few helpers every test package of the module needs and none of
// them should copy: loopback addresses, a test-scoped context, and telemetry that keeps a
// service quiet unless a developer asks for its logs.
//
// It is a normal package (not a _test file) so that tests in any package, and the cluster
// harness in internal/testcluster, share one copy; nothing outside tests imports it. Polling
// is not here: require.Eventually already polls with a deadline.
package testutil
