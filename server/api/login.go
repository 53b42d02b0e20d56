package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/auth"
)

// Operators' login, sessions and user management: the HTTP side of
// server/auth's Service, which decides everything.

// Accounts is what the API needs of server/auth's operator service.
type Accounts interface {
	Login(ctx context.Context, req auth.LoginRequest) (auth.Session, error)
	Logout(ctx context.Context, token string) error
	CreateUser(ctx context.Context, actor auth.Principal, nu auth.NewUser) (auth.UserInfo, error)
	ListUsers(ctx context.Context, actor auth.Principal) ([]auth.UserInfo, error)
	SetRole(ctx context.Context, actor auth.Principal, id, tenant, role string) (auth.UserInfo, error)
	RemoveRole(ctx context.Context, actor auth.Principal, id, tenant string) error
	EnrollTOTP(ctx context.Context, actor auth.Principal, id string) (auth.Enrollment, error)
	SetPassword(ctx context.Context, actor auth.Principal, id string, pc auth.PasswordChange) error
	LinkIdentity(ctx context.Context, actor auth.Principal, id string, ident auth.Identity) error
	UnlinkIdentity(ctx context.Context, actor auth.Principal, id string, ident auth.Identity) error
}

var (
	_ Accounts      = (*auth.Service)(nil)
	_ SessionIssuer = (*auth.Service)(nil)
)

// Bounds of the login and user request bodies. A password is at most
// auth.MaxPasswordLen bytes; JSON escapes may make it six times longer.
const (
	maxLoginBody = 8 << 10
	maxUserBody  = 16 << 10
	maxTenants   = 256
)

// LoginBody is the body of POST /v1/login.
type LoginBody struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	TOTP     string `json:"totp,omitempty"`
	Recovery string `json:"recovery,omitempty"`
}

// LoginAnswer is the answer of a successful login.
type LoginAnswer = auth.Session

