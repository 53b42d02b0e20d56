// Package api owns the server's HTTP surface: the TUF repository under
// /tuf/, and the versioned operator and publisher API under /v1/. Handlers
// decode, authorise and delegate; they hold no business logic of their own.
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
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

// TokenStore is what the API needs to keep API tokens.
type TokenStore interface {
	CreateToken(ctx context.Context, t store.Token) error
	TokenByHash(ctx context.Context, hash []byte) (store.Token, error)
	TokenByID(ctx context.Context, id string) (store.Token, error)
	ListTokens(ctx context.Context) ([]store.Token, error)
	RevokeToken(ctx context.Context, id string, when time.Time) error
}

// Devices is what the API needs of the fleet store.
type Devices interface {
	ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error)
	Events(ctx context.Context, device string, limit int) ([]store.StoredEvent, error)
	Device(ctx context.Context, id string) (store.Device, error)
	FleetSummary(ctx context.Context, f store.SummaryFilter) ([]store.SummaryRow, error)
}

// Options configure the API.
type Options struct {
	Repo    Repository
	Devices Devices
	Tokens  TokenStore
	// Rollouts sets devices' desired versions; nil answers 501.
	Rollouts Rollouts
	// Alerts lists security alerts (GET /v1/alerts); nil answers 501.
	Alerts Alerts
	// AdminToken is the data directory's bootstrap admin token: a platform
	// admin, authorised for every /v1 call. Only its SHA-256 is kept.
	AdminToken string
	// Sessions authenticates operators' session tokens; nil: none.
	Sessions Sessions
	// Accounts logs operators in and manages them (login.go); nil: those
	// routes answer 501.
	Accounts Accounts
	// Audit keeps the audit log of changes (audit.go); nil: none recorded.
	Audit store.Audit
	// TrustedProxies are reverse proxies whose X-Forwarded-For names the
	// client; nil: the connection's address is the client's.
	TrustedProxies Proxies
	// OIDC serves single sign-on's public routes under /v1/oidc/ (NewOIDC,
	// oidc.go); nil: no SSO.
	OIDC http.Handler
	// Attest enrolls devices and judges their attestations (attest.go);
	// nil: those routes answer 501.
	Attest Attestation
	// Enrollment keeps enrollment grants and attestation history; set
	// with Attest.
	Enrollment store.Attestations
	// DeviceCA verifies the client certificates devices present on the
	// device routes (DeviceIdentity); nil: no device is recognised.
	DeviceCA DeviceVerifier
	// Config publishes devices' configuration (SIP profiles) as TUF
	// targets (config.go); nil: those routes answer 501.
	Config ConfigRepository
	// SIPCredentials keeps devices' SIP passwords as SIPBox encrypts them
	// (sipcred.go); nil (either): those routes answer 501. The device
	// route also needs Attest and DeviceCA.
	SIPCredentials store.SIPCredentials
	SIPBox         *sipsecret.Box
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
	tokens    tokenCache
	// deviceTenants caches the tenant of each device looked up (a device
	// never changes tenant).
	deviceTenants sync.Map
	// onAllow, when set (tests), is told of every request the auth
	// middleware lets through.
	onAllow func(pattern string, p auth.Principal)
	// auditLog counts failed audit appends (audit.go).
	auditLog auditState
}

// New builds the handler.
func New(o Options) (*API, error) {
	if o.Repo == nil || o.Devices == nil || o.Tokens == nil {
		return nil, errors.New("api: repository, device store and token store are required")
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
	tuf := transfer(http.StripPrefix("/tuf", o.Repo.Handler()))
	a.mux.Handle("GET /tuf/", tuf)
	a.mux.Handle("HEAD /tuf/", tuf)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if o.OIDC != nil {
		// Public: an SSO login has no token yet (oidc.go).
		a.mux.Handle("/v1/oidc/", o.OIDC)
	}
	for _, rt := range a.routes() {
		a.mux.Handle(rt.pattern, a.auth(rt, a.audited(rt.pattern, rt.h)))
	}
	return a, nil
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// Nothing the server answers is a page that loads anything.
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	if !strings.HasPrefix(r.URL.Path, "/tuf/") {
		// /tuf/ sets its own (transfer); an upload route extends these
		// (the auth middleware). Not every ResponseWriter supports
		// deadlines (httptest's recorder): then there are none.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(JSONReadTimeout))
		_ = rc.SetWriteDeadline(time.Now().Add(JSONWriteTimeout))
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		// API answers carry tenants' data and secrets (a new token): no
		// cache keeps them. /tuf/ keeps its own caching (ETags).
		h.Set("Cache-Control", "no-store")
	}
	a.mux.ServeHTTP(w, r)
}

// transfer lets a download run for up to TransferTimeout (the server has
// no WriteTimeout of its own; see server/daemon).
func transfer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(TransferTimeout))
		next.ServeHTTP(w, r)
	})
}

