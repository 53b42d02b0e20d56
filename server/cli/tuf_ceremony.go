package cli

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/firmware/publish"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/tufstage"
	"github.com/spf13/cobra"
)

type tufStatusOptions struct {
	clientOptions
	outputOptions
}

func tufStatusCmd(g *globalOptions) *cobra.Command {
	o := &tufStatusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every role: version, signers, threshold, and when it expires",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.clientOptions.Validate(), o.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.TUFStatus
			if err := getJSON(cmd.Context(), o.clientOptions, "/v1/tuf/status", &st); err != nil {
				return err
			}
			now := time.Now()
			var rows [][]string
			for _, r := range st.Roles {
				left := r.Expires.Sub(now).Round(time.Hour)
				warn := ""
				if left < 7*24*time.Hour {
					warn = "  <- re-sign soon"
				}
				if r.Online {
					warn = " (online: the server re-signs)"
				}
				ids := make([]string, len(r.KeyIDs))
				for i, id := range r.KeyIDs {
					ids[i] = tufstage.ShortID(id)
				}
				rows = append(rows, []string{r.Role, strconv.FormatInt(r.Version, 10), r.Expires.Format(time.RFC3339) + warn,
					fmt.Sprintf("%d of %d", r.Threshold, len(r.KeyIDs)), strings.Join(ids, ","), strings.Join(r.Paths, ","), strconv.Itoa(r.Targets)})
			}
			for _, rv := range st.Revocations {
				rows = append(rows, []string{"revoked", "", rv.Time.Format(time.RFC3339), "", rv.Actor, rv.Target, rv.Reason})
			}
			return o.print(g.stdout, st, []string{"ROLE", "VERSION", "EXPIRES", "THRESHOLD", "KEYS", "PATHS", "TARGETS"}, rows)
		},
	}
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	return cmd
}

func firstUsageError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return &ExitCodeError{Code: ExitUsage, Err: err}
		}
	}
	return nil
}

// fetchCurrent reads a role's current metadata from the server's public
// repository, by the version the status reports.
func fetchCurrent(ctx context.Context, c clientOptions, role string) ([]byte, error) {
	var st api.TUFStatus
	if err := getJSON(ctx, c, "/v1/tuf/status", &st); err != nil {
		return nil, err
	}
	for _, r := range st.Roles {
		if r.Role != role {
			continue
		}
		u := strings.TrimSuffix(c.Server, "/") + "/tuf/metadata/" + strconv.FormatInt(r.Version, 10) + "." + role + ".json"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		hc, err := c.httpClient(30 * time.Second)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching %s: %s", u, resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, tufstage.MaxFileBytes+1))
		if err != nil {
			return nil, err
		}
		if len(b) > tufstage.MaxFileBytes {
			return nil, fmt.Errorf("%s exceeds %d bytes", u, tufstage.MaxFileBytes)
		}
		return b, nil
	}
	return nil, fmt.Errorf("the repository has no role %q", role)
}

type tufStageOptions struct {
	clientOptions
	OutDir     string
	Expires    time.Duration
	AddKeys    []string // ROLE=PUBKEY
	RemoveKeys []string // ROLE=KEYID
	Thresholds []string // ROLE=N
	// targets
	Delegate       string
	Paths          []string
	DelegationKeys []string
	DelegationK    int
	Undelegate     []string
	New            bool
}

func splitPairs(flag string, vals []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" || val == "" {
			return nil, fmt.Errorf("--%s %q: want ROLE=VALUE", flag, v)
		}
		out[k] = append(out[k], val)
	}
	return out, nil
}

func loadPublics(paths []string) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, p := range paths {
		pub, err := keys.LoadPublic(p)
		if err != nil {
			return nil, err
		}
		out = append(out, pub)
	}
	return out, nil
}

