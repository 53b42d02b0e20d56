package cli

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/spf13/cobra"
)

type alertsListOptions struct {
	clientOptions
	outputOptions
	Since  string
	Kind   string
	Device string
	Tenant string
	Limit  int

	since time.Time // Since, resolved by Validate
}

func (o *alertsListOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Since, "since", "", "only alerts since this time: a duration back from now (e.g. 1h, 30m) or an RFC 3339 time")
	cmd.Flags().StringVar(&o.Kind, "kind", "", "only alerts of this kind (acl-denied, malformed-payload, device-mismatch, connection-failures, queue-overflow, agent-security, update-refused)")
	cmd.Flags().StringVar(&o.Device, "device", "", "only alerts about this device")
	cmd.Flags().StringVar(&o.Tenant, "tenant", "", "only alerts of this tenant")
	cmd.Flags().IntVar(&o.Limit, "limit", api.DefaultAlertLimit, fmt.Sprintf("at most this many alerts, newest first (1 to %d)", api.MaxAlertLimit))
}

// Validate checks the flags and resolves --since against now.
func (o *alertsListOptions) Validate(now time.Time) error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if o.Limit < 1 || o.Limit > api.MaxAlertLimit {
		return fmt.Errorf("--limit must be between 1 and %d", api.MaxAlertLimit)
	}
	if o.Since == "" {
		return nil
	}
	if d, err := time.ParseDuration(o.Since); err == nil {
		if d < 0 {
			return fmt.Errorf("--since %s: a duration back from now must be positive", o.Since)
		}
		o.since = now.Add(-d)
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, o.Since)
	if err != nil {
		return fmt.Errorf("--since %q: want a duration (1h) or an RFC 3339 time (2026-11-25T10:00:00Z)", o.Since)
	}
	o.since = t
	return nil
}

func alertsCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "alerts", Short: "See security alerts: ACL violations, malformed reports, connection failures, agents' security events"}
	o := &alertsListOptions{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List security alerts, newest first",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.Validate(time.Now()); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			as, err := listAlerts(cmd.Context(), o)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(as))
			for _, a := range as {
				rows = append(rows, []string{a.Time.Local().Format(time.DateTime), a.Severity, a.Kind, a.Source,
					dash(a.Tenant), dash(a.Device), strconv.Itoa(a.Count), tableCell(a.Message, 100)})
			}
			return o.print(g.stdout, as, []string{"TIME", "SEVERITY", "KIND", "SOURCE", "TENANT", "DEVICE", "COUNT", "MESSAGE"}, rows)
		},
	}
	o.AddFlags(list)
	cmd.AddCommand(list)
	return cmd
}

func listAlerts(ctx context.Context, o *alertsListOptions) ([]store.Alert, error) {
	q := url.Values{"limit": {strconv.Itoa(o.Limit)}}
	for k, v := range map[string]string{"kind": o.Kind, "device": o.Device, "tenant": o.Tenant} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !o.since.IsZero() {
		q.Set("since", o.since.UTC().Format(time.RFC3339Nano))
	}
	var out api.AlertList
	if err := getJSON(ctx, o.clientOptions, "/v1/alerts?"+q.Encode(), &out); err != nil {
		return nil, err
	}
	return out.Alerts, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// tableCell keeps a table row on one line: control characters become
// spaces, and the text is cut to n runes.
func tableCell(s string, n int) string {
	r := []rune(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s))
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return string(r)
}
