package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/spf13/cobra"
)

func devicesCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "devices", Short: "See and steer the fleet"}
	cmd.AddCommand(devicesListCmd(g), devicesShowCmd(g), devicesEventsCmd(g), devicesDesireCmd(g), devicesCommandCmd(g))
	cmd.AddCommand(devicesAttestCmds(g)...)
	return cmd
}

// devicesListOptions are the filters, order and paging of `devices list`.
type devicesListOptions struct {
	clientOptions
	outputOptions
	Tenant, Model, Version, Attestation string
	Online, Offline                     bool
	// SeenSince and SeenBefore are a duration ago ("1h", "7d") or an RFC
	// 3339 time; Validate resolves them.
	SeenSince, SeenBefore string
	Sort                  string
	Desc                  bool
	Limit                 int
	All                   bool
	Cursor                string
	TUFBehind             bool

	seenSince, seenBefore time.Time
}

func (o *devicesListOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Tenant, "tenant", "", "only devices of this tenant")
	f.StringVar(&o.Model, "model", "", "only devices of this model")
	f.StringVar(&o.Version, "version", "", "only devices running this firmware version")
	f.StringVar(&o.Attestation, "attestation", "", "only devices with this attestation outcome (trusted, untrusted, …)")
	f.BoolVar(&o.Online, "online", false, "only online devices")
	f.BoolVar(&o.Offline, "offline", false, "only offline devices")
	f.StringVar(&o.SeenSince, "seen-since", "", "only devices seen since then: a duration ago (30m, 1h, 7d) or an RFC 3339 time")
	f.StringVar(&o.SeenBefore, "seen-before", "", "only devices not seen since then: a duration ago (30m, 1h, 7d) or an RFC 3339 time")
	f.StringVar(&o.Sort, "sort", store.SortID, "order: id, last_seen, version or model (ties by tenant, then ID)")
	f.BoolVar(&o.Desc, "desc", false, "reverse the order")
	f.IntVar(&o.Limit, "limit", api.DefaultDeviceLimit, fmt.Sprintf("devices per page (1 to %d)", api.MaxDeviceLimit))
	f.BoolVar(&o.All, "all", false, "every matching device, a page at a time")
	f.StringVar(&o.Cursor, "cursor", "", "continue a listing where the previous page ended (its cursor is printed on stderr)")
	f.BoolVar(&o.TUFBehind, "tuf-behind", false, "only devices trusting a TUF timestamp more than one version older than the repository's (a frozen mirror)")
	_ = cmd.RegisterFlagCompletionFunc("sort", fixedCompletion(store.SortID, store.SortLastSeen, store.SortVersion, store.SortModel))
	_ = cmd.RegisterFlagCompletionFunc("attestation", fixedCompletion("trusted", "untrusted"))
}

// Validate checks the flags and resolves the times, relative to now.
func (o *devicesListOptions) Validate(now time.Time) error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if o.Online && o.Offline {
		return errors.New("give --online or --offline, not both")
	}
	for _, v := range []struct{ flag, val string }{{"--tenant", o.Tenant}, {"--model", o.Model}} {
		if v.val != "" && !wire.ValidID(v.val) {
			return fmt.Errorf("%s %q is not a valid name", v.flag, v.val)
		}
	}
	if !slices.Contains([]string{store.SortID, store.SortLastSeen, store.SortVersion, store.SortModel}, o.Sort) {
		return fmt.Errorf("--sort %q: want id, last_seen, version or model", o.Sort)
	}
	if o.Limit < 1 || o.Limit > api.MaxDeviceLimit {
		return fmt.Errorf("--limit %d: want 1 to %d", o.Limit, api.MaxDeviceLimit)
	}
	var err error
	if o.seenSince, err = parseSeen(o.SeenSince, now); err != nil {
		return fmt.Errorf("--seen-since: %w", err)
	}
	if o.seenBefore, err = parseSeen(o.SeenBefore, now); err != nil {
		return fmt.Errorf("--seen-before: %w", err)
	}
	if !o.seenSince.IsZero() && !o.seenBefore.IsZero() && !o.seenSince.Before(o.seenBefore) {
		return errors.New("--seen-since must be before --seen-before")
	}
	return nil
}

// parseSeen reads a point in time: "" (none), a duration ago ("90s", "1h",
// "7d") or an RFC 3339 time.
func parseSeen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
		if err == nil && n > 100000 {
			err = errors.New("too many days")
		}
	}
	if err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration ago must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want a duration ago (30m, 1h, 7d) or an RFC 3339 time (2026-11-25T10:00:00Z)", s)
	}
	return t, nil
}