func tufStageCmd(g *globalOptions) *cobra.Command {
	o := &tufStageOptions{}
	cmd := &cobra.Command{
		Use:   "stage root|targets|ROLE",
		Short: "Write the next version of a role's metadata, with edits, unsigned, for offline signing",
		Long: `Stage the next version of a role's metadata into --out-dir as <version>.<role>.json.

  root:    --add-key ROLE=KEY.pub, --remove-key ROLE=KEYID, --threshold ROLE=N, --expires
  targets: --delegate NAME --paths P --delegation-key KEY.pub --delegation-threshold N,
           --undelegate NAME, --expires
  ROLE:    a delegated publisher role: --expires (re-sign to extend), or --new for its first version

Then each key holder runs 'dialtone tuf sign', and 'dialtone tuf push' sends the files.`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.clientOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			role := args[0]
			now := time.Now()
			var path string
			switch role {
			case "root":
				cur, err := fetchCurrent(cmd.Context(), o.clientOptions, role)
				if err != nil {
					return err
				}
				e := tufstage.RootEdit{AddKeys: map[string][]crypto.PublicKey{}, RemoveKeys: map[string][]string{}, Thresholds: map[string]int{}, Expires: o.Expires}
				add, err := splitPairs("add-key", o.AddKeys)
				if err != nil {
					return &ExitCodeError{Code: ExitUsage, Err: err}
				}
				for r, files := range add {
					if e.AddKeys[r], err = loadPublics(files); err != nil {
						return err
					}
				}
				if e.RemoveKeys, err = splitPairs("remove-key", o.RemoveKeys); err != nil {
					return &ExitCodeError{Code: ExitUsage, Err: err}
				}
				th, err := splitPairs("threshold", o.Thresholds)
				if err != nil {
					return &ExitCodeError{Code: ExitUsage, Err: err}
				}
				for r, v := range th {
					n, err := strconv.Atoi(v[len(v)-1])
					if err != nil {
						return &ExitCodeError{Code: ExitUsage, Err: fmt.Errorf("--threshold %s=%s: not a number", r, v[len(v)-1])}
					}
					e.Thresholds[r] = n
				}
				m, err := tufstage.StageRoot(cur, e, now)
				if err != nil {
					return err
				}
				if path, err = tufstage.Write(o.OutDir, role, m); err != nil {
					return err
				}
			case "targets":
				cur, err := fetchCurrent(cmd.Context(), o.clientOptions, role)
				if err != nil {
					return err
				}
				e := tufstage.TargetsEdit{Remove: o.Undelegate, Expires: o.Expires}
				if o.Delegate != "" {
					pubs, err := loadPublics(o.DelegationKeys)
					if err != nil {
						return err
					}
					e.Set = append(e.Set, tufstage.DelegationEdit{Name: o.Delegate, Paths: o.Paths, Keys: pubs, Threshold: o.DelegationK})
				}
				m, err := tufstage.StageTargets(cur, e, now)
				if err != nil {
					return err
				}
				if path, err = tufstage.Write(o.OutDir, role, m); err != nil {
					return err
				}
			default:
				var cur []byte
				if !o.New {
					var err error
					if cur, err = fetchCurrent(cmd.Context(), o.clientOptions, role); err != nil {
						return err
					}
				}
				exp := o.Expires
				if exp == 0 {
					exp = 30 * 24 * time.Hour
				}
				m, err := tufstage.StageRole(cur, exp, now)
				if err != nil {
					return err
				}
				if path, err = tufstage.Write(o.OutDir, role, m); err != nil {
					return err
				}
			}
			fmt.Fprintf(g.stdout, "staged %s: sign it with 'dialtone tuf sign --key KEY %s' by each key holder, then push it\n", path, path)
			return nil
		},
	}
	o.clientOptions.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.OutDir, "out-dir", "staged", "folder for the staged file")
	f.DurationVar(&o.Expires, "expires", 0, "new lifetime from now (default: keep the current expiry; 720h for a new role)")
	f.StringArrayVar(&o.AddKeys, "add-key", nil, "root: ROLE=PUBKEY.pem to trust for a top-level role (repeatable)")
	f.StringArrayVar(&o.RemoveKeys, "remove-key", nil, "root: ROLE=KEYID (or a unique prefix) to drop (repeatable)")
	f.StringArrayVar(&o.Thresholds, "threshold", nil, "root: ROLE=N signatures required")
	f.StringVar(&o.Delegate, "delegate", "", "targets: name of a publisher role to add or replace")
	f.StringSliceVar(&o.Paths, "paths", nil, "targets: path patterns delegated, e.g. firmware/dt100/*")
	f.StringSliceVar(&o.DelegationKeys, "delegation-key", nil, "targets: publisher public keys of the role")
	f.IntVar(&o.DelegationK, "delegation-threshold", 1, "targets: signatures the role needs")
	f.StringSliceVar(&o.Undelegate, "undelegate", nil, "targets: publisher roles to remove")
	f.BoolVar(&o.New, "new", false, "ROLE: stage the first, empty version of a new publisher role")
	return cmd
}

type tufSignOptions struct {
	outputOptions
	Key string
}

func tufSignCmd(g *globalOptions) *cobra.Command {
	o := &tufSignOptions{}
	cmd := &cobra.Command{
		Use:   "sign --key KEY FILE...",
		Short: "Add a signature to staged metadata, offline; shows what is signed",
		Args:  cobra.MinimumNArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if o.Key == "" {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("--key is required")}
			}
			return firstUsageError(o.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := keys.LoadSigner(cmd.Context(), o.Key)
			if err != nil {
				return err
			}
			var out []*tufstage.Summary
			var rows [][]string
			for _, p := range args {
				sum, err := tufstage.Sign(p, s)
				if err != nil {
					return err
				}
				out = append(out, sum)
				rows = append(rows, []string{p, sum.Role, strconv.FormatInt(sum.Version, 10), sum.Expires.Format(time.RFC3339),
					strings.Join(sum.Signatures, ","), strings.Join(sum.Details, "; ")})
			}
			return o.print(g.stdout, out, []string{"FILE", "ROLE", "VERSION", "EXPIRES", "SIGNED BY", "CONTENT"}, rows)
		},
	}
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Key, "key", "", "private key URI of the signer")
	return cmd
}

type tufPushOptions struct {
	clientOptions
	outputOptions
	Reason string
}

func tufPushCmd(g *globalOptions) *cobra.Command {
	o := &tufPushOptions{}
	cmd := &cobra.Command{
		Use:   "push FILE...",
		Short: "Send signed metadata (<version>.<role>.json files) to the server; all land together or none",
		Args:  cobra.MinimumNArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.clientOptions.Validate(), o.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			files := map[string][]byte{}
			for _, p := range args {
				_, role, err := tufstage.ParseName(p)
				if err != nil {
					return &ExitCodeError{Code: ExitUsage, Err: err}
				}
				b, err := readBounded(p, tufstage.MaxFileBytes)
				if err != nil {
					return err
				}
				files[role] = b
			}
			hc, err := o.httpClient(time.Minute)
			if err != nil {
				return err
			}
			res, err := publish.Push(cmd.Context(), o.Server, o.Token, hc, o.Reason, files)
			if err != nil {
				return err
			}
			var rows [][]string
			for r, v := range res.Roles {
				rows = append(rows, []string{r, strconv.FormatInt(v, 10), strconv.FormatInt(res.Snapshot, 10)})
			}
			return o.print(g.stdout, res, []string{"ROLE", "VERSION", "SNAPSHOT"}, rows)
		},
	}
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Reason, "reason", "", "why targets are removed (required when any are)")
	return cmd
}
