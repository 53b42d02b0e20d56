package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/spf13/cobra"
)

type devicesListOptions struct {
	clientOptions
	outputOptions
	Tenant string
	Model  string
}

func (o *devicesListOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().StringVar(&o.Tenant, "tenant", "", "only devices of this tenant")
	cmd.Flags().StringVar(&o.Model, "model", "", "only devices of this model")
}

func devicesCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "devices", Short: "See and steer the fleet"}
	o := &devicesListOptions{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List devices with their firmware and update state",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.clientOptions.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			if err := o.outputOptions.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := listDevices(cmd.Context(), o)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(ds))
			for _, d := range ds {
				online := "no"
				if d.Online {
					online = "yes"
				}
				rows = append(rows, []string{d.ID, d.Tenant, d.Model, d.Hardware, d.Version, d.Slot, d.UpdateState,
					online, d.LastSeen.Local().Format(time.DateTime), strconv.FormatInt(d.TUF.Timestamp, 10)})
			}
			return o.print(g.stdout, ds, []string{"DEVICE", "TENANT", "MODEL", "HW", "VERSION", "SLOT", "UPDATE", "ONLINE", "LAST SEEN", "TUF TS"}, rows)
		},
	}
	o.AddFlags(list)
	cmd.AddCommand(list, devicesEventsCmd(g), devicesDesireCmd(g))
	return cmd
}

func listDevices(ctx context.Context, o *devicesListOptions) ([]api.Device, error) {
	q := url.Values{}
	if o.Tenant != "" {
		q.Set("tenant", o.Tenant)
	}
	if o.Model != "" {
		q.Set("model", o.Model)
	}
	var out struct {
		Devices []api.Device `json:"devices"`
	}
	if err := getJSON(ctx, o.clientOptions, "/v1/devices?"+q.Encode(), &out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}

func getJSON(ctx context.Context, c clientOptions, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.Server, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("contacting server: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("server answered %s: %s", resp.Status, e.Error)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return nil
}
