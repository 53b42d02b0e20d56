package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/attest"
)

// devicesAttestCmds are the attestation subcommands of `dialtone devices`.
func devicesAttestCmds(g *globalOptions) []*cobra.Command {
	return []*cobra.Command{devicesApproveCmd(g), devicesAllowCmd(g), devicesEnrollTokenCmd(g), devicesGrantsCmd(g),
		devicesAttestCmd(g), devicesAttestationsCmd(g), devicesEvidenceCmd(g)}
}

type grantOptions struct {
	clientOptions
	outputOptions
	Tenant string
	Model  string
	TTL    time.Duration
	EK     string
}

func (o *grantOptions) AddFlags(cmd *cobra.Command, ek bool) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Tenant, "tenant", "", "tenant the device enrolls into (required)")
	cmd.Flags().StringVar(&o.Model, "model", "", "model the device must be (empty: any)")
	cmd.Flags().DurationVar(&o.TTL, "ttl", 7*24*time.Hour, "how long the grant can be used")
	if ek {
		cmd.Flags().StringVar(&o.EK, "ek", "", "the SHA-256 (hex) of the TPM's EK public area, as the refused enrollment's alert or `dialtone-agent tpm ek` shows it (required)")
	}
}

func (o *grantOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if !wire.ValidID(o.Tenant) {
		return errors.New("--tenant is required")
	}
	if o.TTL <= 0 || o.TTL > 90*24*time.Hour {
		return errors.New("--ttl: want between 1s and 90 days")
	}
	return nil
}

func (o *grantOptions) create(ctx context.Context, g *globalOptions, req api.GrantRequest) error {
	req.Tenant, req.Model, req.TTL = o.Tenant, o.Model, int64(o.TTL/time.Second)
	body, _ := json.Marshal(req)
	var out api.Grant
	if err := sendJSON(ctx, o.clientOptions, http.MethodPost, "/v1/enroll-grants", body, http.StatusCreated, &out); err != nil {
		return err
	}
	rows := [][]string{{out.ID, out.Kind, out.Tenant, out.Device, out.Expires.Local().Format(time.DateTime), out.Token}}
	return o.print(g.stdout, out, []string{"ID", "KIND", "TENANT", "DEVICE", "EXPIRES", "TOKEN"}, rows)
}

func devicesApproveCmd(g *globalOptions) *cobra.Command {
	o := &grantOptions{}
	cmd := &cobra.Command{
		Use:   "approve DEVICE --ek SHA256 --tenant TENANT",
		Short: "Approve a TPM without an EK certificate: the device may enroll once with that TPM",
		Long: `Approve a TPM that has no EK certificate from a known manufacturer CA. The
device may then enroll once, into the tenant, with exactly that TPM: the
approval names the SHA-256 of its EK public area (the refused enrollment's
alert and the agent's log show it).`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return firstUsageError(err)
			}
			if b, err := hex.DecodeString(o.EK); err != nil || len(b) != 32 {
				return firstUsageError(errors.New("--ek: want the EK's SHA-256 in hex (64 digits)"))
			}
			if !wire.ValidID(args[0]) {
				return firstUsageError(fmt.Errorf("bad device id %q", args[0]))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.create(cmd.Context(), g, api.GrantRequest{Kind: "ek", Device: args[0], EK: o.EK})
		},
	}
	o.AddFlags(cmd, true)
	return cmd
}

func devicesAllowCmd(g *globalOptions) *cobra.Command {
	o := &grantOptions{}
	cmd := &cobra.Command{
		Use:   "allow DEVICE --tenant TENANT",
		Short: "Put a device's serial on the enrollment allowlist: it may enroll once, with a TPM whose EK certificate is from a known manufacturer",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return firstUsageError(err)
			}
			if !wire.ValidID(args[0]) {
				return firstUsageError(fmt.Errorf("bad device id %q", args[0]))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.create(cmd.Context(), g, api.GrantRequest{Kind: "serial", Device: args[0]})
		},
	}
	o.AddFlags(cmd, false)
	return cmd
}

func devicesEnrollTokenCmd(g *globalOptions) *cobra.Command {
	o := &grantOptions{}
	var device string
	cmd := &cobra.Command{
		Use:   "enroll-token --tenant TENANT [--device ID]",
		Short: "Make a one-time enrollment token (shown once) for the agent's --enroll-token",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return firstUsageError(err)
			}
			if device != "" && !wire.ValidID(device) {
				return firstUsageError(fmt.Errorf("bad device id %q", device))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.create(cmd.Context(), g, api.GrantRequest{Kind: "token", Device: device})
		},
	}
	o.AddFlags(cmd, false)
	cmd.Flags().StringVar(&device, "device", "", "the one device ID the token enrolls (empty: any)")
	return cmd
}

func devicesGrantsCmd(g *globalOptions) *cobra.Command {
	o := &struct {
		clientOptions
		outputOptions
	}{}
	cmd := &cobra.Command{
		Use:   "grants",
		Short: "List enrollment grants (tokens, allowlisted serials, approved EKs) and who used them",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.clientOptions.Validate(); err != nil {
				return firstUsageError(err)
			}
			return firstUsageError(o.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Grants []api.Grant `json:"grants"`
			}
			if err := getJSON(cmd.Context(), o.clientOptions, "/v1/enroll-grants", &out); err != nil {
				return err
			}
			rows := make([][]string, 0, len(out.Grants))
			for _, g := range out.Grants {
				used := ""
				if !g.Used.IsZero() {
					used = g.Used.Local().Format(time.DateTime) + " by " + g.UsedBy
				}
				rows = append(rows, []string{g.ID, g.Kind, g.Tenant, g.Device, g.Expires.Local().Format(time.DateTime), used})
			}
			return o.print(g.stdout, out, []string{"ID", "KIND", "TENANT", "DEVICE", "EXPIRES", "USED"}, rows)
		},
	}
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	return cmd
}

