package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Authentication and authorization of /v1: who a request acts as
// (authenticate), and whether the route's permission lets it touch the
// tenant the request names (the auth middleware), decided by auth.Authorize
// from the routes table and auth's policy table. Handlers never check
// roles; list handlers pass tenantSet(r) to the store.

// Public marks a route that needs no authentication (login).
const Public auth.Permission = "public"

// tenantFrom says how the auth middleware finds the tenant a route touches.
type tenantFrom int

const (
	// fromNone: a platform-level route (firmware, TUF; scoped by the
	// principal's models where the request names a model).
	fromNone tenantFrom = iota
	// fromSet: a route over the tenants the principal has the permission
	// in (listings, tokens, users). A `tenant` query parameter or {tenant}
	// path segment must be one of them; a tenant in a request body is
	// checked by the handler's service against the principal (auth.CanGrant
	// for tokens). The set is in the context: tenantSet(r).
	fromSet
	// fromDevice: the tenant of the device {id} in the path. A device the
	// principal may not see answers 404, as a missing one does.
	fromDevice
	// fromToken: the tenant of the API token {id} in the path; the same
	// 404 rule.
	fromToken
)

func (t tenantFrom) String() string {
	return [...]string{"none", "set", "device", "token"}[t]
}

// Body limits. A JSON request body is small; routes with an upload bound
// their bodies themselves (bodyOwn).
const (
	MaxJSONBodyBytes = 64 << 10
	bodyOwn          = -1
)

// Timeouts of a request's body reading and answer writing, set per request
// (http.ResponseController) since one server carries 30-byte JSON calls,
// 512 MiB firmware uploads and firmware downloads to slow phones.
const (
	JSONReadTimeout  = 30 * time.Second
	JSONWriteTimeout = 60 * time.Second
	// TransferTimeout bounds a firmware upload (publish) or a download from
	// /tuf/: 512 MiB at 1.2 Mbit/s.
	TransferTimeout = 60 * time.Minute
)

// Sessions authenticates operators' bearer session tokens (server/auth's
// login service).
type Sessions interface {
	AuthenticateSession(ctx context.Context, token string) (auth.Principal, error)
}

// APITokenPrefix starts every API token; other bearer tokens are the
// bootstrap admin token or sessions.
const APITokenPrefix = "dtp_"

// errUnauthenticated is what authenticate returns for every failure, so
// that a caller learns nothing of why.
var errUnauthenticated = errors.New("missing, invalid, expired or revoked token")

// authzKey carries what the middleware decided into the handler.
type authzKey struct{}

type authzInfo struct {
	tenants []string // nil with all: every tenant
	all     bool
}

// principal returns who the request acts as.
func principal(r *http.Request) auth.Principal {
	p, _ := auth.FromContext(r.Context())
	return p
}

// tenantSet returns the tenants the request may touch with its route's
// permission, for store filters: nil for every tenant (a platform admin),
// else a non-nil set. Without a decision in the context it is empty: a
// handler mounted without the middleware sees nothing.
func tenantSet(r *http.Request) []string {
	if ai, ok := r.Context().Value(authzKey{}).(authzInfo); ok {
		if ai.all {
			return nil
		}
		return ai.tenants
	}
	return []string{}
}

// tokenCache keeps recently authenticated API tokens by hash for
// tokenCacheTTL, so that a busy CI pipeline or dashboard does not read the
// token table on every request. Revoking a token through this server drops
// it at once; a revocation made through another server sharing the store
// takes effect within tokenCacheTTL. Unknown tokens are not cached.
type tokenCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	p       auth.Principal
	expires time.Time // the token's own expiry
	until   time.Time // of the cache entry
}

const (
	tokenCacheTTL  = 5 * time.Second
	tokenCacheSize = 4096
)

func (c *tokenCache) get(h [sha256.Size]byte, now time.Time) (auth.Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[h]
	if !ok || !now.Before(e.until) || !now.Before(e.expires) {
		return auth.Principal{}, false
	}
	return e.p, true
}

func (c *tokenCache) put(h [sha256.Size]byte, e cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= tokenCacheSize {
		c.m = map[[sha256.Size]byte]cachedToken{}
	}
	c.m[h] = e
}

// drop forgets the token id.
func (c *tokenCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.m {
		if e.p.ID == id {
			delete(c.m, h)
		}
	}
}

// tokenPrincipal is who an API token acts as: its role in its tenant, or
// outside every tenant ("") for a CI publisher token of none.
func tokenPrincipal(t store.Token) auth.Principal {
	return auth.Principal{Kind: auth.KindToken, ID: t.ID, Tenants: map[string]string{t.Tenant: t.Role}, Models: t.Models}
}

// authenticate returns who the request's bearer token acts as: the data
// directory's bootstrap admin token (a platform admin), an API token
// (APITokenPrefix), or an operator's session.
func (a *API) authenticate(r *http.Request) (auth.Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || len(tok) > 512 {
		return auth.Principal{}, errUnauthenticated
	}
	h := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1 {
		return auth.Principal{Kind: auth.KindBootstrap, ID: "bootstrap", Platform: true}, nil
	}
	if !strings.HasPrefix(tok, APITokenPrefix) {
		if a.opts.Sessions == nil {
			return auth.Principal{}, errUnauthenticated
		}
		p, err := a.opts.Sessions.AuthenticateSession(r.Context(), tok)
		if err != nil {
			return auth.Principal{}, errUnauthenticated
		}
		return p, nil
	}
	now := time.Now()
	if p, ok := a.tokens.get(h, now); ok {
		return p, nil
	}
	t, err := a.opts.Tokens.TokenByHash(r.Context(), h[:])
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			a.log.Error("looking up token", "err", err)
		}
		return auth.Principal{}, errUnauthenticated
	}
	if !t.Revoked.IsZero() || !now.Before(t.Expires) || !auth.ValidRole(t.Role) {
		return auth.Principal{}, errUnauthenticated
	}
	p := tokenPrincipal(t)
	a.tokens.put(h, cachedToken{p: p, expires: t.Expires, until: now.Add(tokenCacheTTL)})
	return p, nil
}

