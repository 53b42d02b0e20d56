package cli

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/firmware/publish"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func firmwareCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "firmware", Short: "Build, sign, verify and publish firmware bundles (what CI runs)"}
	cmd.AddCommand(firmwareBuildCmd(g), firmwareSignCmd(g), firmwareVerifyCmd(g), firmwarePublishCmd(g), firmwareRevokeCmd(g), firmwarePromoteCmd(g))
	return cmd
}

type firmwareBuildOptions struct {
	Model    string
	Version  string
	Hardware []string
	Payloads []string
	Out      string
}

func (o *firmwareBuildOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.Model, "model", "", "phone model the bundle is for")
	cmd.Flags().StringVar(&o.Version, "version", "", "semantic version, e.g. 1.4.0")
	cmd.Flags().StringSliceVar(&o.Hardware, "hardware", nil, "hardware revisions the bundle runs on (repeatable)")
	cmd.Flags().StringArrayVar(&o.Payloads, "payload", nil, "NAME=FILE payload to include (repeatable, in order)")
	cmd.Flags().StringVarP(&o.Out, "out", "o", "", "bundle file to write")
	for _, f := range []string{"model", "version", "hardware", "payload", "out"} {
		_ = cmd.MarkFlagRequired(f)
	}
}

func (o *firmwareBuildOptions) payloadFiles() ([]firmware.PayloadFile, error) {
	var out []firmware.PayloadFile
	for _, p := range o.Payloads {
		name, file, ok := strings.Cut(p, "=")
		if !ok || name == "" || file == "" {
			return nil, fmt.Errorf("--payload %q: want NAME=FILE", p)
		}
		out = append(out, firmware.PayloadFile{Name: name, Path: file})
	}
	return out, nil
}

func firmwareBuildCmd(g *globalOptions) *cobra.Command {
	o := &firmwareBuildOptions{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build a firmware bundle from payload files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pf, err := o.payloadFiles()
			if err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			man, err := firmware.BuildFile(cmd.Context(), firmware.BuildOptions{
				Model: o.Model, Version: o.Version, Hardware: o.Hardware, Payloads: pf,
			}, o.Out)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "built %s: %s %s for %s, %d payloads\n", o.Out, man.Model, man.Version, strings.Join(man.Hardware, ","), len(man.Payloads))
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}

type firmwareSignOptions struct {
	Key string
	Out string
}

func firmwareSignCmd(g *globalOptions) *cobra.Command {
	o := &firmwareSignOptions{}
	cmd := &cobra.Command{
		Use:   "sign BUNDLE",
		Short: "Sign a bundle (writes BUNDLE.sig, the format cosign sign-blob writes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			signer, err := keys.LoadSigner(cmd.Context(), o.Key)
			if err != nil {
				return err
			}
			sig, err := firmware.SignFile(cmd.Context(), signer, args[0])
			if err != nil {
				return err
			}
			out := o.Out
			if out == "" {
				out = args[0] + ".sig"
			}
			if err := atomicfile.WriteFile(out, sig, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Key, "key", "", "private key URI (file path or file://)")
	cmd.Flags().StringVar(&o.Out, "output-signature", "", "signature file (default BUNDLE.sig)")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

type firmwareVerifyOptions struct {
	outputOptions
	Key       string
	Signature string
}

func firmwareVerifyCmd(g *globalOptions) *cobra.Command {
	o := &firmwareVerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify BUNDLE",
		Short: "Check a bundle's publisher signature and its manifest and payload digests",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.outputOptions.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := keys.LoadPublic(o.Key)
			if err != nil {
				return err
			}
			sigPath := o.Signature
			if sigPath == "" {
				sigPath = args[0] + ".sig"
			}
			sig, err := readBounded(sigPath, 4096)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			// One pass: the bundle's SHA-256, which the signature covers, is
			// computed while its structure and payload digests are checked.
			h := sha256.New()
			man, verr := firmware.Verify(cmd.Context(), io.TeeReader(f, h), firmware.DefaultLimits())
			if verr == nil {
				if _, err := io.Copy(h, f); err != nil {
					return err
				}
			} else if _, err := f.Seek(0, io.SeekStart); err == nil {
				h.Reset()
				if _, err := io.Copy(h, f); err != nil {
					return err
				}
			}
			if err := firmware.VerifySignatureDigest(pub, h.Sum(nil), sig); err != nil {
				return &ExitCodeError{Code: ExitRejected, Err: err}
			}
			if verr != nil {
				return &ExitCodeError{Code: ExitRejected, Err: verr}
			}
			rows := [][]string{}
			for _, p := range man.Payloads {
				rows = append(rows, []string{man.Model, man.Version, strings.Join(man.Hardware, ","), p.Name, fmt.Sprint(p.Size), p.SHA256})
			}
			if o.Format == "table" {
				fmt.Fprintf(g.stdout, "verified: signature good, %d payloads match the manifest\n", len(man.Payloads))
			}
			return o.print(g.stdout, man, []string{"MODEL", "VERSION", "HARDWARE", "PAYLOAD", "SIZE", "SHA256"}, rows)
		},
	}
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Key, "key", "", "publisher public key (PEM)")
	cmd.Flags().StringVar(&o.Signature, "signature", "", "signature file (default BUNDLE.sig)")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

