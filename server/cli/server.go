package cli

import (
	"fmt"
	"os/signal"
	"syscall"

	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/spf13/cobra"
)

type serverOptions struct {
	DataDir string
	HTTP    string
	MQTT    string
	Dev     bool
	Targets string
	Store   string
}

func (o *serverOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.DataDir, "data-dir", "dialtone-data", "data directory: keys, TUF repository, database")
	cmd.Flags().StringVar(&o.HTTP, "http", "127.0.0.1:7080", "HTTP listen address (port 0 picks a free port; see DATA/server.json)")
	cmd.Flags().StringVar(&o.MQTT, "mqtt", "127.0.0.1:7883", "embedded MQTT broker listen address (port 0 picks a free port)")
	cmd.Flags().StringVar(&o.Targets, "targets-bucket", "", "where target files (bundles, signatures) are stored and served from: a gocloud.dev blob URL, e.g. s3://BUCKET?region=eu-west-1 or, for an S3-compatible server, s3://BUCKET?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1&disable_https=true (credentials from the AWS_* environment); empty keeps them in DATA/tuf/targets")
	cmd.Flags().StringVar(&o.Store, "store", "", "fleet store: a PostgreSQL DSN (postgres://USER@HOST:5432/DB?sslmode=…); empty keeps SQLite in the data directory")
	cmd.Flags().BoolVar(&o.Dev, "dev", false, "development mode: generate all keys on first start and let devices in by name. NEVER in production")
}

const devBanner = `
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! DEVELOPMENT MODE. NOT FOR PRODUCTION.
!! Every TUF key, the offline root, targets and publisher keys included,
!! is generated into %s/keys and lives on this server.
!! Devices join the broker by name alone.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
`

func serverCmd(g *globalOptions) *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the update, attestation and fleet server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.Dev {
				fmt.Fprintf(g.stderr, devBanner, o.DataDir)
			}
			return daemon.Run(ctx, daemon.Options{
				DataDir: o.DataDir, HTTPAddr: o.HTTP, MQTTAddr: o.MQTT, Dev: o.Dev, TargetsBucket: o.Targets, Store: o.Store, Logger: g.logger(),
			})
		},
	}
	o.AddFlags(cmd)
	return cmd
}
