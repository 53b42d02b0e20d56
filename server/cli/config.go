package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/firmware/publish"
	"github.com/dialtone-dev/dialtone/internal/sipprofile"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/spf13/cobra"
)

func configCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Publish devices' configuration (SIP profiles) as signed TUF targets"}
	cmd.AddCommand(configPublishCmd(g))
	return cmd
}

type configPublishOptions struct {
	clientOptions
	outputOptions
	Tenant, Device, Group string
	Key                   string
	Expires               time.Duration
}

func (o *configPublishOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Tenant, "tenant", "", "tenant of the device or group (required)")
	f.StringVar(&o.Device, "device", "", "the device the profile is for")
	f.StringVar(&o.Group, "group", "", "the group of devices the profile is for (a device's own profile comes first)")
	f.StringVar(&o.Key, "key", "", "private key URI of the config role: signs the role's TUF metadata (required)")
	f.DurationVar(&o.Expires, "expires", 30*24*time.Hour, "lifetime of the signed metadata")
}

func (o *configPublishOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if !wire.ValidID(o.Tenant) {
		return errors.New("--tenant is required")
	}
	if (o.Device == "") == (o.Group == "") {
		return errors.New("give --device or --group, one of them")
	}
	if o.Key == "" {
		return errors.New("--key: the config role's key is required")
	}
	if o.Expires <= 0 || o.Expires > 365*24*time.Hour {
		return errors.New("--expires: want up to a year")
	}
	return nil
}

// target is the config target path the flags name.
func (o *configPublishOptions) target() (string, error) {
	scope, name := wire.ConfigDevices, o.Device
	if o.Group != "" {
		scope, name = wire.ConfigGroups, o.Group
	}
	return wire.ConfigPath(o.Tenant, scope, name, wire.ConfigSIPProfile)
}

func configPublishCmd(g *globalOptions) *cobra.Command {
	o := &configPublishOptions{}
	cmd := &cobra.Command{
		Use:   "publish --tenant T (--device D | --group G) --key KEY PROFILE.json",
		Short: "Check a SIP profile, sign the config role's metadata for it, and publish both",
		Long: `Publish a SIP profile for one device or a group of devices.

The profile is checked here first (the phone and the server check it the same
way). The config role's current metadata is fetched from the server, the
profile's target config/<tenant>/{devices,groups}/<name>/sip.json is set in it,
and the next version is signed with --key, here: the server never holds the
key. The SIP password is not part of the profile: set it with
'dialtone devices sip-password'.`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			file, err := readBounded(args[0], tufrepo.MaxConfigBytes)
			if err != nil {
				return err
			}
			if _, err := sipprofile.Parse(file); err != nil {
				return &ExitCodeError{Code: ExitRejected, Err: fmt.Errorf("%s: %w", args[0], err)}
			}
			target, err := o.target()
			if err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			signer, err := keys.LoadSigner(cmd.Context(), o.Key)
			if err != nil {
				return err
			}
			res, err := publishConfig(cmd.Context(), o, target, file, signer)
			if err != nil {
				return err
			}
			return o.print(g.stdout, res, []string{"TARGET", "ROLE", "VERSION", "LENGTH", "SHA256", "SNAPSHOT"},
				[][]string{{res.Target, res.Role, fmt.Sprint(res.Version), fmt.Sprint(res.Length), res.SHA256, fmt.Sprint(res.Snapshot)}})
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// publishConfig fetches the config role's metadata for target, signs its
// next version with the file set, and uploads both.
func publishConfig(ctx context.Context, o *configPublishOptions, target string, file []byte, signer signature.Signer) (*wire.ConfigResult, error) {
	q := url.Values{"tenant": {o.Tenant}, "target": {target}}
	var d struct {
		Role     string          `json:"role"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := getJSON(ctx, o.clientOptions, "/v1/config/delegation?"+q.Encode(), &d); err != nil {
		return nil, err
	}
	md, err := tufrepo.StageConfig(d.Metadata, d.Role, target, file, signer, o.Expires, time.Now())
	if err != nil {
		return nil, err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := mw.WriteField("role", d.Role); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		name string
		data []byte
	}{{"metadata", md}, {"file", file}} {
		w, err := mw.CreateFormFile(p.name, p.name)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(p.data); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(o.Server, "/") + "/v1/config?" + url.Values{"tenant": {o.Tenant}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, &body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+o.Token)
	hc, err := o.httpClient(time.Minute)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("contacting server: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Error string `json:"error"`
			Check string `json:"check"`
		}
		if json.Unmarshal(rb, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(rb))
		}
		// A refusal by a named check exits with ExitRejected (Execute).
		return nil, &publish.ServerError{Status: resp.StatusCode, Check: e.Check, Msg: e.Error}
	}
	var res wire.ConfigResult
	if err := json.Unmarshal(rb, &res); err != nil {
		return nil, fmt.Errorf("decoding answer: %w", err)
	}
	return &res, nil
}