type firmwarePublishOptions struct {
	clientOptions
	outputOptions
	Key        string
	Signature  string
	Channel    string
	MinVersion string
	Expires    time.Duration
	NoProgress bool
}

func firmwarePublishCmd(g *globalOptions) *cobra.Command {
	o := &firmwarePublishOptions{}
	cmd := &cobra.Command{
		Use:   "publish BUNDLE",
		Short: "Sign the publisher's TUF metadata for a bundle and upload both to the server",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			for _, err := range []error{o.clientOptions.Validate(), o.outputOptions.Validate()} {
				if err != nil {
					return &ExitCodeError{Code: ExitUsage, Err: err}
				}
			}
			if o.Key == "" {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("--key (or DIALTONE_KEY): the publisher key is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			signer, err := keys.LoadSigner(cmd.Context(), o.Key)
			if err != nil {
				return err
			}
			hc, err := o.httpClient(0) // uploads take as long as they take
			if err != nil {
				return err
			}
			opts := publish.Options{
				Server: o.Server, Token: o.Token, HTTPClient: hc, BundlePath: args[0], SignaturePath: o.Signature,
				Key: signer, Channel: o.Channel, MinVersion: o.MinVersion, Expires: o.Expires, Logger: g.logger(),
			}
			if f, ok := g.stderr.(*os.File); ok && !o.NoProgress && isatty.IsTerminal(f.Fd()) {
				opts.Progress = func(total int64, r io.Reader) io.Reader {
					bar := progressbar.NewOptions64(total, progressbar.OptionSetWriter(g.stderr), progressbar.OptionShowBytes(true),
						progressbar.OptionSetDescription("uploading"), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
					pr := progressbar.NewReader(r, bar)
					return &pr
				}
			}
			res, err := publish.Run(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return o.print(g.stdout, res, []string{"TARGET", "VERSION", "CHANNEL", "LENGTH", "SHA256", "SNAPSHOT"},
				[][]string{{res.Target, res.Version, res.Channel, fmt.Sprint(res.Length), res.SHA256, fmt.Sprint(res.Snapshot)}})
		},
	}
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Key, "key", "", "publisher private key URI: signs the role's TUF metadata (and the bundle when BUNDLE.sig is missing)")
	cmd.Flags().StringVar(&o.Signature, "signature", "", "bundle signature (default BUNDLE.sig)")
	cmd.Flags().StringVar(&o.Channel, "channel", "stable", "release channel")
	cmd.Flags().StringVar(&o.MinVersion, "min-version", "", "lowest version a device may update from")
	cmd.Flags().DurationVar(&o.Expires, "expires", 30*24*time.Hour, "lifetime of the signed metadata")
	cmd.Flags().BoolVar(&o.NoProgress, "no-progress", false, "no progress bar")
	return cmd
}

type firmwareChangeOptions struct {
	clientOptions
	outputOptions
	Key     string
	Reason  string
	Channel string
	Expires time.Duration
}

func (o *firmwareChangeOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Key, "key", "", "publisher private key URI: re-signs the role's TUF metadata")
	cmd.Flags().DurationVar(&o.Expires, "expires", 30*24*time.Hour, "lifetime of the re-signed metadata")
}

func (o *firmwareChangeOptions) run(cmd *cobra.Command, g *globalOptions, do func(context.Context, publish.Options) (*publish.PushResult, error)) error {
	signer, err := keys.LoadSigner(cmd.Context(), o.Key)
	if err != nil {
		return err
	}
	hc, err := o.httpClient(time.Minute)
	if err != nil {
		return err
	}
	res, err := do(cmd.Context(), publish.Options{Server: o.Server, Token: o.Token, HTTPClient: hc, Key: signer, Expires: o.Expires, Logger: g.logger()})
	if err != nil {
		return err
	}
	rows := [][]string{}
	for r, v := range res.Roles {
		rows = append(rows, []string{r, fmt.Sprint(v), strings.Join(res.Revoked, ","), fmt.Sprint(res.Snapshot)})
	}
	return o.print(g.stdout, res, []string{"ROLE", "VERSION", "REVOKED", "SNAPSHOT"}, rows)
}

func firmwareRevokeCmd(g *globalOptions) *cobra.Command {
	o := &firmwareChangeOptions{}
	cmd := &cobra.Command{
		Use:   "revoke TARGET",
		Short: "Withdraw a published bundle: updated phones refuse it; the server records why",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if o.Key == "" || o.Reason == "" {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("--key and --reason are required")}
			}
			return firstUsageError(o.clientOptions.Validate(), o.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, g, func(ctx context.Context, po publish.Options) (*publish.PushResult, error) {
				return publish.Revoke(ctx, po, args[0], o.Reason)
			})
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Reason, "reason", "", "why the bundle is withdrawn (recorded by the server)")
	return cmd
}

func firmwarePromoteCmd(g *globalOptions) *cobra.Command {
	o := &firmwareChangeOptions{}
	cmd := &cobra.Command{
		Use:   "promote TARGET",
		Short: "Move a published bundle to another channel (e.g. beta to stable) without uploading it again",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if o.Key == "" || o.Channel == "" {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("--key and --channel are required")}
			}
			return firstUsageError(o.clientOptions.Validate(), o.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, g, func(ctx context.Context, po publish.Options) (*publish.PushResult, error) {
				return publish.Promote(ctx, po, args[0], o.Channel)
			})
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Channel, "channel", "", "channel to move the bundle to")
	return cmd
}
