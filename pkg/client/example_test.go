package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/triarch-io/triarch/pkg/client"
)

// Send two messages, read the channel back, and follow it.
func Example() {
	addr := exampleGateway() // a gateway's gRPC address, such as triarch dev's 127.0.0.1:9090
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// Sending creates the channel. Each message gets a client_msg_id, which makes resending
	// it harmless.
	res, err := c.Send(ctx, "general", client.Text("alice", "hello"), client.Text("bob", "hi there"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range res {
		fmt.Printf("sent seq %d\n", r.Seq)
	}
	again, err := c.Send(ctx, "general", client.Outgoing{ClientMsgID: res[0].ClientMsgID, Sender: "alice", Payload: []byte("hello")})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("resent: seq %d, duplicate %v\n", again[0].Seq, again[0].Duplicate)

	page, err := c.Read(ctx, "general", 1, 100)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range page.Messages {
		fmt.Printf("read %d %s: %s\n", m.Seq, m.Sender, m.Payload)
	}

	// Follow the channel from seq 2; the callback stops it here after one more message.
	done := errors.New("done")
	go func() { _, _ = c.Send(ctx, "general", client.Text("carol", "late, sorry")) }()
	err = c.Subscribe(ctx, "general", 2, func(m client.Message) error {
		fmt.Printf("live %d %s: %s\n", m.Seq, m.Sender, m.Payload)
		if m.Seq == 3 {
			return done
		}
		return nil
	})
	fmt.Println(errors.Is(err, done))
	// Output:
	// sent seq 1
	// sent seq 2
	// resent: seq 1, duplicate true
	// read 1 alice: hello
	// read 2 bob: hi there
	// live 2 bob: hi there
	// live 3 carol: late, sorry
	// true
}
