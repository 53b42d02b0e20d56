package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/spf13/cobra"
)

// devicesSIPPasswordOptions are those of `devices sip-password`. The
// password is read from a file or stdin, never from a flag's value: those
// end up in shell histories and process listings.
type devicesSIPPasswordOptions struct {
	clientOptions
	outputOptions
	Tenant        string
	PasswordFile  string
	PasswordStdin bool
	AuthUser      string
	Delete        bool
}

func (o *devicesSIPPasswordOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Tenant, "tenant", "", "the device's tenant: when given, the server refuses (409) a device of another")
	f.StringVar(&o.PasswordFile, "password-file", "", "file holding the SIP password (one line)")
	f.BoolVar(&o.PasswordStdin, "password-stdin", false, "read the SIP password from stdin (one line)")
	f.StringVar(&o.AuthUser, "auth-user", "", "digest user name, when not the SIP profile's")
	f.BoolVar(&o.Delete, "delete", false, "remove the device's SIP password")
}

func (o *devicesSIPPasswordOptions) Validate(args []string) error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if !wire.ValidID(args[0]) {
		return fmt.Errorf("bad device id %q", args[0])
	}
	if o.Tenant != "" && !wire.ValidID(o.Tenant) {
		return fmt.Errorf("bad --tenant %q", o.Tenant)
	}
	sources := 0
	for _, set := range []bool{o.PasswordFile != "", o.PasswordStdin, o.Delete} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return errors.New("give one of --password-file, --password-stdin or --delete")
	}
	if o.Delete && o.AuthUser != "" {
		return errors.New("--auth-user sets a credential; it does not go with --delete")
	}
	return nil
}

// readPassword reads one line: the password, without its line end.
func readPassword(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, sipsecret.MaxPassword+3))
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 || len(b) > sipsecret.MaxPassword {
		return "", fmt.Errorf("the SIP password is 1 to %d bytes on one line", sipsecret.MaxPassword)
	}
	return string(b), nil
}

func devicesSIPPasswordCmd(g *globalOptions) *cobra.Command {
	o := &devicesSIPPasswordOptions{}
	cmd := &cobra.Command{
		Use:   "sip-password DEVICE [--tenant T] (--password-file FILE | --password-stdin | --delete)",
		Short: "Set or remove a device's SIP password; the server releases it only to the device, while it attests trusted",
		Long: `Set or remove a device's SIP password.

The server keeps it encrypted and gives it only to the device itself, over
mTLS with its attestation-issued certificate, while its attestation is
trusted; the phone seals it to its TPM. It is never shown again, logged or
audited. The password comes from a file or stdin, never from a flag.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDevices(&o.clientOptions),
		PreRunE: func(_ *cobra.Command, args []string) error {
			return firstUsageError(o.Validate(args))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/devices/" + url.PathEscape(args[0]) + "/sip-credential"
			if o.Tenant != "" {
				path += "?" + url.Values{"tenant": {o.Tenant}}.Encode()
			}
			var info api.SIPCredentialInfo
			if o.Delete {
				if err := sendJSON(cmd.Context(), o.clientOptions, http.MethodDelete, path, nil, http.StatusOK, &info); err != nil {
					return err
				}
				return o.print(g.stdout, info, []string{"DEVICE", "TENANT", "SIP PASSWORD"}, [][]string{{info.Device, info.Tenant, "deleted"}})
			}
			var src io.Reader = cmd.InOrStdin()
			if o.PasswordFile != "" {
				f, err := os.Open(o.PasswordFile)
				if err != nil {
					return err
				}
				defer f.Close()
				src = f
			}
			pw, err := readPassword(src)
			if err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			body, err := json.Marshal(api.SIPCredentialRequest{Password: pw, AuthUser: o.AuthUser})
			if err != nil {
				return err
			}
			// The server's own check, here first: a refusal says why
			// without the password crossing the network.
			if _, err := api.DecodeSIPCredentialRequest(bytes.NewReader(body)); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			if err := sendJSON(cmd.Context(), o.clientOptions, http.MethodPut, path, body, http.StatusOK, &info); err != nil {
				return err
			}
			return o.print(g.stdout, info, []string{"DEVICE", "TENANT", "AUTH USER", "SIP PASSWORD", "UPDATED"},
				[][]string{{info.Device, info.Tenant, orDash(info.AuthUser), "set", info.Updated.Local().Format(time.DateTime)}})
		},
	}
	o.AddFlags(cmd)
	return cmd
}
