package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/dialtone-dev/dialtone/server/auth/oidc"
)

// Single sign-on (server/auth/oidc): public routes under /v1/oidc/, mounted
// by New next to /healthz, outside the authenticated routes table (their
// callers have no token yet).
//
//	GET  /v1/oidc/login     redirects to the identity provider; with
//	                        redirect_uri=http://127.0.0.1:PORT/ and
//	                        code_challenge=S256(verifier) the login ends at
//	                        a CLI's loopback listener
//	GET  /v1/oidc/callback  the provider's redirect back: answers
//	                        {"token","expires"}, or redirects a CLI login to
//	                        its loopback with ?code=HANDOFF
//	POST /v1/oidc/token     {"code","code_verifier"}: a CLI redeems its
//	                        hand-off code for {"token","expires"}
//
// Refusals answer a generic message; what went wrong, including anything
// the provider said, is logged.

// SessionIssuer turns a verified OIDC identity into a Dialtone session.
//
// An implementation must:
//   - find the user by the identity's Issuer and Subject together (an
//     admin links them to a user beforehand); never by Email, which the
//     provider may let its users change, and never create a user;
//   - refuse an identity linked to no user, or to a disabled user, with an
//     error wrapping oidc.ErrUnknownIdentity;
//   - for a user who must give a second factor at password logins (platform
//     and tenant admins, anyone enrolled in TOTP), issue a session only if
//     id.MFA() (the provider asserts MFA through amr, RFC 8176); otherwise
//     refuse with an error wrapping oidc.ErrSecondFactor: that user signs
//     in with password and TOTP instead;
//   - issue the same kind of session a password login does (same TTL,
//     revocation and audit), recording that it came from SSO.
type SessionIssuer interface {
	IssueOIDCSession(ctx context.Context, id oidc.Identity) (token string, expires time.Time, err error)
}

// OIDCSession answers a successful SSO login.
type OIDCSession struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// OIDCTokenRequest redeems a CLI's hand-off code.
type OIDCTokenRequest struct {
	Code         string `json:"code"`
	CodeVerifier string `json:"code_verifier"`
}

// maxOIDCTokenRequest bounds POST /v1/oidc/token's body.
const maxOIDCTokenRequest = 4 << 10

type oidcHandler struct {
	rp       *oidc.RP
	sessions SessionIssuer
	log      *slog.Logger
	mux      *http.ServeMux
}

// NewOIDC returns the handler of /v1/oidc/ (Options.OIDC). log may be nil.
func NewOIDC(rp *oidc.RP, sessions SessionIssuer, log *slog.Logger) (http.Handler, error) {
	if rp == nil || sessions == nil {
		return nil, errors.New("api: OIDC needs a relying party and a session issuer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &oidcHandler{rp: rp, sessions: sessions, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /v1/oidc/login", h.login)
	h.mux.HandleFunc("GET /v1/oidc/callback", h.callback)
	h.mux.HandleFunc("POST /v1/oidc/token", h.token)
	return h, nil
}

func (h *oidcHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *oidcHandler) login(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cli := oidc.CLI{RedirectURI: q.Get("redirect_uri"), Challenge: q.Get("code_challenge")}
	if m := q.Get("code_challenge_method"); m != "" && m != "S256" {
		writeError(w, http.StatusBadRequest, "code_challenge_method must be S256")
		return
	}
	to, err := h.rp.Begin(r.Context(), w, cli)
	switch {
	case errors.Is(err, oidc.ErrLoopback), errors.Is(err, oidc.ErrHandoff):
		writeError(w, http.StatusBadRequest, "redirect_uri must be http://127.0.0.1:<port>/ with a 43-character S256 code_challenge")
		return
	case err != nil:
		h.log.Error("oidc login: cannot start", "err", err)
		writeError(w, http.StatusBadGateway, "the identity provider is unavailable")
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}

func (h *oidcHandler) callback(w http.ResponseWriter, r *http.Request) {
	res, err := h.rp.Finish(r.Context(), w, r)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	id := res.Identity
	token, expires, err := h.sessions.IssueOIDCSession(r.Context(), id)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	h.log.Info("oidc sign-in", "issuer", id.Issuer, "subject", id.Subject, "amr", id.AMR, "cli", res.CLI.RedirectURI != "", "client", r.RemoteAddr)
	if res.CLI.RedirectURI == "" {
		writeJSON(w, http.StatusOK, OIDCSession{Token: token, Expires: expires.UTC()})
		return
	}
	code, err := h.rp.SealHandoff(token, expires.UTC(), res.CLI.Challenge)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	http.Redirect(w, r, res.CLI.RedirectURI+"?"+url.Values{"code": {code}}.Encode(), http.StatusFound)
}

// refuse logs a failed sign-in and answers a generic message for it.
func (h *oidcHandler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusUnauthorized, "single sign-on failed; start again"
	switch {
	case errors.Is(err, oidc.ErrState), errors.Is(err, oidc.ErrReplay):
		status, msg = http.StatusBadRequest, "this sign-in link is invalid, expired or already used; start again"
	case errors.Is(err, oidc.ErrUnknownIdentity):
		status, msg = http.StatusForbidden, "no Dialtone user is linked to this identity; ask an admin to link it"
	case errors.Is(err, oidc.ErrSecondFactor):
		status, msg = http.StatusForbidden, "this account needs a second factor that the identity provider did not assert; sign in with password and TOTP"
	case errors.Is(err, oidc.ErrDomain):
		status, msg = http.StatusForbidden, "this identity's domain may not sign in"
	case errors.Is(err, oidc.ErrProvider), errors.Is(err, oidc.ErrExchange),
		errors.Is(err, oidc.ErrIDToken), errors.Is(err, oidc.ErrNonce):
	default:
		status = http.StatusInternalServerError
	}
	h.log.Warn("oidc sign-in refused", "err", err, "status", status, "client", r.RemoteAddr)
	writeError(w, status, msg)
}

func (h *oidcHandler) token(w http.ResponseWriter, r *http.Request) {
	var req OIDCTokenRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxOIDCTokenRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "want a JSON body {code, code_verifier}")
		return
	}
	token, expires, err := h.rp.RedeemHandoff(req.Code, req.CodeVerifier)
	if err != nil {
		h.log.Warn("oidc hand-off refused", "err", err, "client", r.RemoteAddr)
		writeError(w, http.StatusBadRequest, "invalid, expired or already redeemed code")
		return
	}
	writeJSON(w, http.StatusOK, OIDCSession{Token: token, Expires: expires})
}
