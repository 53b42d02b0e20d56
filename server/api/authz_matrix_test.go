package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dialtone-dev/dialtone/server/attest"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
	"github.com/getkin/kin-openapi/openapi3"
)

// The authorization matrix: every operation of openapi.yaml (which
// TestOpenAPIMatchesRoutes holds equal to the routes table) × every kind of
// caller × the caller's own tenant and another, against a real SQLite store
// holding devices and tokens in two tenants.
//
// The expected verdict comes from auth's policy table (RoleHas and the
// permission's scope), through an oracle written apart from
// auth.Authorize. "Allowed" means the auth middleware let the request
// through (API.onAllow saw it) and the handler did not refuse it (401/403):
// a handler may still answer 400, 404 (no such target) or 501 (no broker),
// which are past authorization. "Denied" means 401 for a caller without a
// valid token, and 403 or 404 otherwise; a device or token of a tenant the
// caller cannot see must answer 404 exactly as a missing one does.

const (
	ownTenant   = "acme"
	otherTenant = "beta"
	ownDevice   = "p1"
	otherDevice = "q1"
)

// caller is one column of the matrix.
type caller struct {
	name  string
	token string // "" sends no Authorization header
	// p is who the caller is, for the oracle; authenticated false for the
	// callers that must get 401.
	p             auth.Principal
	authenticated bool
}

// quietRepo is a repository that answers nothing (the matrix tests the
// gate in front of it).
type quietRepo struct{}

func (quietRepo) Handler() http.Handler { return http.NotFoundHandler() }
func (quietRepo) Delegation(string) (string, []byte, error) {
	return "", nil, errors.New("no delegation")
}
func (quietRepo) Publish(context.Context, tufrepo.PublishRequest) (*tufrepo.PublishResult, error) {
	return nil, errors.New("not publishing")
}
func (quietRepo) Push(context.Context, tufrepo.PushRequest) (*tufrepo.PushResult, error) {
	return nil, errors.New("not pushing")
}
func (quietRepo) ConfigDelegation(string) (string, []byte, error) {
	return "", nil, errors.New("no config role")
}
func (quietRepo) PublishConfig(context.Context, tufrepo.ConfigPublishRequest) (*wire.ConfigResult, error) {
	return nil, errors.New("not publishing")
}
func (quietRepo) Status() []tufrepo.RoleStatus               { return nil }
func (quietRepo) Revocations() ([]tufrepo.Revocation, error) { return nil, nil }

// fakeSessions knows one session token.
type fakeSessions map[string]auth.Principal

func (f fakeSessions) AuthenticateSession(_ context.Context, tok string) (auth.Principal, error) {
	if p, ok := f[tok]; ok {
		return p, nil
	}
	return auth.Principal{}, errors.New("no session")
}

// expect is the oracle: may p use perm on tenant ("" for a platform-level
// use, "*" for some tenant of its own)? Written from the policy table
// alone, not from auth.Authorize.
func expect(c caller, perm auth.Permission, tenant string) bool {
	if !c.authenticated {
		return false
	}
	if c.p.Platform {
		return true
	}
	switch auth.ScopeOf(perm) {
	case auth.ScopePlatform:
		return false
	case auth.ScopeModels:
		for _, role := range c.p.Tenants {
			if auth.RoleHas(role, perm) {
				return true
			}
		}
		return false
	}
	if tenant == "*" {
		for t, role := range c.p.Tenants {
			if t != "" && auth.RoleHas(role, perm) {
				return true
			}
		}
		return false
	}
	role, ok := c.p.Tenants[tenant]
	return ok && tenant != "" && auth.RoleHas(role, perm)
}

// canSee: may c learn that a device (or token) of tenant exists?
func canSee(c caller, what tenantFrom, tenant string) bool {
	if what == fromToken {
		return expect(c, auth.TokensManage, tenant)
	}
	return expect(c, auth.DevicesRead, tenant)
}

