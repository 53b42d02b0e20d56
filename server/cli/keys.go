package cli

import (
	"fmt"

	"github.com/dialtone-dev/dialtone/keys"
	"github.com/spf13/cobra"
)

type keysGenerateOptions struct {
	Out string
}

func (o *keysGenerateOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.Out, "out", "", "path of the new private key; the public key goes to PATH.pub")
	_ = cmd.MarkFlagRequired("out")
}

func keysCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Generate and manage signing keys"}
	o := &keysGenerateOptions{}
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Generate an ECDSA P-256 key pair (PEM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := keys.Generate(o.Out); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s and %s.pub\n", o.Out, o.Out)
			return nil
		},
	}
	o.AddFlags(gen)
	cmd.AddCommand(gen)
	return cmd
}
