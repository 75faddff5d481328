package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	triarchv1 "github.com/triarch-io/triarch/gen/triarch/v1"
	"github.com/triarch-io/triarch/pkg/client"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

const defaultGateway = "127.0.0.1:9090"

// dialTimeout bounds connecting to the gateway.
const dialTimeout = 10 * time.Second

// tokenEnv names the variable that holds the API token or JWT the commands present to a
// gateway that authenticates callers.
const tokenEnv = "TRIARCH_TOKEN"

// dialGateway connects to a gateway's gRPC API: plaintext, or TLS with the --tls-* files; with
// the token of $TRIARCH_TOKEN if set.
func dialGateway(ctx context.Context, addr string, files tlsx.Files) (*client.Client, error) {
	creds, err := clientCredentials(files)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return client.Dial(dctx, addr, client.Options{DialOptions: []grpc.DialOption{creds}, Token: os.Getenv(tokenEnv)})
}

func newStatusCmd() *cobra.Command {
	var (
		gw    string
		files tlsx.Files
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: arbiter members, nodes, channel counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dialGateway(cmd.Context(), gw, files)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.Cluster(cmd.Context())
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			return printCluster(cmd.OutOrStdout(), resp)
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", defaultGateway, "gateway gRPC address")
	addGatewayTLSFlags(cmd.Flags(), &files)
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
	var (
		gw, sender, id string
		files          tlsx.Files
	)
	cmd := &cobra.Command{
		Use:   "send CHANNEL TEXT...",
		Short: "Send one message (the words of TEXT joined by spaces) to a channel",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dialGateway(cmd.Context(), gw, files)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.Send(cmd.Context(), args[0], client.Outgoing{
				ClientMsgID: id, Sender: sender, Payload: []byte(strings.Join(args[1:], " "))})
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
			for _, r := range res {
				fmt.Fprintf(cmd.OutOrStdout(), "seq %d (client_msg_id %s, duplicate %v)\n", r.Seq, r.ClientMsgID, r.Duplicate)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", defaultGateway, "gateway gRPC address")
	addGatewayTLSFlags(cmd.Flags(), &files)
	cmd.Flags().StringVar(&sender, "sender", "cli", "sender name recorded with the message")
	cmd.Flags().StringVar(&id, "client-msg-id", "", "id that makes the send idempotent (default: a random one)")
	return cmd
}

func newTailCmd() *cobra.Command {
	var (
		gw     string
		from   uint64
		follow bool
		files  tlsx.Files
	)
	cmd := &cobra.Command{
		Use:   "tail CHANNEL",
		Short: "Print a channel's messages from --from on; with -f keep following new ones",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dialGateway(cmd.Context(), gw, files)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			if follow {
				// Subscribe resumes by itself across gateway restarts and leader changes; it
				// returns nil when Ctrl-C cancels the command's context.
				err := c.Subscribe(cmd.Context(), args[0], from, func(m client.Message) error {
					printMessage(out, m)
					return nil
				})
				if err != nil {
					return fmt.Errorf("tail: %w", err)
				}
				return nil
			}
			for {
				page, err := c.Read(cmd.Context(), args[0], from, 1000)
				if err != nil {
					return fmt.Errorf("tail: %w", err)
				}
				for _, m := range page.Messages {
					printMessage(out, m)
				}
				if len(page.Messages) == 0 || page.NextSeq > page.LastSeq {
					return nil
				}
				from = page.NextSeq
			}
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", defaultGateway, "gateway gRPC address")
	addGatewayTLSFlags(cmd.Flags(), &files)
	cmd.Flags().Uint64Var(&from, "from", 1, "first sequence number to print")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new messages as they are committed")
	return cmd
}

func printMessage(out io.Writer, m client.Message) {
	fmt.Fprintf(out, "%d\t%s\t%s\t%s\n", m.Seq, m.CommitTime.Format("15:04:05.000"), m.Sender, m.Payload)
}