func TestAuthzMatrix(t *testing.T) {
	doc, ops := loadOpenAPI(t)
	_ = doc
	routes := map[string]route{}
	for _, rt := range testRoutes(t) {
		routes[rt.pattern] = rt
	}

	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	for _, d := range []struct{ tenant, id string }{{ownTenant, ownDevice}, {otherTenant, otherDevice}} {
		if err := st.UpsertState(ctx, d.tenant, wire.State{Schema: wire.SchemaVersion, Tenant: d.tenant, Device: d.id, Model: "dt100",
			Hardware: "r1", Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now); err != nil {
			t.Fatal(err)
		}
	}
	mkToken := func(id, tenant, role string, models []string, expires time.Time, revoked bool) string {
		t.Helper()
		secret := APITokenPrefix + "matrix-" + id
		tok := store.Token{ID: id, Hash: sha256Sum(secret), Tenant: tenant, Role: role, Models: models, Created: now.Add(-time.Hour), Expires: expires}
		if err := st.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if revoked {
			if err := st.RevokeToken(ctx, id, now.Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		return secret
	}
	later := now.Add(time.Hour)
	tok := func(tenant, role string, models ...string) auth.Principal {
		return auth.Principal{Tenants: map[string]string{tenant: role}, Models: models}
	}
	session := auth.Principal{Kind: auth.KindSession, ID: "u1", Tenants: map[string]string{ownTenant: auth.RoleOperator, "gamma": auth.RoleAdmin}}
	callers := []caller{
		{"viewer", mkToken("viewer", ownTenant, auth.RoleViewer, nil, later, false), tok(ownTenant, auth.RoleViewer), true},
		{"operator", mkToken("operator", ownTenant, auth.RoleOperator, nil, later, false), tok(ownTenant, auth.RoleOperator), true},
		{"publisher (CI, no tenant)", mkToken("ci", "", auth.RolePublisher, []string{"dt100"}, later, false), tok("", auth.RolePublisher, "dt100"), true},
		{"publisher of acme", mkToken("pub", ownTenant, auth.RolePublisher, []string{"dt100"}, later, false), tok(ownTenant, auth.RolePublisher, "dt100"), true},
		{"admin", mkToken("admin", ownTenant, auth.RoleAdmin, nil, later, false), tok(ownTenant, auth.RoleAdmin), true},
		{"session (operator of acme, admin of gamma)", "session-token-0123456789", session, true},
		{"platform admin", token, auth.Principal{Platform: true}, true},
		{"no token", "", auth.Principal{}, false},
		{"unknown token", APITokenPrefix + "unknown", auth.Principal{}, false},
		{"revoked admin", mkToken("revoked", ownTenant, auth.RoleAdmin, nil, later, true), auth.Principal{}, false},
		{"expired admin", mkToken("expired", ownTenant, auth.RoleAdmin, nil, now.Add(-time.Minute), false), auth.Principal{}, false},
	}
	// Tokens the token routes act on, one per tenant. Revoking one is
	// allowed once; the handler answers 404 after, which is past the gate.
	victims := map[string]string{ownTenant: "victim-own", otherTenant: "victim-other"}
	for tenant, id := range victims {
		mkToken(id, tenant, auth.RoleViewer, nil, later, false)
	}

	svc, err := attest.NewService(attest.Options{Store: st, Targets: noTargets{}})
	if err != nil {
		t.Fatal(err)
	}
	box, err := sipsecret.New(bytes.Repeat([]byte{7}, sipsecret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Repo: quietRepo{}, Devices: st, Tokens: st, Alerts: st, AdminToken: token,
		Sessions: fakeSessions{"session-token-0123456789": session}, Attest: svc, Enrollment: st,
		Config: quietRepo{}, SIPCredentials: st, SIPBox: box})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		allowed bool
	)
	a.onAllow = func(string, auth.Principal) {
		mu.Lock()
		allowed = true
		mu.Unlock()
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)

	send := func(c caller, method, path string, body []byte, ctype string) (int, string, bool) {
		t.Helper()
		mu.Lock()
		allowed = false
		mu.Unlock()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e errorBody
		if resp.StatusCode >= 400 && (json.Unmarshal(b, &e) != nil || e.Error == "") {
			t.Errorf("%s %s: %d answer %q is not the error shape", method, path, resp.StatusCode, b)
		}
		mu.Lock()
		defer mu.Unlock()
		return resp.StatusCode, string(b), allowed
	}

	var cells, allows int
	for _, o := range ops {
		rt, ok := routes[o.pattern()]
		if !ok {
			t.Errorf("%s: in openapi.yaml, not in the routes table", o.pattern())
			continue
		}
		if rt.perm == Public {
			continue
		}
		if !auth.ValidPermission(rt.perm) {
			t.Errorf("%s: no policy for permission %q", o.pattern(), rt.perm)
			continue
		}
		body, ctype := exampleBody(o.op)
		for _, v := range variants(rt, o.op, body) {
			path, vbody := o.path, body
			switch rt.tenant {
			case fromDevice:
				path = strings.ReplaceAll(path, "{id}", map[string]string{ownTenant: ownDevice, otherTenant: otherDevice}[v.tenant])
			case fromToken:
				path = strings.ReplaceAll(path, "{id}", victims[v.tenant])
			case fromSet:
				path = strings.ReplaceAll(path, "{id}", "u1")
				path = strings.ReplaceAll(path, "{tenant}", v.tenant)
				if v.inBody {
					vbody = bytes.ReplaceAll(body, []byte(`"`+ownTenant+`"`), []byte(`"`+v.tenant+`"`))
				}
			}
			path += exampleQuery(o.op, v)
			for _, c := range callers {
				cells++
				code, answer, passed := send(c, o.method, path, vbody, ctype)
				want := expect(c, rt.perm, v.oracleTenant())
				got := passed && code != http.StatusUnauthorized && code != http.StatusForbidden
				name := fmt.Sprintf("%s %s as %s (%s)", o.method, path, c.name, v.name)
				if got != want {
					t.Errorf("%s: allowed %v (status %d, %s), want %v", name, got, code, strings.TrimSpace(answer), want)
					continue
				}
				if got {
					allows++
					continue
				}
				switch {
				case !c.authenticated && code != http.StatusUnauthorized:
					t.Errorf("%s: %d, want 401", name, code)
				case c.authenticated && code != http.StatusForbidden && code != http.StatusNotFound:
					t.Errorf("%s: %d, want 403 or 404", name, code)
				case c.authenticated && (rt.tenant == fromDevice || rt.tenant == fromToken) && !canSee(c, rt.tenant, v.tenant) && expect(c, rt.perm, "*"):
					// Someone who may use the route in some tenant is told
					// nothing of another tenant's device or token: the
					// answer of a missing one.
					missing := strings.ReplaceAll(o.path, "{id}", "nosuch")
					mcode, manswer, _ := send(c, o.method, missing+exampleQuery(o.op, v), vbody, ctype)
					id := map[string]string{ownTenant: ownDevice, otherTenant: otherDevice}[v.tenant]
					if rt.tenant == fromToken {
						id = victims[v.tenant]
					}
					if code != mcode || strings.ReplaceAll(answer, id, "nosuch") != manswer {
						t.Errorf("%s: %d %q; a missing one: %d %q", name, code, answer, mcode, manswer)
					}
				}
			}
		}
	}
	if cells == 0 {
		t.Fatal("empty matrix")
	}
	t.Logf("authorization matrix: %d operations × %d callers × tenant variants = %d cells, %d allowed, %d denied",
		len(ops), len(callers), cells, allows, cells-allows)
}

// variant is a row's tenant: the caller's own, another, or none.
type variant struct {
	name   string
	tenant string // ownTenant, otherTenant, or "" (no tenant named)
	inBody bool   // the tenant is in the request body (POST /v1/tokens)
}

// oracleTenant is the tenant the oracle judges: "" for a platform-level
// route, "*" for a listing that names no tenant.
func (v variant) oracleTenant() string {
	if v.name == "all" {
		return "*"
	}
	return v.tenant
}

func variants(rt route, op *openapi3.Operation, body []byte) []variant {
	own, other := variant{"own tenant", ownTenant, false}, variant{"other tenant", otherTenant, false}
	switch rt.tenant {
	case fromDevice, fromToken:
		return []variant{own, other}
	case fromSet:
		if op.Parameters.GetByInAndName("path", "tenant") != nil {
			return []variant{own, other}
		}
		if op.Parameters.GetByInAndName("query", "tenant") != nil {
			return []variant{{"all", "", false}, own, other}
		}
		if bytes.Contains(body, []byte(`"tenant"`)) {
			own.inBody, other.inBody = true, true
			return []variant{own, other}
		}
		return []variant{{"all", "", false}}
	}
	return []variant{{"platform", "", false}}
}

// exampleQuery builds the query of a request: the required parameters'
// examples, and the variant's tenant where the operation takes one.
func exampleQuery(op *openapi3.Operation, v variant) string {
	var q []string
	for _, pr := range op.Parameters {
		p := pr.Value
		if p.In != "query" {
			continue
		}
		switch {
		case p.Name == "tenant" && v.tenant != "" && !v.inBody:
			q = append(q, "tenant="+v.tenant)
		case p.Required && p.Example != nil:
			q = append(q, fmt.Sprintf("%s=%v", p.Name, p.Example))
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + strings.Join(q, "&")
}

// exampleBody returns the JSON example of op's request body, or an empty
// multipart body for an upload.
func exampleBody(op *openapi3.Operation) ([]byte, string) {
	if op.RequestBody == nil || op.RequestBody.Value == nil {
		return nil, ""
	}
	if mt := op.RequestBody.Value.Content.Get("application/json"); mt != nil {
		b, _ := json.Marshal(mt.Example)
		return b, "application/json"
	}
	return []byte("--x--\r\n"), "multipart/form-data; boundary=x"
}

// noTargets is a repository without firmware: the matrix judges no quote.
type noTargets struct{}

func (noTargets) TargetBySHA256(string, string) (attest.Target, bool) { return attest.Target{}, false }