func historyRows(h []api.AttestationEntry) [][]string {
	rows := make([][]string, 0, len(h))
	for _, e := range h {
		rows = append(rows, []string{e.Time.Local().Format(time.DateTime), e.Outcome, e.Reason, e.Booted, e.Detail})
	}
	return rows
}

var historyHeader = []string{"TIME", "OUTCOME", "REASON", "BOOTED", "DETAIL"}

func devicesAttestationsCmd(g *globalOptions) *cobra.Command {
	o := &deviceArgOptions{}
	var limit int
	cmd := &cobra.Command{
		Use:               "attestations DEVICE",
		Short:             "A device's attestation verdicts, newest first",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDevices(&o.clientOptions),
		PreRunE:           func(_ *cobra.Command, args []string) error { return firstUsageError(o.Validate(args)) },
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Attestations []api.AttestationEntry `json:"attestations"`
			}
			if err := getJSON(cmd.Context(), o.clientOptions, "/v1/devices/"+url.PathEscape(args[0])+"/attestations?limit="+strconv.Itoa(limit), &out); err != nil {
				return err
			}
			return o.print(g.stdout, out, historyHeader, historyRows(out.Attestations))
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().IntVar(&limit, "limit", 20, "at most this many verdicts (1 to 1000)")
	return cmd
}

func devicesAttestCmd(g *globalOptions) *cobra.Command {
	o := &deviceArgOptions{}
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "attest DEVICE",
		Short: "Ask a device to attest now, and wait for its verdict",
		Long: `Send the device the attest command (over MQTT) and wait up to --wait for a
verdict newer than the command; with --wait 0 it returns once the command is
sent.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDevices(&o.clientOptions),
		PreRunE:           func(_ *cobra.Command, args []string) error { return firstUsageError(o.Validate(args)) },
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			body, _ := json.Marshal(api.CommandRequest{Name: wire.CmdAttest})
			var sent api.CommandSent
			path := "/v1/devices/" + url.PathEscape(args[0])
			if err := sendJSON(ctx, o.clientOptions, http.MethodPost, path+"/cmd", body, http.StatusAccepted, &sent); err != nil {
				return err
			}
			if wait <= 0 {
				return o.print(g.stdout, sent, []string{"DEVICE", "COMMAND", "ID"}, [][]string{{sent.Device, sent.Name, sent.ID}})
			}
			ctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			for {
				var out struct {
					Attestations []api.AttestationEntry `json:"attestations"`
				}
				if err := getJSON(ctx, o.clientOptions, path+"/attestations?limit=1", &out); err != nil {
					return err
				}
				// The server stamps both; a second of slack for clock steps.
				if len(out.Attestations) > 0 && !out.Attestations[0].Time.Before(sent.Time.Add(-time.Second)) {
					return o.print(g.stdout, out.Attestations[0], historyHeader, historyRows(out.Attestations))
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("no verdict from %s within %s (is it online? dialtone devices show %s)", args[0], wait, args[0])
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the verdict (0: do not wait)")
	return cmd
}

func devicesEvidenceCmd(g *globalOptions) *cobra.Command {
	o := &deviceArgOptions{}
	var out string
	cmd := &cobra.Command{
		Use:   "evidence DEVICE --out DIR",
		Short: "Export a device's last quote for tpm2_checkquote",
		Long: `Write the device's last attestation evidence into DIR in the files
tpm2_checkquote takes: ak.pem, quote.msg, quote.sig, pcrs.bin and
nonce.hex (the qualifying data), plus eventlog.cel and evidence.json. Check
it independently of Dialtone with:

  tpm2_checkquote -u DIR/ak.pem -m DIR/quote.msg -s DIR/quote.sig \
    -f DIR/pcrs.bin -g sha256 -q "$(cat DIR/nonce.hex)"`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDevices(&o.clientOptions),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if out == "" {
				return firstUsageError(errors.New("--out DIR is required"))
			}
			return firstUsageError(o.Validate(args))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var ev api.Evidence
			if err := getJSON(cmd.Context(), o.clientOptions, "/v1/devices/"+url.PathEscape(args[0])+"/evidence", &ev); err != nil {
				return err
			}
			if len(ev.PCRValue) != 32 {
				return fmt.Errorf("the last evidence of %s has no PCR value (verdict %s: %s)", args[0], ev.Outcome, ev.Reason)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			var pcr [32]byte
			copy(pcr[:], ev.PCRValue)
			if err := attest.WriteEvidence(out, ev.AKPublic, quote.Quote{Attest: ev.Quote, Signature: ev.Signature}, ev.Nonce, map[uint][32]byte{uint(ev.PCR): pcr}); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(out, "eventlog.cel"), ev.Log, 0o644); err != nil {
				return err
			}
			b, _ := json.MarshalIndent(ev, "", "  ")
			if err := os.WriteFile(filepath.Join(out, "evidence.json"), b, 0o644); err != nil {
				return err
			}
			return o.print(g.stdout, ev, []string{"DEVICE", "TIME", "OUTCOME", "PCR", "DIR"},
				[][]string{{ev.Device, ev.Time.Local().Format(time.DateTime), ev.Outcome, strconv.Itoa(ev.PCR), out}})
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().StringVar(&out, "out", "", "directory to write the evidence files into")
	return cmd
}