// authorize decides a request to rt for p: the status and message of a
// refusal, or 0 and what the handler may touch.
func (a *API) authorize(r *http.Request, rt route, p auth.Principal) (int, string, authzInfo) {
	forbidden := func(err error) (int, string, authzInfo) {
		return http.StatusForbidden, err.Error(), authzInfo{}
	}
	switch rt.tenant {
	case fromNone:
		if err := auth.Authorize(p, rt.perm, ""); err != nil {
			return forbidden(err)
		}
		return 0, "", authzInfo{all: p.Platform}
	case fromSet:
		ts, all := auth.TenantsWith(p, rt.perm)
		if !all && len(ts) == 0 {
			return forbidden(fmt.Errorf("%w: %s has %s in no tenant", auth.ErrForbidden, p, rt.perm))
		}
		named := r.URL.Query()["tenant"]
		if t := r.PathValue("tenant"); t != "" {
			named = append(named, t)
		}
		for _, t := range named {
			if err := auth.Authorize(p, rt.perm, t); err != nil {
				return forbidden(err)
			}
		}
		return 0, "", authzInfo{tenants: ts, all: all}
	case fromDevice, fromToken:
		// Refused everywhere: refused here, without a lookup.
		if ts, all := auth.TenantsWith(p, rt.perm); !all && len(ts) == 0 {
			return forbidden(fmt.Errorf("%w: %s has %s in no tenant", auth.ErrForbidden, p, rt.perm))
		}
		id := r.PathValue("id")
		what := "device"
		if rt.tenant == fromToken {
			what = "valid token"
		}
		if !wire.ValidID(id) && rt.tenant == fromDevice {
			return http.StatusBadRequest, fmt.Sprintf("bad device id %q", id), authzInfo{}
		}
		tenant, err := a.tenantOf(r.Context(), rt.tenant, id)
		notFound := fmt.Sprintf("no %s %s", what, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return http.StatusNotFound, notFound, authzInfo{}
		case err != nil:
			a.log.Error("looking up a tenant", "of", what, "id", id, "err", err)
			return http.StatusInternalServerError, "looking up the " + what, authzInfo{}
		}
		if err := auth.Authorize(p, rt.perm, tenant); err != nil {
			// Only a principal that may see the thing learns that it
			// exists: anyone else gets the answer of a missing one.
			see := auth.DevicesRead
			if rt.tenant == fromToken {
				see = auth.TokensManage
			}
			if tenant != "" && auth.Authorize(p, see, tenant) == nil {
				return forbidden(err)
			}
			return http.StatusNotFound, notFound, authzInfo{}
		}
		return 0, "", authzInfo{tenants: []string{tenant}, all: p.Platform}
	}
	return forbidden(fmt.Errorf("%w: route %s has no tenant rule", auth.ErrForbidden, rt.pattern))
}

// tenantOf looks up the tenant of the device or token id.
func (a *API) tenantOf(ctx context.Context, from tenantFrom, id string) (string, error) {
	if from == fromToken {
		t, err := a.opts.Tokens.TokenByID(ctx, id)
		return t.Tenant, err
	}
	if t, ok := a.deviceTenants.Load(id); ok {
		return t.(string), nil
	}
	d, err := a.opts.Devices.Device(ctx, id)
	if err != nil {
		return "", err
	}
	// A device's tenant never changes (the store refuses it, ErrConflict):
	// it may be kept for the life of the server.
	a.deviceTenants.Store(id, d.Tenant)
	return d.Tenant, nil
}

// auth is the middleware of every /v1 route: it authenticates the caller
// (401), authorizes the route's permission on the tenant the request
// touches (403, or 404 for a thing of a tenant the caller may not see),
// bounds the request body and its timing, and hands the handler the
// principal and the tenants it may touch.
func (a *API) auth(rt route, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.body != bodyOwn {
			limit := rt.body
			if limit == 0 {
				limit = MaxJSONBodyBytes
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		if rt.perm == Public {
			next.ServeHTTP(w, r)
			return
		}
		p, err := a.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dialtone"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		code, msg, ai := a.authorize(r, rt, p)
		if code != 0 {
			writeError(w, code, msg)
			return
		}
		if rt.body == bodyOwn {
			// An upload, by an authorized caller: longer than ServeHTTP's
			// JSON deadlines.
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(TransferTimeout))
			_ = rc.SetWriteDeadline(time.Now().Add(TransferTimeout))
		}
		if a.onAllow != nil {
			a.onAllow(rt.pattern, p)
		}
		ctx := context.WithValue(auth.WithPrincipal(r.Context(), p), authzKey{}, ai)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// UnguardedHandler returns the handler of the route pattern as the routes
// table has it, without authentication, authorization, the audit hook, the
// body limit or the security headers: the reference of the authorization
// benchmark (hack/bench authz), which measures what the guard costs. Never
// serve it. Listings through it see no tenant (tenantSet fails closed).
func (a *API) UnguardedHandler(pattern string) (http.Handler, bool) {
	for _, rt := range a.routes() {
		if rt.pattern == pattern {
			return rt.h, true
		}
	}
	return nil, false
}
