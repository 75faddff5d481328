package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd(getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:   "triarch",
		Short: "triarch: a replicated message log for instant messaging",
		Long: `triarch runs one raft group per chat channel, with elections ordered from above by
an arbiter cluster and channel controllers instead of the groups' own timers.

Every flag can also be set with an environment variable TRIARCH_<FLAG> (upper case, dashes
as underscores), e.g. TRIARCH_NODE_ID=2. A flag given on the command line wins.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags(), getenv)
		},
	}
	root.AddCommand(
		newDevCmd(),
		newArbiterCmd(),
		newChannelctlCmd(),
		newReplicaCmd(),
		newGatewayCmd(),
		newStatusCmd(),
		newSendCmd(),
		newTailCmd(),
		newBenchCmd(),
		newHealthCmd(),
		newCertsCmd(),
	)
	return root
}

// envName is the environment variable that sets a flag: TRIARCH_<FLAG>.
func envName(flag string) string {
	return "TRIARCH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its environment variable.
func applyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, serr)
		}
	})
	return err
}
