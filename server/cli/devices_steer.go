package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/spf13/cobra"
	"golang.org/x/mod/semver"
)

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

type devicesDesireOptions struct {
	clientOptions
	outputOptions
	Withdraw bool
}

func (o *devicesDesireOptions) Validate(args []string) error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if !wire.ValidID(args[0]) {
		return fmt.Errorf("bad device id %q", args[0])
	}
	switch {
	case o.Withdraw && len(args) == 2:
		return errors.New("give a VERSION or --withdraw, not both")
	case !o.Withdraw && len(args) == 1:
		return errors.New("give a VERSION, or --withdraw")
	case len(args) == 2 && !semver.IsValid("v"+args[1]):
		return fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", args[1])
	}
	return nil
}

func devicesDesireCmd(g *globalOptions) *cobra.Command {
	o := &devicesDesireOptions{}
	cmd := &cobra.Command{
		Use:   "desire DEVICE [VERSION]",
		Short: "Set the firmware version a device should run (it never goes below its anti-rollback floor)",
		Long: `Set the firmware version a device should run, or withdraw it with --withdraw.

The device installs that version when it is a signed target for its model and
hardware, from any channel, and not below its anti-rollback floor; a download
of a previous desired version stops when it changes.`,
		Args: cobra.RangeArgs(1, 2),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if err := o.Validate(args); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.DesiredRequest{}
			if len(args) == 2 {
				req.Version = args[1]
			}
			body, _ := json.Marshal(req)
			var d store.Desired
			if err := sendJSON(cmd.Context(), o.clientOptions, http.MethodPut, "/v1/devices/"+url.PathEscape(args[0])+"/desired", body, http.StatusOK, &d); err != nil {
				return err
			}
			v := d.Version
			if v == "" {
				v = "(withdrawn)"
			}
			return o.print(g.stdout, d, []string{"DEVICE", "TENANT", "DESIRED", "SET"}, [][]string{{d.Device, d.Tenant, v, d.Time.Local().Format(time.DateTime)}})
		},
	}
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	cmd.Flags().BoolVar(&o.Withdraw, "withdraw", false, "withdraw the desired version: the device follows its channel again")
	return cmd
}
