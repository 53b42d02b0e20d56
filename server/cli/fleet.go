package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
)

func fleetCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "fleet", Short: "The fleet at a glance: firmware compliance, attestation, laggards"}
	cmd.AddCommand(fleetSummaryCmd(g), fleetWatchCmd(g))
	return cmd
}

// fleetOptions are what every fleet view takes.
type fleetOptions struct {
	clientOptions
	Tenant string
}

func (o *fleetOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Tenant, "tenant", "", "only this tenant's devices")
}

func (o *fleetOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if o.Tenant != "" && !wire.ValidID(o.Tenant) {
		return fmt.Errorf("--tenant %q is not a valid name", o.Tenant)
	}
	return nil
}

func (o *fleetOptions) summary(ctx context.Context) (api.FleetSummary, error) {
	path := "/v1/fleet/summary"
	if o.Tenant != "" {
		path += "?" + url.Values{"tenant": {o.Tenant}}.Encode()
	}
	var s api.FleetSummary
	err := getJSON(ctx, o.clientOptions, path, &s)
	return s, err
}

type fleetSummaryOptions struct {
	fleetOptions
	Format string
}

func (o *fleetSummaryOptions) AddFlags(cmd *cobra.Command) {
	o.fleetOptions.AddFlags(cmd)
	cmd.Flags().StringVarP(&o.Format, "output", "o", "table", "output format: table, json or csv")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("table", "json", "csv"))
}

func (o *fleetSummaryOptions) Validate() error {
	if err := o.fleetOptions.Validate(); err != nil {
		return err
	}
	switch o.Format {
	case "table", "json", "csv":
		return nil
	}
	return fmt.Errorf("unknown output format %q (want table, json or csv)", o.Format)
}

var summaryHeader = []string{"TENANT", "MODEL", "VERSION", "UPDATE", "ATTESTATION", "ONLINE", "DEVICES", "TUF BEHIND"}

func summaryRows(s api.FleetSummary, human bool) [][]string {
	rows := make([][]string, 0, len(s.Rows))
	show := func(v string) string { return v }
	online := strconv.FormatBool
	if human {
		show, online = orDash, yesNo
	}
	for _, r := range s.Rows {
		rows = append(rows, []string{r.Tenant, show(r.Model), show(r.Version), show(r.UpdateState), show(r.Attestation),
			online(r.Online), strconv.FormatInt(r.Devices, 10), strconv.FormatInt(r.TUFBehind, 10)})
	}
	return rows
}

func totalsLine(s api.FleetSummary) string {
	t := s.Totals
	return fmt.Sprintf("%d devices: %d online, %d offline, %d untrusted, %d not attested, %d behind on TUF (repository timestamp v%d)",
		t.Devices, t.Online, t.Offline, t.Untrusted, t.Unattested, t.TUFBehind, s.TUFTimestamp)
}

func fleetSummaryCmd(g *globalOptions) *cobra.Command {
	o := &fleetSummaryOptions{}
	cmd := &cobra.Command{
		Use:   "summary",
		Short: "Devices by tenant, model, version, update state, attestation and online: a firmware compliance report",
		Long: `Devices by tenant, model, version, update state, attestation and online: a
firmware compliance report, as a table, JSON or CSV (for a spreadsheet).

TUF BEHIND counts the devices that trust a TUF timestamp more than one version
older than the repository's: phones behind a frozen mirror, or cut off from
updates. dialtone devices list --tuf-behind names them.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.summary(cmd.Context())
			if err != nil {
				return err
			}
			switch o.Format {
			case "json":
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			case "csv":
				w := csv.NewWriter(g.stdout)
				header := []string{"tenant", "model", "version", "update_state", "attestation", "online", "devices", "tuf_behind"}
				if err := w.WriteAll(append([][]string{header}, summaryRows(s, false)...)); err != nil {
					return err
				}
				return w.Error()
			}
			if err := (&outputOptions{Format: "table"}).print(g.stdout, nil, summaryHeader, summaryRows(s, true)); err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, "\n"+totalsLine(s))
			return err
		},
	}
	o.AddFlags(cmd)
	return cmd
}

type fleetWatchOptions struct {
	fleetOptions
	Interval   time.Duration
	Iterations int
	// Clear is auto (clear the screen when stdout is a terminal), always or
	// never.
	Clear string
}

func (o *fleetWatchOptions) AddFlags(cmd *cobra.Command) {
	o.fleetOptions.AddFlags(cmd)
	cmd.Flags().DurationVar(&o.Interval, "interval", 5*time.Second, "how often to refresh")
	cmd.Flags().IntVar(&o.Iterations, "iterations", 0, "stop after this many refreshes (0: until interrupted)")
	cmd.Flags().StringVar(&o.Clear, "clear", "auto", "clear the screen before each refresh: auto (when stdout is a terminal), always or never")
	_ = cmd.RegisterFlagCompletionFunc("clear", fixedCompletion("auto", "always", "never"))
}

func (o *fleetWatchOptions) Validate() error {
	if err := o.fleetOptions.Validate(); err != nil {
		return err
	}
	if o.Interval < 10*time.Millisecond {
		return errors.New("--interval must be at least 10ms")
	}
	if o.Iterations < 0 {
		return errors.New("--iterations must not be negative")
	}
	switch o.Clear {
	case "auto", "always", "never":
		return nil
	}
	return fmt.Errorf("--clear %q: want auto, always or never", o.Clear)
}

// clearScreen moves the cursor home and erases the screen.
const clearScreen = "\x1b[H\x1b[2J"

func fleetWatchCmd(g *globalOptions) *cobra.Command {
	o := &fleetWatchOptions{}
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "A live view of the fleet summary and of the devices needing attention, refreshed every --interval",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			clear := o.Clear == "always"
			if f, ok := g.stdout.(*os.File); ok && o.Clear == "auto" {
				clear = isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
			}
			return watchFleet(cmd.Context(), g.stdout, o, clear)
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// watchFleet draws the fleet every o.Interval until ctx ends or o.Iterations
// frames are drawn. A failure of the first refresh is the command's; later
// ones (a server restarting) show in the frame and the refreshing goes on.
func watchFleet(ctx context.Context, w io.Writer, o *fleetWatchOptions, clear bool) error {
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	var last api.FleetSummary
	for n := 1; ; n++ {
		s, err := o.summary(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && n == 1 {
			return err
		}
		// One write per frame, so that the terminal never shows half of one.
		var frame bytes.Buffer
		if clear {
			frame.WriteString(clearScreen)
		}
		fmt.Fprintf(&frame, "dialtone fleet · %s · %s · every %s\n\n", o.Server, time.Now().Format(time.DateTime), o.Interval)
		if err != nil {
			fmt.Fprintf(&frame, "refresh failed: %v; showing the last summary\n\n", err)
			s = last
		}
		last = s
		tt := s.Totals
		fmt.Fprintf(&frame, "DEVICES %d   ONLINE %d   OFFLINE %d   UNTRUSTED %d   NOT ATTESTED %d   TUF BEHIND %d (repository timestamp v%d)\n\n",
			tt.Devices, tt.Online, tt.Offline, tt.Untrusted, tt.Unattested, tt.TUFBehind, s.TUFTimestamp)
		if err := (&outputOptions{Format: "table"}).print(&frame, nil, summaryHeader, summaryRows(s, true)); err != nil {
			return err
		}
		if !clear {
			frame.WriteString("\n")
		}
		if _, err := w.Write(frame.Bytes()); err != nil {
			return err
		}
		if o.Iterations > 0 && n >= o.Iterations {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
