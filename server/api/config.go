package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

// Device configuration as TUF targets (issue 7, item 4). An operator signs
// the config role's next metadata where the role's key is (`dialtone config
// publish`) and uploads it with the file; the repository checks both
// (tufrepo.PublishConfig). The tenant is a query parameter that the auth
// middleware checks against the caller's roles (config.publish there); the
// target path must name the same tenant.

// ConfigRepository is what the API needs to publish device configuration
// (server/tufrepo.Repo).
type ConfigRepository interface {
	ConfigDelegation(target string) (role string, raw []byte, err error)
	PublishConfig(ctx context.Context, req tufrepo.ConfigPublishRequest) (*wire.ConfigResult, error)
}

// maxConfigBody bounds a config publish: the role's metadata, the file and
// the multipart framing.
const maxConfigBody = tufrepo.MaxMetadataBytes + tufrepo.MaxConfigBytes + 16<<10

// ConfigForm is a decoded config publish.
type ConfigForm struct {
	Role     string
	Metadata []byte
	File     []byte
}

// ReadConfigForm reads a config publish: the parts role, metadata and file,
// in this order, each bounded, and nothing after them. Every error wraps
// ErrForm.
func ReadConfigForm(mr *multipart.Reader) (ConfigForm, error) {
	var f ConfigForm
	read := func(name string, max int64) ([]byte, error) { return readPart(mr, name, max) }
	role, err := read("role", 128)
	if err != nil {
		return f, err
	}
	f.Role = string(role)
	if f.Metadata, err = read("metadata", tufrepo.MaxMetadataBytes); err != nil {
		return f, err
	}
	if f.File, err = read("file", tufrepo.MaxConfigBytes); err != nil {
		return f, err
	}
	if len(f.Role) == 0 || len(f.Metadata) == 0 || len(f.File) == 0 {
		return f, fmt.Errorf("%w: role, metadata and file must not be empty", ErrForm)
	}
	if p, err := mr.NextPart(); err != io.EOF {
		if err == nil {
			return f, fmt.Errorf("%w: unexpected part %q after file", ErrForm, p.FormName())
		}
		return f, fmt.Errorf("%w: %v", ErrForm, err)
	}
	return f, nil
}

func (a *API) configRepo(w http.ResponseWriter) bool {
	if a.opts.Config == nil {
		writeError(w, http.StatusNotImplemented, "this server publishes no device configuration")
		return false
	}
	return true
}

// configTenant returns the one tenant the request names (the middleware
// has checked the caller's role there).
func configTenant(w http.ResponseWriter, r *http.Request) (string, bool) {
	ts := r.URL.Query()["tenant"]
	if len(ts) != 1 || !wire.ValidID(ts[0]) {
		writeError(w, http.StatusBadRequest, "query parameter tenant is required, once")
		return "", false
	}
	return ts[0], true
}

func (a *API) configDelegation(w http.ResponseWriter, r *http.Request) {
	if !a.configRepo(w) {
		return
	}
	tenant, ok := configTenant(w, r)
	if !ok {
		return
	}
	target := r.URL.Query().Get("target")
	ct, err := wire.ParseConfigPath(target)
	if err != nil || len(target) > 512 {
		writeError(w, http.StatusBadRequest, "query parameter target: want config/<tenant>/{devices,groups}/<name>/sip.json")
		return
	}
	if ct.Tenant != tenant {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("target %s is not of tenant %s", target, tenant))
		return
	}
	role, raw, err := a.opts.Config.ConfigDelegation(target)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Role     string          `json:"role"`
		Metadata json.RawMessage `json:"metadata"`
	}{role, raw})
}

func (a *API) publishConfig(w http.ResponseWriter, r *http.Request) {
	if !a.configRepo(w) {
		return
	}
	tenant, ok := configTenant(w, r)
	if !ok {
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "want multipart/form-data: "+err.Error())
		return
	}
	form, err := ReadConfigForm(mr)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := a.opts.Config.PublishConfig(r.Context(), tufrepo.ConfigPublishRequest{
		Role: form.Role, Metadata: form.Metadata, File: form.File, Tenants: []string{tenant},
	})
	var rej *tufrepo.RejectedError
	switch {
	case errors.As(err, &rej):
		a.log.Warn("config publish rejected", "tenant", tenant, "check", rej.Check, "err", rej.Err)
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: rej.Error(), Check: rej.Check})
		return
	case err != nil:
		a.log.Error("config publish failed", "tenant", tenant, "err", err)
		writeError(w, http.StatusInternalServerError, "config publish failed: "+err.Error())
		return
	}
	audit.SetTenant(r.Context(), tenant)
	audit.SetTarget(r.Context(), res.Target)
	audit.SetChange(r.Context(), nil, res)
	a.log.Info("config published", "target", res.Target, "sha256", res.SHA256, "by", principal(r).String())
	a.pokeConfig(r.Context(), res.Target)
	writeJSON(w, http.StatusCreated, res)
}

// pokeConfig tells the device a device profile was published for to look
// at it now (a config command), rather than at its next periodic check.
// Best effort: a device that is offline or not yet known finds the profile
// on its own; the command carries nothing but its name, so a device ID
// that is another tenant's learns nothing from it.
func (a *API) pokeConfig(ctx context.Context, target string) {
	ct, err := wire.ParseConfigPath(target)
	if err != nil || ct.Scope != wire.ConfigDevices || a.opts.Rollouts == nil {
		return
	}
	if _, err := a.opts.Rollouts.Command(ctx, ct.Name, wire.CmdConfig); err != nil && !errors.Is(err, store.ErrNotFound) {
		a.log.Warn("telling the device about its new profile", "device", ct.Name, "err", err)
	}
}
