// Package tests holds whole-cluster tests. Each test starts its own cluster with
// internal/testcluster, on loopback addresses with t.TempDir() data, and waits for it to form:
//
//   - most tests run the real arbiter, channelctls and replicas in this process, from the
//     services' Start functions (by default one arbiter, two channelctls, three replicas), and
//     drive them as the gateway would: resolve through a channelctl, append at the leader
//     replica (testcluster's Send, ReadAll, ExactlyOnce and AckLedger). Failures are injected
//     through the harness: Stop and Restart a node on its data directory, SetReplicaFault for
//     delay and loss between replicas;
//   - the SIGKILL tests (replica_crash_test.go) run replicas as processes of the triarch
//     binary, built from ./cmd/triarch, with no arbiter or channelctl: the test plays the
//     control tier (loads groups, orders campaigns) and kills the processes with SIGKILL;
//   - TestSuiteServesHealthEverywhere and the trace tests boot services/suite, the wiring of
//     `triarch dev`, since that wiring is what they check.
//
// Services log nowhere unless TRIARCH_TEST_LOG names a file (debug level then); the logs of
// the binary's processes are printed when a test fails. Under -short only the quick suite
// health check runs.
package tests
