// Package api owns the server's HTTP surface: the TUF repository under
// /tuf/, and the versioned operator and publisher API under /v1/. Handlers
// decode, authorise and delegate; they hold no business logic of their own.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

// Repository is what the API needs of the TUF repository.
type Repository interface {
	Handler() http.Handler
	Delegation(targetPath string) (role string, raw []byte, err error)
	Publish(ctx context.Context, req tufrepo.PublishRequest) (*tufrepo.PublishResult, error)
	Push(ctx context.Context, req tufrepo.PushRequest) (*tufrepo.PushResult, error)
	Status() []tufrepo.RoleStatus
	Revocations() ([]tufrepo.Revocation, error)
}

// Devices is what the API needs of the fleet store.
type Devices interface {
	ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error)
}

// Options configure the API.
type Options struct {
	Repo    Repository
	Devices Devices
	// AdminToken is the bearer token that authorises every /v1 call. Only
	// its SHA-256 is kept.
	AdminToken string
	// MaxBundleBytes bounds a publish upload.
	MaxBundleBytes int64
	Logger         *slog.Logger
}

// API is the HTTP handler.
type API struct {
	opts      Options
	tokenHash [sha256.Size]byte
	mux       *http.ServeMux
	log       *slog.Logger
}

// New builds the handler.
func New(o Options) (*API, error) {
	if o.Repo == nil || o.Devices == nil {
		return nil, errors.New("api: repository and device store are required")
	}
	if len(o.AdminToken) < 16 {
		return nil, errors.New("api: admin token too short (at least 16 characters)")
	}
	if o.MaxBundleBytes == 0 {
		o.MaxBundleBytes = 8 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{opts: o, tokenHash: sha256.Sum256([]byte(o.AdminToken)), mux: http.NewServeMux(), log: o.Logger}
	a.mux.Handle("GET /tuf/", http.StripPrefix("/tuf", o.Repo.Handler()))
	a.mux.Handle("HEAD /tuf/", http.StripPrefix("/tuf", o.Repo.Handler()))
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	a.mux.Handle("GET /v1/firmware/delegation", a.auth(http.HandlerFunc(a.delegation)))
	a.mux.Handle("POST /v1/firmware", a.auth(http.HandlerFunc(a.publish)))
	a.mux.Handle("GET /v1/devices", a.auth(http.HandlerFunc(a.devices)))
	a.mux.Handle("POST /v1/tuf/push", a.auth(http.HandlerFunc(a.push)))
	a.mux.Handle("GET /v1/tuf/status", a.auth(http.HandlerFunc(a.tufStatus)))
	return a, nil
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	a.mux.ServeHTTP(w, r)
}

// errorBody is the one shape every error response has.
type errorBody struct {
	Error string `json:"error"`
	Check string `json:"check,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func (a *API) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dialtone"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) delegation(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Query().Get("target")
	if target == "" || len(target) > 512 {
		writeError(w, http.StatusBadRequest, "query parameter target is required")
		return
	}
	role, raw, err := a.opts.Repo.Delegation(target)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Role     string          `json:"role"`
		Metadata json.RawMessage `json:"metadata"`
	}{role, raw})
}

// PublishForm is a decoded publish request, minus the bundle stream.
type PublishForm struct {
	Role      string
	Metadata  []byte
	Signature []byte
}

// ErrForm is wrapped by every error of a malformed publish request.
var ErrForm = errors.New("malformed publish request")

// ReadPublishForm reads the leading parts of a publish upload in their
// fixed order (role, metadata, signature), each bounded, and returns the
// bundle part as a stream without reading it.
func ReadPublishForm(mr *multipart.Reader) (PublishForm, io.Reader, error) {
	var f PublishForm
	read := func(name string, max int64) ([]byte, error) {
		p, err := mr.NextPart()
		if err != nil {
			return nil, fmt.Errorf("%w: want part %q: %v", ErrForm, name, err)
		}
		if p.FormName() != name {
			return nil, fmt.Errorf("%w: want part %q, got %q", ErrForm, name, p.FormName())
		}
		b, err := io.ReadAll(io.LimitReader(p, max+1))
		if err != nil {
			return nil, fmt.Errorf("%w: reading %s: %v", ErrForm, name, err)
		}
		if int64(len(b)) > max {
			return nil, fmt.Errorf("%w: part %s exceeds %d bytes", ErrForm, name, max)
		}
		return b, nil
	}
	role, err := read("role", 128)
	if err != nil {
		return f, nil, err
	}
	f.Role = string(role)
	if f.Metadata, err = read("metadata", tufrepo.MaxMetadataBytes); err != nil {
		return f, nil, err
	}
	if f.Signature, err = read("signature", tufrepo.MaxSignatureBytes); err != nil {
		return f, nil, err
	}
	p, err := mr.NextPart()
	if err != nil {
		return f, nil, fmt.Errorf("%w: want part \"bundle\": %v", ErrForm, err)
	}
	if p.FormName() != "bundle" {
		return f, nil, fmt.Errorf("%w: want part \"bundle\", got %q", ErrForm, p.FormName())
	}
	return f, p, nil
}

func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxBundleBytes+tufrepo.MaxMetadataBytes+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "want multipart/form-data: "+err.Error())
		return
	}
	form, bundle, err := ReadPublishForm(mr)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := a.opts.Repo.Publish(r.Context(), tufrepo.PublishRequest{
		Role: form.Role, Metadata: form.Metadata, Signature: form.Signature, Bundle: bundle,
	})
	var rej *tufrepo.RejectedError
	switch {
	case errors.As(err, &rej):
		a.log.Warn("publish rejected", "check", rej.Check, "err", rej.Err)
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: rej.Error(), Check: rej.Check})
		return
	case err != nil:
		a.log.Error("publish failed", "err", err)
		writeError(w, http.StatusInternalServerError, "publish failed: "+err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// ReadPushForm reads a metadata push: an optional "reason" field, then one
// part per role, named by the role, each bounded.
func ReadPushForm(mr *multipart.Reader) (tufrepo.PushRequest, error) {
	req := tufrepo.PushRequest{Files: map[string][]byte{}}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return req, fmt.Errorf("%w: %v", ErrForm, err)
		}
		name := p.FormName()
		max := int64(tufrepo.MaxMetadataBytes)
		if name == "reason" {
			max = 1024
		}
		b, err := io.ReadAll(io.LimitReader(p, max+1))
		if err != nil {
			return req, fmt.Errorf("%w: reading %s: %v", ErrForm, name, err)
		}
		if int64(len(b)) > max {
			return req, fmt.Errorf("%w: part %s exceeds %d bytes", ErrForm, name, max)
		}
		switch {
		case name == "reason":
			req.Reason = string(b)
		case name == "" || len(name) > 64:
			return req, fmt.Errorf("%w: a part needs a role name", ErrForm)
		default:
			if _, dup := req.Files[name]; dup {
				return req, fmt.Errorf("%w: role %s given twice", ErrForm, name)
			}
			if len(req.Files) == tufrepo.MaxPushFiles {
				return req, fmt.Errorf("%w: more than %d files", ErrForm, tufrepo.MaxPushFiles)
			}
			req.Files[name] = b
		}
	}
	return req, nil
}

func (a *API) push(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, int64(tufrepo.MaxPushFiles+1)*tufrepo.MaxMetadataBytes)
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "want multipart/form-data: "+err.Error())
		return
	}
	req, err := ReadPushForm(mr)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req.Actor = "admin"
	res, err := a.opts.Repo.Push(r.Context(), req)
	var rej *tufrepo.RejectedError
	switch {
	case errors.As(err, &rej):
		a.log.Warn("push rejected", "check", rej.Check, "err", rej.Err)
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: rej.Error(), Check: rej.Check})
		return
	case err != nil:
		a.log.Error("push failed", "err", err)
		writeError(w, http.StatusInternalServerError, "push failed: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// TUFStatus is the answer of GET /v1/tuf/status.
type TUFStatus struct {
	Roles       []tufrepo.RoleStatus `json:"roles"`
	Revocations []tufrepo.Revocation `json:"revocations"`
}

func (a *API) tufStatus(w http.ResponseWriter, r *http.Request) {
	revs, err := a.opts.Repo.Revocations()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if revs == nil {
		revs = []tufrepo.Revocation{}
	}
	writeJSON(w, http.StatusOK, TUFStatus{Roles: a.opts.Repo.Status(), Revocations: revs})
}

// Device is the API's view of a device.
type Device struct {
	ID          string           `json:"id"`
	Tenant      string           `json:"tenant"`
	Model       string           `json:"model"`
	Hardware    string           `json:"hardware"`
	Version     string           `json:"version"`
	Slot        string           `json:"slot"`
	UpdateState string           `json:"update_state"`
	Online      bool             `json:"online"`
	LastSeen    time.Time        `json:"last_seen"`
	TUF         wire.TUFVersions `json:"tuf"`
}

func (a *API) devices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.DeviceFilter{Tenant: q.Get("tenant"), Model: q.Get("model")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 || n > 100000 {
			writeError(w, http.StatusBadRequest, "limit must be a number between 0 and 100000")
			return
		}
		f.Limit = n
	}
	for _, v := range []string{f.Tenant, f.Model} {
		if v != "" && !wire.ValidID(v) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad filter value %q", v))
			return
		}
	}
	ds, err := a.opts.Devices.ListDevices(r.Context(), f)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing devices: "+err.Error())
		return
	}
	out := make([]Device, 0, len(ds))
	for _, d := range ds {
		out = append(out, Device{ID: d.ID, Tenant: d.Tenant, Model: d.Model, Hardware: d.Hardware, Version: d.Version,
			Slot: d.Slot, UpdateState: d.UpdateState, Online: d.Online, LastSeen: d.LastSeen, TUF: d.TUF})
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}
