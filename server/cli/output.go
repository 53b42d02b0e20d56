package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// outputOptions is the -o flag shared by listing commands.
type outputOptions struct {
	Format string
}

func (o *outputOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.Format, "output", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
}

func (o *outputOptions) Validate() error {
	if o.Format != "table" && o.Format != "json" {
		return fmt.Errorf("unknown output format %q (want table or json)", o.Format)
	}
	return nil
}

// print writes v as JSON, or as a table of header and rows.
func (o *outputOptions) print(w io.Writer, v any, header []string, rows [][]string) error {
	if o.Format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, h := range header {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, h)
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		for i, c := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// clientOptions are the flags of every command that talks to a server.
type clientOptions struct {
	Server string
	Token  string
	// CA is a PEM file of CA certificates trusted for the server, on top
	// of the system's roots (a --dev server's DATA/tls/ca.pem).
	CA string
}

func (o *clientOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.Server, "server", "", "server URL (env DIALTONE_SERVER)")
	cmd.Flags().StringVar(&o.Token, "token", "", "API token (env DIALTONE_TOKEN)")
	cmd.Flags().StringVar(&o.CA, "ca", "", "PEM file of the CA that issued the server's certificate, trusted on top of the system's roots (env DIALTONE_CA; a --dev server's is DATA/tls/ca.pem)")
}

func (o *clientOptions) Validate() error {
	o.fromCredentials() // the session of dialtone login, when no token is given
	if o.Server == "" {
		return fmt.Errorf("--server (or DIALTONE_SERVER) is required")
	}
	if o.Token == "" {
		return fmt.Errorf("--token (or DIALTONE_TOKEN) is required, or a session of dialtone login")
	}
	return nil
}
