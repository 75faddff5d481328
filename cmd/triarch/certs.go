package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/triarch-io/triarch/pkg/identity"
	"github.com/triarch-io/triarch/pkg/tlsx"
)

// defaultNodes are the certificates of the docker-compose cluster (which covers `triarch
// dev`'s too) and of one operator.
var defaultNodes = []string{"arbiter/1", "arbiter/2", "arbiter/3", "channelctl/101", "channelctl/102",
	"replica/1", "replica/2", "replica/3", "gateway/1", "admin/1"}

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create the TLS certificates of a cluster",
	}
	cmd.AddCommand(newCertsInitCmd())
	return cmd
}

func newCertsInitCmd() *cobra.Command {
	var (
		dir   string
		nodes []string
		hosts []string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a CA (unless --dir holds one) and a certificate and key per node in --dir",
		Long: `init writes into --dir the cluster's CA (ca.crt, ca.key: ECDSA P-256, valid 10 years),
unless --dir already holds one, and for every --nodes entry role/node-id a certificate and key
(<role>-<node-id>.crt and .key, valid 1 year) naming spiffe://triarch/<role>/<node-id>, signed
by the CA. Roles: arbiter, channelctl, replica, gateway, admin (an operator's tools).

Run it again with the same --dir to add nodes or to renew their certificates: running
services read their files again when they change. Keep ca.key off the nodes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ids, err := parseNodes(nodes)
			if err != nil {
				return err
			}
			written, err := tlsx.Issue(tlsx.IssueOptions{Dir: dir, IDs: ids, Hosts: hosts})
			for _, p := range written {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			if err != nil {
				return fmt.Errorf("certs init: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./triarch-certs", "directory of the CA and the certificates")
	cmd.Flags().StringSliceVar(&nodes, "nodes", defaultNodes, "comma-separated role/node-id of the certificates to issue")
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "extra DNS names or IPs every certificate is valid for (clients that check host names); "+
		"localhost and loopback always are")
	return cmd
}

// parseNodes reads role/node-id entries.
func parseNodes(entries []string) ([]identity.ID, error) {
	ids := make([]identity.ID, 0, len(entries))
	seen := map[identity.ID]bool{}
	for _, e := range entries {
		role, node, ok := strings.Cut(strings.TrimSpace(e), "/")
		n, err := strconv.ParseUint(node, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("--nodes %q: want role/node-id, e.g. replica/2", e)
		}
		id := identity.ID{Role: identity.Role(role), Node: n}
		if err := id.Validate(); err != nil {
			return nil, fmt.Errorf("--nodes %q: %w", e, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("--nodes: %s given twice", e)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids, nil
}
