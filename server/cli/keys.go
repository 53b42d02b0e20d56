package cli

import (
	"fmt"
	"strings"

	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/tufstage"
	"github.com/spf13/cobra"
)

type keysGenerateOptions struct {
	Out string
}

func (o *keysGenerateOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.Out, "out", "", "new key: a file path (public half to PATH.pub; encrypted when DIALTONE_KEY_PASSPHRASE is set) or a pkcs11: URI (the key never leaves the token)")
	_ = cmd.MarkFlagRequired("out")
}

func keysCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Generate and manage signing keys"}
	o := &keysGenerateOptions{}
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Generate an ECDSA P-256 key pair in a file or a PKCS#11 token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := keys.GenerateURI(cmd.Context(), o.Out)
			if err != nil {
				return err
			}
			id, err := tufstage.KeyID(pub)
			if err != nil {
				return err
			}
			if strings.HasPrefix(o.Out, "pkcs11:") {
				pem, err := keys.MarshalPublicPEM(pub)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "generated %s (TUF key id %s); public key:\n%s", keys.RedactURI(o.Out), id, pem)
				return nil
			}
			fmt.Fprintf(g.stdout, "wrote %s and %s.pub (TUF key id %s)\n", o.Out, o.Out, id)
			return nil
		},
	}
	o.AddFlags(gen)
	cmd.AddCommand(gen)
	return cmd
}