// decodeStrict decodes exactly one JSON value of at most limit bytes from r
// into v, refusing unknown fields and trailing data.
func decodeStrict(r io.Reader, limit int64, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return fmt.Errorf("%w: reading body: %v", ErrForm, err)
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("%w: body exceeds %d bytes", ErrForm, limit)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrForm, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON object", ErrForm)
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// DecodeLoginBody reads and checks the form of a login request (not the
// name's syntax: an unknown name is refused like a wrong password).
func DecodeLoginBody(r io.Reader) (LoginBody, error) {
	var lb LoginBody
	if err := decodeStrict(r, maxLoginBody, &lb); err != nil {
		return LoginBody{}, err
	}
	switch {
	case lb.Name == "" || len(lb.Name) > 256:
		return LoginBody{}, fmt.Errorf("%w: name is required (at most 256 bytes)", ErrForm)
	case lb.Password == "" || len(lb.Password) > auth.MaxPasswordLen:
		return LoginBody{}, fmt.Errorf("%w: password is required (at most %d bytes)", ErrForm, auth.MaxPasswordLen)
	case lb.TOTP != "" && lb.Recovery != "":
		return LoginBody{}, fmt.Errorf("%w: give totp or recovery, not both", ErrForm)
	case lb.TOTP != "" && (len(lb.TOTP) != 6 || !isDigits(lb.TOTP)):
		return LoginBody{}, fmt.Errorf("%w: totp is 6 digits", ErrForm)
	case len(lb.Recovery) > 64:
		return LoginBody{}, fmt.Errorf("%w: recovery code too long", ErrForm)
	}
	return lb, nil
}

// UserBody is the body of POST /v1/users.
type UserBody = auth.NewUser

// DecodeUserBody reads and checks a user creation request.
func DecodeUserBody(r io.Reader) (UserBody, error) {
	var ub UserBody
	if err := decodeStrict(r, maxUserBody, &ub); err != nil {
		return UserBody{}, err
	}
	if !auth.ValidName(strings.ToLower(ub.Name)) {
		return UserBody{}, fmt.Errorf("%w: bad name %q (1-64 of a-z 0-9 . _ - @)", ErrForm, ub.Name)
	}
	if err := auth.CheckPassword(ub.Password); err != nil {
		return UserBody{}, fmt.Errorf("%w: %v", ErrForm, err)
	}
	if len(ub.Tenants) > maxTenants {
		return UserBody{}, fmt.Errorf("%w: more than %d tenants", ErrForm, maxTenants)
	}
	for t, r := range ub.Tenants {
		if err := checkMembership(t, r); err != nil {
			return UserBody{}, err
		}
	}
	return ub, nil
}

func checkMembership(tenant, role string) error {
	if !wire.ValidID(tenant) {
		return fmt.Errorf("%w: bad tenant %q", ErrForm, tenant)
	}
	if !auth.ValidRole(role) {
		return fmt.Errorf("%w: role %q: want one of %s", ErrForm, role, strings.Join(auth.Roles, ", "))
	}
	return nil
}

// RoleBody is the body of PUT /v1/users/{id}/tenants/{tenant}.
type RoleBody struct {
	Role string `json:"role"`
}

// DecodeRoleBody reads and checks a role grant.
func DecodeRoleBody(r io.Reader) (RoleBody, error) {
	var rb RoleBody
	if err := decodeStrict(r, 1<<10, &rb); err != nil {
		return RoleBody{}, err
	}
	if !auth.ValidRole(rb.Role) {
		return RoleBody{}, fmt.Errorf("%w: role %q: want one of %s", ErrForm, rb.Role, strings.Join(auth.Roles, ", "))
	}
	return rb, nil
}

// PasswordBody is the body of POST /v1/users/{id}/password. Current is
// required when users change their own password.
type PasswordBody struct {
	Password string `json:"password"`
	Current  string `json:"current,omitempty"`
}

// DecodePasswordBody reads and checks a password change.
func DecodePasswordBody(r io.Reader) (PasswordBody, error) {
	var pb PasswordBody
	if err := decodeStrict(r, maxLoginBody, &pb); err != nil {
		return PasswordBody{}, err
	}
	if err := auth.CheckPassword(pb.Password); err != nil {
		return PasswordBody{}, fmt.Errorf("%w: %v", ErrForm, err)
	}
	if len(pb.Current) > auth.MaxPasswordLen {
		return PasswordBody{}, fmt.Errorf("%w: current password too long", ErrForm)
	}
	return pb, nil
}

// IdentityBody is the body of POST /v1/users/{id}/identities: a single
// sign-on account to link.
type IdentityBody = auth.Identity

// DecodeIdentityBody reads and checks an identity to link.
func DecodeIdentityBody(r io.Reader) (IdentityBody, error) {
	var ib IdentityBody
	if err := decodeStrict(r, 4<<10, &ib); err != nil {
		return IdentityBody{}, err
	}
	if err := checkIdentity(ib); err != nil {
		return IdentityBody{}, err
	}
	return ib, nil
}

func checkIdentity(ib IdentityBody) error {
	switch {
	case ib.Issuer == "" || len(ib.Issuer) > 1024 || !strings.HasPrefix(ib.Issuer, "https://") && !strings.HasPrefix(ib.Issuer, "http://"):
		return fmt.Errorf("%w: issuer is the provider's URL (at most 1024 bytes)", ErrForm)
	case ib.Subject == "" || len(ib.Subject) > 255:
		return fmt.Errorf("%w: subject is required (at most 255 bytes)", ErrForm)
	case !utf8.ValidString(ib.Issuer + ib.Subject):
		return fmt.Errorf("%w: issuer and subject are UTF-8", ErrForm)
	}
	return nil
}

// DecodeEnrollBody reads the body of POST /v1/users/{id}/totp: empty or {}.
func DecodeEnrollBody(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 65))
	if err != nil {
		return fmt.Errorf("%w: reading body: %v", ErrForm, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	var empty struct{}
	return decodeStrict(bytes.NewReader(b), 64, &empty)
}

// accountError answers err of the accounts service.
func (a *API) accountError(w http.ResponseWriter, err error) {
	var lim *auth.LimitedError
	switch {
	case errors.As(err, &lim):
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(lim.RetryAfter.Seconds(), 1)))))
		writeError(w, http.StatusTooManyRequests, err.Error())
	case errors.Is(err, auth.ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many logins at once: try again shortly")
	case errors.Is(err, auth.ErrInvalidCredentials), errors.Is(err, auth.ErrSecondFactorRequired):
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, auth.ErrInvalidSession):
		w.Header().Set("WWW-Authenticate", `Bearer realm="dialtone"`)
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, auth.ErrForbidden):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, auth.ErrInvalid), errors.Is(err, auth.ErrWeakPassword), errors.Is(err, ErrForm):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, auth.ErrUserExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, auth.ErrNoUser):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "request ended")
	default:
		a.log.Error("accounts", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// accounts returns the accounts service, or answers 501 and nil.
func (a *API) accounts(w http.ResponseWriter) Accounts {
	if a.opts.Accounts == nil {
		writeError(w, http.StatusNotImplemented, "this server has no operator accounts")
		return nil
	}
	return a.opts.Accounts
}

// loginClient is the address login limits apply to: the client's, past
// trusted proxies.
func (a *API) loginClient(r *http.Request) string {
	c := a.clientAddr(r)
	if ip, _, ok := strings.Cut(c, " via "); ok {
		return ip
	}
	return c
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	lb, err := DecodeLoginBody(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	audit.SetActor(r.Context(), "user:"+lb.Name) // who tried, for the audit log; never the password
	se, err := acc.Login(r.Context(), auth.LoginRequest{Name: lb.Name, Password: lb.Password, TOTP: lb.TOTP,
		Recovery: lb.Recovery, Client: a.loginClient(r)})
	if err != nil {
		a.accountError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, se)
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !strings.HasPrefix(tok, auth.SessionPrefix) {
		a.accountError(w, auth.ErrInvalidSession)
		return
	}
	if err := acc.Logout(r.Context(), tok); err != nil {
		a.accountError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	ub, err := DecodeUserBody(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := acc.CreateUser(r.Context(), principal(r), ub)
	if err != nil {
		a.accountError(w, err)
		return
	}
	audit.SetTarget(r.Context(), "id="+u.ID)
	audit.SetChange(r.Context(), nil, u) // UserInfo holds no secret
	writeJSON(w, http.StatusCreated, u)
}

// UserList is the answer of GET /v1/users.
type UserList struct {
	Users []auth.UserInfo `json:"users"`
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	us, err := acc.ListUsers(r.Context(), principal(r))
	if err != nil {
		a.accountError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, UserList{Users: us})
}

func (a *API) setUserRole(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	rb, err := DecodeRoleBody(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := acc.SetRole(r.Context(), principal(r), r.PathValue("id"), r.PathValue("tenant"), rb.Role)
	if err != nil {
		a.accountError(w, err)
		return
	}
	audit.SetTenant(r.Context(), r.PathValue("tenant"))
	audit.SetChange(r.Context(), nil, u)
	writeJSON(w, http.StatusOK, u)
}

func (a *API) removeUserRole(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	id, tenant := r.PathValue("id"), r.PathValue("tenant")
	if err := acc.RemoveRole(r.Context(), principal(r), id, tenant); err != nil {
		a.accountError(w, err)
		return
	}
	audit.SetTenant(r.Context(), tenant)
	audit.SetChange(r.Context(), map[string]string{"tenant": tenant}, nil)
	writeJSON(w, http.StatusOK, map[string]string{"user": id, "removed_from": tenant})
}

func (a *API) enrollTOTP(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	if err := DecodeEnrollBody(r.Body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	e, err := acc.EnrollTOTP(r.Context(), principal(r), r.PathValue("id"))
	if err != nil {
		a.accountError(w, err)
		return
	}
	// Never the secret or the codes.
	audit.SetChange(r.Context(), nil, map[string]any{"totp": "enrolled", "recovery_codes": len(e.RecoveryCodes)})
	writeJSON(w, http.StatusCreated, e)
}

func (a *API) setUserPassword(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	pb, err := DecodePasswordBody(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	err = acc.SetPassword(r.Context(), principal(r), r.PathValue("id"),
		auth.PasswordChange{Password: pb.Password, Current: pb.Current, Client: a.loginClient(r)})
	if errors.Is(err, auth.ErrInvalidCredentials) {
		// The session is fine (no 401): the current password is not.
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	if err != nil {
		a.accountError(w, err)
		return
	}
	audit.SetChange(r.Context(), nil, map[string]string{"password": "set", "sessions": "ended"})
	writeJSON(w, http.StatusOK, map[string]string{"status": "password set; the user's sessions are ended"})
}

func (a *API) linkIdentity(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	ib, err := DecodeIdentityBody(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := acc.LinkIdentity(r.Context(), principal(r), r.PathValue("id"), ib); err != nil {
		a.accountError(w, err)
		return
	}
	audit.SetChange(r.Context(), nil, ib)
	writeJSON(w, http.StatusCreated, map[string]string{"user": r.PathValue("id"), "issuer": ib.Issuer, "subject": ib.Subject})
}

func (a *API) unlinkIdentity(w http.ResponseWriter, r *http.Request) {
	acc := a.accounts(w)
	if acc == nil {
		return
	}
	q := r.URL.Query()
	ib := IdentityBody{Issuer: q.Get("issuer"), Subject: q.Get("subject")}
	if err := checkIdentity(ib); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := acc.UnlinkIdentity(r.Context(), principal(r), r.PathValue("id"), ib); err != nil {
		a.accountError(w, err)
		return
	}
	audit.SetChange(r.Context(), ib, nil)
	writeJSON(w, http.StatusOK, map[string]string{"user": r.PathValue("id"), "unlinked": ib.Issuer + " " + ib.Subject})
}