// errorBody is the one shape every error response has.
type errorBody struct {
	Error string `json:"error"`
	Check string `json:"check,omitempty"`
	// Code is a machine-readable reason on the device routes
	// (wire.SIPUntrusted…), for agents to act on.
	Code string `json:"code,omitempty"`
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

// Roles, as auth names them.
const (
	RoleAdmin     = auth.RoleAdmin
	RolePublisher = auth.RolePublisher
)

// route is a line of the routes table: the pattern, the one permission it
// needs (auth's policy table says which roles have it), how the middleware
// finds the tenant it touches, and the body limit (0: MaxJSONBodyBytes;
// bodyOwn: the handler bounds an upload itself).
type route struct {
	pattern string
	perm    auth.Permission
	tenant  tenantFrom
	body    int64
	h       http.HandlerFunc
}

// routes is the routes table: every /v1 endpoint, its permission and its
// tenant rule. openapi.yaml describes the same routes (a test holds them
// together), and the authorization matrix test is generated from both.
func (a *API) routes() []route {
	return []route{
		{"GET /v1/devices", auth.DevicesRead, fromSet, 0, a.devices},
		{"GET /v1/alerts", auth.AlertsRead, fromSet, 0, a.alerts},
		{"GET /v1/devices/{id}", auth.DevicesRead, fromDevice, 0, a.device},
		{"GET /v1/devices/{id}/events", auth.DevicesRead, fromDevice, 0, a.deviceEvents},
		{"PUT /v1/devices/{id}/desired", auth.RolloutsWrite, fromDevice, 0, a.setDesired},
		{"POST /v1/devices/{id}/cmd", auth.DevicesCommand, fromDevice, 0, a.deviceCommand},
		{"GET /v1/fleet/summary", auth.FleetRead, fromSet, 0, a.fleetSummary},
		{"GET /v1/firmware/delegation", auth.FirmwarePublish, fromNone, 0, a.delegation},
		{"POST /v1/firmware", auth.FirmwarePublish, fromNone, bodyOwn, a.publish},
		{"POST /v1/tuf/push", auth.TUFPush, fromNone, bodyOwn, a.push},
		{"GET /v1/tuf/status", auth.TUFRead, fromNone, 0, a.tufStatus},
		{"POST /v1/tokens", auth.TokensManage, fromSet, 0, a.createToken},
		{"GET /v1/tokens", auth.TokensManage, fromSet, 0, a.listTokens},
		{"DELETE /v1/tokens/{id}", auth.TokensManage, fromToken, 0, a.revokeToken},
		{"GET /v1/audit", auth.AuditRead, fromSet, 0, a.auditList},
		// Attestation (attest.go). Devices enroll and attest without an
		// API credential: the TPM's proofs are their credential.
		{"POST /v1/enroll", Public, fromNone, 0, a.enrollBegin},
		{"POST /v1/enroll/{id}", Public, fromNone, 0, a.enrollFinish},
		{"POST /v1/attest/nonce", Public, fromNone, 0, a.attestNonce},
		{"POST /v1/attest", Public, fromNone, maxAttestBody, a.attest},
		{"POST /v1/device-certificates", Public, fromNone, 0, a.deviceCertificate},
		{"POST /v1/enroll-grants", auth.DevicesEnroll, fromSet, 0, a.createGrant},
		{"GET /v1/enroll-grants", auth.DevicesEnroll, fromSet, 0, a.listGrants},
		{"GET /v1/devices/{id}/attestations", auth.DevicesRead, fromDevice, 0, a.attestations},
		{"GET /v1/devices/{id}/evidence", auth.DevicesRead, fromDevice, 0, a.evidence},
		{"GET /v1/audit/head", auth.AuditVerify, fromNone, 0, a.auditHead},
		// Provisioning (config.go, sipcred.go). A device fetches its SIP
		// credential with its attestation-issued certificate (mTLS), not
		// an API credential: public here, authenticated by the handler.
		{"GET /v1/config/delegation", auth.ConfigPublish, fromSet, 0, a.configDelegation},
		{"POST /v1/config", auth.ConfigPublish, fromSet, maxConfigBody, a.publishConfig},
		{"PUT /v1/devices/{id}/sip-credential", auth.SIPManage, fromDevice, maxSIPCredentialBody, a.setSIPCredential},
		{"DELETE /v1/devices/{id}/sip-credential", auth.SIPManage, fromDevice, 0, a.deleteSIPCredential},
		{"GET " + wire.SIPCredentialPath, Public, fromNone, 0, a.deviceSIPCredential},
		// Operators (login.go). The service checks the tenants a user
		// request names (body or path) against the caller's roles.
		{"POST /v1/login", Public, fromNone, 0, a.login},
		{"POST /v1/logout", Public, fromNone, 0, a.logout},
		{"POST /v1/users", auth.UsersManage, fromSet, 0, a.createUser},
		{"GET /v1/users", auth.UsersManage, fromSet, 0, a.listUsers},
		{"PUT /v1/users/{id}/tenants/{tenant}", auth.UsersManage, fromSet, 0, a.setUserRole},
		{"DELETE /v1/users/{id}/tenants/{tenant}", auth.UsersManage, fromSet, 0, a.removeUserRole},
		{"POST /v1/users/{id}/totp", auth.UsersManage, fromSet, 0, a.enrollTOTP},
		{"POST /v1/users/{id}/password", auth.UsersManage, fromSet, 0, a.setUserPassword},
		{"POST /v1/users/{id}/identities", auth.UsersManage, fromSet, 0, a.linkIdentity},
		{"DELETE /v1/users/{id}/identities", auth.UsersManage, fromSet, 0, a.unlinkIdentity},
	}
}

func (a *API) delegation(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Query().Get("target")
	if target == "" || len(target) > 512 {
		writeError(w, http.StatusBadRequest, "query parameter target is required")
		return
	}
	if p := principal(r); p.Models != nil && !tufrepo.InModels(target, p.Models) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("this token is scoped to models %v", p.Models))
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

// readPart reads the next part of a publish form, which must be name, and
// at most max bytes of it.
func readPart(mr *multipart.Reader, name string, max int64) ([]byte, error) {
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

// ReadPublishForm reads the leading parts of a publish upload in their
// fixed order (role, metadata, signature), each bounded, and returns the
// bundle part as a stream without reading it.
func ReadPublishForm(mr *multipart.Reader) (PublishForm, io.Reader, error) {
	var f PublishForm
	read := func(name string, max int64) ([]byte, error) { return readPart(mr, name, max) }
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
		Models: principal(r).Models,
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
	p := principal(r)
	req.Actor = p.String()
	req.Models = p.Models
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

// TokenRequest creates an API token: a role in a tenant, for its TTL.
// Publisher tokens name their models and may have no tenant (publishing is
// limited by models, not tenants); only platform admins make those.
type TokenRequest struct {
	Tenant      string        `json:"tenant,omitempty"`
	Role        string        `json:"role"`
	Models      []string      `json:"models,omitempty"`
	Description string        `json:"description,omitempty"`
	TTL         time.Duration `json:"ttl"`
}

// TokenInfo describes a token; Token is set only in the answer that
// creates it.
type TokenInfo struct {
	ID          string    `json:"id"`
	Token       string    `json:"token,omitempty"`
	Tenant      string    `json:"tenant,omitempty"`
	Role        string    `json:"role"`
	Models      []string  `json:"models,omitempty"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires"`
	Revoked     time.Time `json:"revoked,omitzero"`
}

// MaxTokenTTL bounds how long an API token lives.
const MaxTokenTTL = 366 * 24 * time.Hour

// DecodeTokenRequest reads and validates a token request.
func DecodeTokenRequest(r io.Reader) (TokenRequest, error) {
	var tr TokenRequest
	dec := json.NewDecoder(io.LimitReader(r, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil {
		return tr, fmt.Errorf("%w: %v", ErrForm, err)
	}
	if !auth.ValidRole(tr.Role) {
		return tr, fmt.Errorf("%w: role %q: want one of %s", ErrForm, tr.Role, strings.Join(auth.Roles, ", "))
	}
	if tr.Tenant != "" && !wire.ValidID(tr.Tenant) {
		return tr, fmt.Errorf("%w: bad tenant %q", ErrForm, tr.Tenant)
	}
	switch {
	case tr.Role == RolePublisher && (len(tr.Models) == 0 || len(tr.Models) > 64):
		return tr, fmt.Errorf("%w: a publisher token names 1 to 64 models", ErrForm)
	case tr.Role != RolePublisher && len(tr.Models) > 0:
		return tr, fmt.Errorf("%w: only publisher tokens name models", ErrForm)
	case tr.Role != RolePublisher && tr.Tenant == "":
		return tr, fmt.Errorf("%w: a %s token needs a tenant", ErrForm, tr.Role)
	}
	for _, m := range tr.Models {
		if !wire.ValidID(m) {
			return tr, fmt.Errorf("%w: bad model %q", ErrForm, m)
		}
	}
	if tr.TTL <= 0 || tr.TTL > MaxTokenTTL {
		return tr, fmt.Errorf("%w: ttl must be positive and at most %s", ErrForm, MaxTokenTTL)
	}
	if len(tr.Description) > 256 {
		return tr, fmt.Errorf("%w: description longer than 256 characters", ErrForm)
	}
	return tr, nil
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	tr, err := DecodeTokenRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := auth.CanGrant(principal(r), tr.Tenant, tr.Role); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	secret := make([]byte, 32)
	id := make([]byte, 6)
	if _, err := rand.Read(secret); err != nil {
		writeError(w, http.StatusInternalServerError, "no randomness")
		return
	}
	if _, err := rand.Read(id); err != nil {
		writeError(w, http.StatusInternalServerError, "no randomness")
		return
	}
	token := APITokenPrefix + hex.EncodeToString(secret)
	h := sha256.Sum256([]byte(token))
	now := time.Now().UTC().Truncate(time.Second)
	t := store.Token{ID: hex.EncodeToString(id), Hash: h[:], Tenant: tr.Tenant, Role: tr.Role, Models: tr.Models, Description: tr.Description,
		Created: now, Expires: now.Add(tr.TTL)}
	if err := a.opts.Tokens.CreateToken(r.Context(), t); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	a.log.Info("token created", "id", t.ID, "tenant", t.Tenant, "role", t.Role, "by", principal(r).String(), "models", t.Models, "expires", t.Expires)
	auditTokenCreated(r.Context(), t)
	info := tokenInfo(t)
	info.Token = token
	writeJSON(w, http.StatusCreated, info)
}

func tokenInfo(t store.Token) TokenInfo {
	return TokenInfo{ID: t.ID, Tenant: t.Tenant, Role: t.Role, Models: t.Models, Description: t.Description, Created: t.Created, Expires: t.Expires, Revoked: t.Revoked}
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.opts.Tokens.ListTokens(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]TokenInfo, 0, len(ts))
	set := tenantSet(r)
	for _, t := range ts {
		if set == nil || slices.Contains(set, t.Tenant) {
			out = append(out, tokenInfo(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	before := a.tokenState(r.Context(), id)
	err := a.opts.Tokens.RevokeToken(r.Context(), id, time.Now().UTC())
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no valid token "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	a.tokens.drop(id)
	audit.SetChange(r.Context(), before, a.tokenState(r.Context(), id))
	a.log.Info("token revoked", "id", id, "by", principal(r).String())
	writeJSON(w, http.StatusOK, map[string]string{"revoked": id})
}