// query is the GET /v1/devices query of the options, without paging.
func (o *devicesListOptions) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"tenant": o.Tenant, "model": o.Model, "version": o.Version, "attestation": o.Attestation} {
		if v != "" {
			q.Set(k, v)
		}
	}
	switch {
	case o.Online:
		q.Set("online", "true")
	case o.Offline:
		q.Set("online", "false")
	}
	if !o.seenSince.IsZero() {
		q.Set("seen_since", o.seenSince.UTC().Format(time.RFC3339Nano))
	}
	if !o.seenBefore.IsZero() {
		q.Set("seen_before", o.seenBefore.UTC().Format(time.RFC3339Nano))
	}
	if o.Sort != store.SortID {
		q.Set("sort", o.Sort)
	}
	if o.Desc {
		q.Set("desc", "true")
	}
	if o.TUFBehind {
		q.Set("tuf_behind", "true")
	}
	q.Set("limit", strconv.Itoa(o.Limit))
	return q
}

func devicesListCmd(g *globalOptions) *cobra.Command {
	o := &devicesListOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List devices with their firmware, update state and attestation",
		Long: `List devices with their firmware, update state and attestation.

Filters combine; a page holds --limit devices (100 by default) and --all
fetches every page. Without --all, a listing with more devices ends with the
cursor of the next page on stderr.`,
		Example: `  dialtone devices list --tenant acme --offline --seen-before 7d
  dialtone devices list --model dt100 --version 1.2.0 --sort last_seen --desc
  dialtone devices list --tuf-behind --all -o json`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.Validate(time.Now()))
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, next, err := listDevices(cmd.Context(), o)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(ds))
			for _, d := range ds {
				rows = append(rows, []string{d.ID, d.Tenant, d.Model, d.Hardware, d.Version, d.Slot, d.UpdateState,
					yesNo(d.Online), d.LastSeen.Local().Format(time.DateTime), strconv.FormatInt(d.TUF.Timestamp, 10), orDash(d.Attestation)})
			}
			if err := o.print(g.stdout, ds, []string{"DEVICE", "TENANT", "MODEL", "HW", "VERSION", "SLOT", "UPDATE", "ONLINE", "LAST SEEN", "TUF TS", "ATTESTATION"}, rows); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(g.stderr, "more devices: --all lists them all, --cursor %s the next page\n", next)
			}
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// listDevices fetches a page of devices, or every page with o.All, and
// returns the cursor of the page after them, "" at the end.
func listDevices(ctx context.Context, o *devicesListOptions) ([]api.Device, string, error) {
	q := o.query()
	cursor := o.Cursor
	out := []api.Device{}
	for {
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page api.DeviceList
		if err := getJSON(ctx, o.clientOptions, "/v1/devices?"+q.Encode(), &page); err != nil {
			return nil, "", err
		}
		out = append(out, page.Devices...)
		if page.Next == "" || !o.All {
			return out, page.Next, nil
		}
		if page.Next == cursor {
			return nil, "", errors.New("the server answered the same page twice")
		}
		cursor = page.Next
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// deviceArgOptions are those of a command about one device.
type deviceArgOptions struct {
	clientOptions
	outputOptions
}

func (o *deviceArgOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
}

func (o *deviceArgOptions) Validate(args []string) error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if !wire.ValidID(args[0]) {
		return fmt.Errorf("bad device id %q", args[0])
	}
	return nil
}

func devicesShowCmd(g *globalOptions) *cobra.Command {
	o := &deviceArgOptions{}
	cmd := &cobra.Command{
		Use:               "show DEVICE",
		Short:             "A device's state, desired version, attestation and latest events",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDevices(&o.clientOptions),
		PreRunE: func(_ *cobra.Command, args []string) error {
			return firstUsageError(o.Validate(args))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var d api.DeviceDetail
			if err := getJSON(cmd.Context(), o.clientOptions, "/v1/devices/"+url.PathEscape(args[0]), &d); err != nil {
				return err
			}
			if o.Format == "json" {
				return o.print(g.stdout, d, nil, nil)
			}
			return printDevice(g.stdout, d)
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func printDevice(w io.Writer, d api.DeviceDetail) error {
	when := func(t time.Time) string { return t.Local().Format(time.DateTime) }
	desired := "none"
	switch {
	case d.DesiredVersion != "":
		desired = fmt.Sprintf("%s (set %s)", d.DesiredVersion, when(d.DesiredTime))
	case !d.DesiredTime.IsZero():
		desired = fmt.Sprintf("none (withdrawn %s)", when(d.DesiredTime))
	}
	attestation := "none yet"
	if d.Attestation != "" {
		attestation = fmt.Sprintf("%s (%s)", d.Attestation, when(d.Attested))
	}
	tuf := fmt.Sprintf("root %d, timestamp %d, snapshot %d, targets %d", d.TUF.Root, d.TUF.Timestamp, d.TUF.Snapshot, d.TUF.Targets)
	if d.TUFBehind {
		tuf += " (behind the repository: a frozen mirror?)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"DEVICE", d.ID},
		{"TENANT", d.Tenant},
		{"MODEL", fmt.Sprintf("%s (hardware %s)", orDash(d.Model), orDash(d.Hardware))},
		{"VERSION", fmt.Sprintf("%s (slot %s)", orDash(d.Version), orDash(d.Slot))},
		{"UPDATE", orDash(d.UpdateState)},
		{"DESIRED", desired},
		{"ONLINE", fmt.Sprintf("%s, last seen %s", yesNo(d.Online), when(d.LastSeen))},
		{"ATTESTATION", attestation},
		{"TUF", tuf},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nLAST %d EVENTS\n", len(d.Events))
	if len(d.Events) == 0 {
		return nil
	}
	return (&outputOptions{Format: "table"}).print(w, nil, eventHeader, eventRows(d.Events))
}

var eventHeader = []string{"SEQ", "TIME", "TYPE", "VERSION", "MESSAGE"}

func eventRows(evs []api.Event) [][]string {
	rows := make([][]string, 0, len(evs))
	for _, e := range evs {
		rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), e.Time.Local().Format(time.DateTime), e.Type, e.Version, oneLine(e.Message, 100)})
	}
	return rows
}

type devicesEventsOptions struct {
	deviceArgOptions
	Limit    int
	Follow   bool
	Interval time.Duration
}

func (o *devicesEventsOptions) AddFlags(cmd *cobra.Command) {
	o.deviceArgOptions.AddFlags(cmd)
	cmd.Flags().IntVar(&o.Limit, "limit", 100, "the most recent N events (0: all)")
	cmd.Flags().BoolVarP(&o.Follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().DurationVar(&o.Interval, "interval", time.Second, "with --follow, how often to ask the server")
}

func (o *devicesEventsOptions) Validate(args []string) error {
	if err := o.deviceArgOptions.Validate(args); err != nil {
		return err
	}
	if o.Limit < 0 {
		return errors.New("--limit must not be negative")
	}
	if o.Follow && o.Interval < 10*time.Millisecond {
		return errors.New("--interval must be at least 10ms")
	}
	return nil
}

func devicesEventsCmd(g *globalOptions) *cobra.Command {
	o := &devicesEventsOptions{}
	cmd := &cobra.Command{
		Use:   "events DEVICE",
		Short: "A device's events, oldest first; --follow keeps printing new ones",
		Long: `A device's events, oldest first.

With --follow the command asks the server every --interval and prints the
events it has not printed yet (by event ID), until interrupted; -o json then
prints one JSON object per line.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeDevices(&o.clientOptions),
		PreRunE: func(_ *cobra.Command, args []string) error {
			return firstUsageError(o.Validate(args))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Follow {
				return followEvents(cmd.Context(), g, o, args[0])
			}
			evs, err := fetchEvents(cmd.Context(), o, args[0])
			if err != nil {
				return err
			}
			return o.print(g.stdout, evs, eventHeader, eventRows(evs))
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func fetchEvents(ctx context.Context, o *devicesEventsOptions, device string) ([]api.Event, error) {
	var out struct {
		Events []api.Event `json:"events"`
	}
	path := "/v1/devices/" + url.PathEscape(device) + "/events?limit=" + strconv.Itoa(o.Limit)
	if err := getJSON(ctx, o.clientOptions, path, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// followEvents prints a device's events as they arrive, until ctx ends. A
// failure of the first request is the command's; later ones (a server
// restarting) are reported on stderr and the polling goes on.
func followEvents(ctx context.Context, g *globalOptions, o *devicesEventsOptions, device string) error {
	enc := json.NewEncoder(g.stdout)
	if o.Format == "table" {
		fmt.Fprintf(g.stdout, "%-8s  %-19s  %-12s  %-10s  %s\n", "SEQ", "TIME", "TYPE", "VERSION", "MESSAGE")
	}
	// printed holds the IDs of the last answer's events that were printed.
	// Each answer is the device's latest events, so an event that left it
	// never comes back and its ID can be forgotten.
	printed := map[string]bool{}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for first := true; ; first = false {
		evs, err := fetchEvents(ctx, o, device)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && first:
			return err
		case err != nil:
			fmt.Fprintf(g.stderr, "dialtone: %v (retrying)\n", err)
		default:
			now := make(map[string]bool, len(evs))
			if o.Limit > 0 && len(evs) == o.Limit && len(printed) > 0 &&
				!slices.ContainsFunc(evs, func(e api.Event) bool { return printed[e.ID] }) {
				fmt.Fprintf(g.stderr, "dialtone: more than %d events arrived since the last poll: the earliest of them were not shown (raise --limit)\n", o.Limit)
			}
			for _, e := range evs {
				now[e.ID] = true
				if printed[e.ID] {
					continue
				}
				if o.Format == "json" {
					if err := enc.Encode(e); err != nil {
						return err
					}
				} else {
					fmt.Fprintf(g.stdout, "%-8d  %-19s  %-12s  %-10s  %s\n", e.Seq, e.Time.Local().Format(time.DateTime), e.Type, orDash(e.Version), oneLine(e.Message, 100))
				}
			}
			printed = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type devicesCommandOptions struct {
	deviceArgOptions
}

func (o *devicesCommandOptions) Validate(args []string) error {
	if err := o.deviceArgOptions.Validate(args); err != nil {
		return err
	}
	switch args[1] {
	case wire.CmdCheck, wire.CmdAttest, wire.CmdReboot, wire.CmdConfig:
		return nil
	case wire.CmdDesired:
		return errors.New("the desired version is set with `dialtone devices desire`")
	}
	return fmt.Errorf("unknown command %q: want check, attest, reboot or config", args[1])
}

func devicesCommandCmd(g *globalOptions) *cobra.Command {
	o := &devicesCommandOptions{}
	devices := completeDevices(&o.clientOptions)
	cmd := &cobra.Command{
		Use:   "cmd DEVICE check|attest|reboot|config",
		Short: "Send a device a command: check for an update now, attest, or reboot",
		Long: `Send a device a command over MQTT (QoS 1, not retained): check for an
update now, attest, or reboot.

The server answers once the broker has the command; what the device did
shows in its events (dialtone devices events DEVICE --follow).`,
		Args: cobra.ExactArgs(2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return []string{wire.CmdCheck, wire.CmdAttest, wire.CmdReboot, wire.CmdConfig}, cobra.ShellCompDirectiveNoFileComp
			}
			return devices(cmd, args, toComplete)
		},
		PreRunE: func(_ *cobra.Command, args []string) error {
			return firstUsageError(o.Validate(args))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			body, _ := json.Marshal(api.CommandRequest{Name: args[1]})
			var sent api.CommandSent
			if err := sendJSON(cmd.Context(), o.clientOptions, http.MethodPost, "/v1/devices/"+url.PathEscape(args[0])+"/cmd", body, http.StatusAccepted, &sent); err != nil {
				return err
			}
			return o.print(g.stdout, sent, []string{"DEVICE", "COMMAND", "ID", "SENT"},
				[][]string{{sent.Device, sent.Name, sent.ID, sent.Time.Local().Format(time.DateTime)}})
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func fixedCompletion(vals ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeDevices completes a device ID from the first devices of the
// server that the flags, or else the environment, name.
func completeDevices(co *clientOptions) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c := *co
		if c.Server == "" {
			c.Server = os.Getenv("DIALTONE_SERVER")
		}
		if c.Token == "" {
			c.Token = os.Getenv("DIALTONE_TOKEN")
		}
		if c.CA == "" {
			c.CA = os.Getenv("DIALTONE_CA")
		}
		if c.Validate() != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
		defer cancel()
		var page api.DeviceList
		if err := getJSON(ctx, c, "/v1/devices?limit=1000", &page); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var out []string
		for _, d := range page.Devices {
			if strings.HasPrefix(d.ID, toComplete) {
				out = append(out, d.ID+"\t"+d.Tenant+" "+d.Model+" "+d.Version)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func getJSON(ctx context.Context, c clientOptions, path string, v any) error {
	return apiCall{server: c.Server, ca: c.CA, token: c.Token, method: http.MethodGet, path: path, want: http.StatusOK, limit: 64 << 20}.do(ctx, v)
}
