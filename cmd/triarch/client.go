package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
)

const defaultGateway = "127.0.0.1:9090"

// dialGateway connects to a gateway's gRPC API.
func dialGateway(addr string) (triarchv1.TriarchServiceClient, func(), error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("gateway %s: %w", addr, err)
	}
	return triarchv1.NewTriarchServiceClient(conn), func() { _ = conn.Close() }, nil
}

func newStatusCmd() *cobra.Command {
	var gw string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: arbiter members, nodes, channel counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := dialGateway(gw)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.GetCluster(cmd.Context(), &triarchv1.GetClusterRequest{})
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			return printCluster(cmd.OutOrStdout(), resp)
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", defaultGateway, "gateway gRPC address")
	return cmd
}

func printCluster(out io.Writer, r *triarchv1.GetClusterResponse) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ARBITER\tADDRESS\tLEADER\n")
	for _, m := range r.GetArbiters() {
		fmt.Fprintf(tw, "%d\t%s\t%v\n", m.GetId(), m.GetAddress(), m.GetLeader())
	}
	fmt.Fprintf(tw, "\nNODE\tROLE\tADDRESS\tZONE\tSTATE\tCHANNELS\tLEADERS\n")
	for _, n := range r.GetNodes() {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\n", n.GetNodeId(), n.GetRole(), n.GetAddress(),
			n.GetZone(), n.GetState(), n.GetChannels(), n.GetLeaders())
	}
	fmt.Fprintf(tw, "\nchannels: %d (active %d, hibernated %d); arbiter leader %d, term %d\n",
		r.GetChannels(), r.GetActiveChannels(), r.GetHibernatedChannels(), r.GetArbiterLeaderId(), r.GetArbiterTerm())
	return tw.Flush()
}

func newSendCmd() *cobra.Command {
	var gw, sender string
	cmd := &cobra.Command{
		Use:   "send CHANNEL TEXT...",
		Short: "Send one message (the words of TEXT joined by spaces) to a channel",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := dialGateway(gw)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.SendMessages(cmd.Context(), &triarchv1.SendMessagesRequest{
				ChannelId: args[0],
				Messages:  []*triarchv1.MessageInput{{Sender: sender, Payload: []byte(strings.Join(args[1:], " "))}},
			})
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
			for _, r := range resp.GetResults() {
				fmt.Fprintf(cmd.OutOrStdout(), "seq %d (client_msg_id %s, duplicate %v)\n", r.GetSeq(), r.GetClientMsgId(), r.GetDuplicate())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", defaultGateway, "gateway gRPC address")
	cmd.Flags().StringVar(&sender, "sender", "cli", "sender name recorded with the message")
	return cmd
}

func newTailCmd() *cobra.Command {
	var (
		gw     string
		from   uint64
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "tail CHANNEL",
		Short: "Print a channel's messages from --from on; with -f keep following new ones",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := dialGateway(gw)
			if err != nil {
				return err
			}
			defer done()
			out := cmd.OutOrStdout()
			if follow {
				return followChannel(cmd, c, args[0], from, out)
			}
			for {
				resp, err := c.ReadMessages(cmd.Context(), &triarchv1.ReadMessagesRequest{ChannelId: args[0], FromSeq: from, Limit: 1000})
				if err != nil {
					return fmt.Errorf("tail: %w", err)
				}
				for _, m := range resp.GetMessages() {
					printMessage(out, m)
				}
				if len(resp.GetMessages()) == 0 || resp.GetNextSeq() > resp.GetLastSeq() {
					return nil
				}
				from = resp.GetNextSeq()
			}
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", defaultGateway, "gateway gRPC address")
	cmd.Flags().Uint64Var(&from, "from", 1, "first sequence number to print")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new messages as they are committed")
	return cmd
}

func followChannel(cmd *cobra.Command, c triarchv1.TriarchServiceClient, channel string, from uint64, out io.Writer) error {
	stream, err := c.SubscribeMessages(cmd.Context(), &triarchv1.SubscribeMessagesRequest{ChannelId: channel, FromSeq: from})
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) || cmd.Context().Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tail: %w", err)
		}
		for _, m := range resp.GetMessages() {
			printMessage(out, m)
		}
	}
}

func printMessage(out io.Writer, m *triarchv1.Message) {
	fmt.Fprintf(out, "%d\t%s\t%s\t%s\n", m.GetSeq(), m.GetCommitTime().AsTime().Format("15:04:05.000"), m.GetSender(), m.GetPayload())
}

func newBenchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure a cluster: throughput, latency, failover, hibernate, fanout",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return fmt.Errorf("bench %s: the benchmark scenarios are not built yet (issue 7)", args[0])
		},
	}
}
