// Package client is the Go client of triarch for applications: it talks to a gateway's gRPC
// API (triarch.v1) and hides what a replicated log asks of its callers.
//
//   - Send gives every message a client_msg_id (a random 128-bit hex id) when it has none and
//     retries Unavailable answers with the same ids, so a send whose answer was lost is
//     retried without duplicating anything: the gateway returns the original sequence numbers.
//   - Read returns committed messages from a sequence number on, a page at a time.
//   - Subscribe delivers a channel's messages in order and, when the stream breaks (a gateway
//     restart, a network blip), resumes from the message after the last one it delivered, so
//     the callback sees every message exactly once.
//
// A Client is safe for concurrent use. Close it when done.
//
//	c, err := client.Dial(ctx, "127.0.0.1:9090", client.Options{})
//	if err != nil { ... }
//	defer c.Close()
//	res, err := c.Send(ctx, "general", client.Text("alice", "hello"))
//	err = c.Subscribe(ctx, "general", 1, func(m client.Message) error {
//		fmt.Printf("%d %s: %s\n", m.Seq, m.Sender, m.Payload)
//		return nil
//	})
//
// Calls take the caller's context deadline. The gateway itself retries across a channel's
// leader change for up to its --request-timeout (5 s by default); the client's own retries
// cover what is left: a gateway restart or an unreachable gateway, until the context's
// deadline or Options.RetryTimeout.
package client
