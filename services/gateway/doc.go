// Package gateway is the front door: it serves the public API (triarch.v1) over gRPC and, through
// grpc-gateway with the HTTP rules of proto/triarch/v1/triarch_http.yaml, over REST/JSON. It holds
// no state: it resolves each channel's leader through the channel control tier, forwards sends
// and reads to that replica, and retries across leader changes within the caller's deadline.
//
// The REST side calls the gRPC side through a real client connection (grpc-gateway's
// RegisterTriarchServiceHandler), so interceptors, tracing and server streaming behave the same
// for both.
//
// The files: config.go (Config, flags), service.go (listeners, lifecycle), handler.go (the thin
// gRPC adapter: validation, defaults, message conversion), validate.go (the API's limits, whose numbers live in pkg/api),
// router.go (Router: leader resolution, route cache, retries, resumable subscriptions) and
// rest.go (JSON, error mapping, body limits).
//
// # Routing
//
// The Router caches each channel's leader as ResolveChannel last gave it. A replica's NotLeader
// answer that names the leader is followed at once; one that does not, an unreachable leader,
// or a replica that no longer has the group makes it resolve again, naming the failed leader
// stale so channelctl checks instead of answering from its cache. Sends and reads are retried
// with a short jittered backoff until the caller's deadline (5 s, --request-timeout, when the
// caller set none), so a failover is a delay. Sends are safe to retry because every message
// carries a client_msg_id: the gateway generates a random 128-bit one for a message without,
// and says so in its result. A result's duplicate flag reports what the client did: every
// attempt of one send carries the send's random 64-bit nonce, and a replica answers an id
// taken by an attempt with the same nonce (the gateway's retry after a lost answer) with its
// seq and duplicate=false; only an id an earlier send took (or the same send twice) is a
// duplicate. A subscription tracks the next sequence number it owes the client; when the
// leader's stream breaks it resubscribes at the new leader from there and drops anything below
// it, so the client sees no gap and no duplicate.
//
// # Errors
//
// Every refusal says what was wrong. gRPC code, HTTP status:
//
//	InvalidArgument      400  bad channel id, empty batch, client_msg_id, sender or headers past their
//	                          limits (pkg/api), malformed JSON, bad query
//	InvalidArgument      413  with ErrorInfo reason TOO_LARGE: payload > 1 MiB, > 1,000 messages or > 4 MiB in
//	                          one send, REST body > 8 MiB
//	NotFound             404  unknown channel (read, get, subscribe; send with --create-channels=false)
//	FailedPrecondition   400
//	Unavailable          503  no leader or channelctl reachable within the deadline; with
//	                          RetryInfo (gRPC) and Retry-After (REST)
//	ResourceExhausted    429  the channel's leader is overloaded (its proposal queue or append
//	                          backlog is full), passed on at once, not retried here; with
//	                          RetryInfo (gRPC) and Retry-After (REST); pkg/client retries it
//	DeadlineExceeded     504
//	Unimplemented        501  ListChannels and GetCluster, until the gateway talks to the arbiter
//	Canceled             499
//	Internal, Unknown    500  (grpc-go answers a request that is not valid protobuf with Internal)
//
// A REST subscription answers 200 and newline-delimited {"result": {...}} lines once the
// channel is found; an error after that is its last line, {"error": {...}}.
package gateway
