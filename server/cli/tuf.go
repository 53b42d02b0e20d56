package cli

import (
	"fmt"

	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
	"github.com/spf13/cobra"
)

type tufInitOptions struct {
	DataDir          string
	RootKeys         []string
	RootThreshold    int
	TargetsKeys      []string
	TargetsThreshold int
	PublisherKeys    []string
	PublisherRole    string
	PublisherPaths   []string
	ConfigKeys       []string
	ConfigRole       string
	ConfigPaths      []string
}

func (o *tufInitOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.DataDir, "data-dir", "dialtone-data", "server data directory to create the repository in")
	cmd.Flags().StringSliceVar(&o.RootKeys, "root-key", nil, "offline root key URI (repeatable)")
	cmd.Flags().IntVar(&o.RootThreshold, "root-threshold", 1, "root signatures required")
	cmd.Flags().StringSliceVar(&o.TargetsKeys, "targets-key", nil, "offline targets key URI (repeatable)")
	cmd.Flags().IntVar(&o.TargetsThreshold, "targets-threshold", 1, "targets signatures required")
	cmd.Flags().StringSliceVar(&o.PublisherKeys, "publisher-key", nil, "publisher (CI) key URI (repeatable)")
	cmd.Flags().StringVar(&o.PublisherRole, "publisher-role", "publisher", "name of the delegated publisher role")
	cmd.Flags().StringSliceVar(&o.PublisherPaths, "publisher-paths", []string{"firmware/*/*"}, "target paths delegated to the publisher role")
	cmd.Flags().StringSliceVar(&o.ConfigKeys, "config-key", nil, "config key URI (repeatable): signs devices' SIP profiles (dialtone config publish)")
	cmd.Flags().StringVar(&o.ConfigRole, "config-role", tufrepo.ConfigRole, "name of the delegated config role")
	cmd.Flags().StringSliceVar(&o.ConfigPaths, "config-paths", tufrepo.ConfigPaths, "target paths delegated to the config role")
	for _, f := range []string{"root-key", "targets-key", "publisher-key", "config-key"} {
		_ = cmd.MarkFlagRequired(f)
	}
}

func tufCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "tuf", Short: "Manage the TUF repository and its keys"}
	o := &tufInitOptions{}
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repository signed by offline root and targets keys; generate the server's online keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := daemon.InitRepository(cmd.Context(), daemon.InitOptions{
				DataDir: o.DataDir, RootKeys: o.RootKeys, RootThreshold: o.RootThreshold,
				TargetsKeys: o.TargetsKeys, TargetsThreshold: o.TargetsThreshold,
				PublisherRole: o.PublisherRole, PublisherPaths: o.PublisherPaths, PublisherKeys: o.PublisherKeys,
				ConfigRole: o.ConfigRole, ConfigPaths: o.ConfigPaths, ConfigKeys: o.ConfigKeys,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "repository created in %s; provision phones with %s/tuf/metadata/1.root.json\n", o.DataDir, o.DataDir)
			return nil
		},
	}
	o.AddFlags(initCmd)
	cmd.AddCommand(initCmd, tufStatusCmd(g), tufStageCmd(g), tufSignCmd(g), tufPushCmd(g))
	return cmd
}
