package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/store"
)

// tenantAPI serves a SQLite store with devices and alerts in acme and beta.
func tenantAPI(t *testing.T) (*httptest.Server, *store.SQLite) {
	t.Helper()
	srv, st := newAlertsAPI(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, d := range []struct{ tenant, id string }{{"acme", "a1"}, {"acme", "a2"}, {"beta", "b1"}} {
		if err := st.UpsertState(ctx, d.tenant, wire.State{Schema: wire.SchemaVersion, Tenant: d.tenant, Device: d.id, Model: "dt100",
			Hardware: "r1", Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AddAlert(ctx, store.Alert{ID: "al-" + d.id, Time: now, Tenant: d.tenant, Device: d.id, Kind: "acl-denied",
			Severity: store.AlertWarning, Source: "ingest", Message: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	return srv, st
}

// request sends method path with the bearer tok and decodes the answer
// into v (may be nil).
func request(t *testing.T, srv *httptest.Server, method, path, tok, body string, v any) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode, resp.Header
}

// TestTenantListings: a tenant's operator sees its tenant only, in every
// listing; naming another tenant is refused.
func TestTenantListings(t *testing.T) {
	srv, _ := tenantAPI(t)
	code, info := createToken(t, srv, `{"tenant":"acme","role":"viewer","ttl":3600000000000}`)
	if code != 201 || info.Tenant != "acme" || info.Role != "viewer" {
		t.Fatalf("create viewer token: %d %+v", code, info)
	}
	v := info.Token
	var dl DeviceList
	if code, _ := request(t, srv, "GET", "/v1/devices", v, "", &dl); code != 200 || len(dl.Devices) != 2 {
		t.Fatalf("viewer devices: %d %+v", code, dl)
	}
	for _, d := range dl.Devices {
		if d.Tenant != "acme" {
			t.Errorf("viewer of acme sees %s/%s", d.Tenant, d.ID)
		}
	}
	var al AlertList
	if code, _ := request(t, srv, "GET", "/v1/alerts", v, "", &al); code != 200 || len(al.Alerts) != 2 {
		t.Fatalf("viewer alerts: %d %+v", code, al)
	}
	var fs FleetSummary
	if code, _ := request(t, srv, "GET", "/v1/fleet/summary", v, "", &fs); code != 200 || fs.Totals.Devices != 2 {
		t.Fatalf("viewer summary: %d %+v", code, fs)
	}
	for _, path := range []string{"/v1/devices?tenant=beta", "/v1/alerts?tenant=beta", "/v1/fleet/summary?tenant=beta"} {
		if code, _ := request(t, srv, "GET", path, v, "", nil); code != 403 {
			t.Errorf("viewer %s: %d, want 403", path, code)
		}
	}
	// The platform admin sees both tenants.
	if code, _ := request(t, srv, "GET", "/v1/devices", token, "", &dl); code != 200 || len(dl.Devices) != 3 {
		t.Fatalf("platform devices: %d %d", code, len(dl.Devices))
	}
	// Another tenant's device is a missing one; an unknown one too.
	var e1, e2 errorBody
	c1, _ := request(t, srv, "GET", "/v1/devices/b1", v, "", &e1)
	c2, _ := request(t, srv, "GET", "/v1/devices/zz", v, "", &e2)
	if c1 != 404 || c2 != 404 || strings.ReplaceAll(e1.Error, "b1", "zz") != e2.Error {
		t.Fatalf("other tenant's device: %d %q; unknown: %d %q", c1, e1.Error, c2, e2.Error)
	}
	// A device the viewer sees but may not command: 403.
	if code, _ := request(t, srv, "POST", "/v1/devices/a1/cmd", v, `{"name":"check"}`, nil); code != 403 {
		t.Fatalf("viewer command: %d, want 403", code)
	}
}

// TestTokenScopes: who may mint which tokens, listing by tenant, and that a
// revoked token stops at once although tokens are cached.
func TestTokenScopes(t *testing.T) {
	srv, _ := tenantAPI(t)
	for _, bad := range []string{
		`{"role":"viewer","ttl":3600000000000}`,                                // no tenant
		`{"tenant":"acme","role":"viewer","models":["m"],"ttl":3600000000000}`, // models on a viewer
		`{"tenant":"a/b","role":"viewer","ttl":3600000000000}`,
		`{"tenant":"acme","role":"root","ttl":3600000000000}`,
		`{"tenant":"acme","role":"viewer","ttl":0}`,
		`{"tenant":"acme","role":"viewer","ttl":31708800000000001}`,
	} {
		if code, _ := createToken(t, srv, bad); code != 400 {
			t.Errorf("token request %s: %d, want 400", bad, code)
		}
	}
	_, adm := createToken(t, srv, `{"tenant":"acme","role":"admin","ttl":3600000000000}`)
	_, other := createToken(t, srv, `{"tenant":"beta","role":"viewer","ttl":3600000000000}`)
	_, ci := createToken(t, srv, `{"role":"publisher","models":["dt100"],"ttl":3600000000000}`)
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"tenant":"acme","role":"operator","ttl":3600000000000}`, 201},
		{`{"tenant":"acme","role":"admin","ttl":3600000000000}`, 201},
		{`{"tenant":"beta","role":"viewer","ttl":3600000000000}`, 403},
		{`{"tenant":"acme","role":"publisher","models":["dt100"],"ttl":3600000000000}`, 403},
		{`{"role":"publisher","models":["dt100"],"ttl":3600000000000}`, 403},
	} {
		if code, _ := request(t, srv, "POST", "/v1/tokens", adm.Token, tc.body, nil); code != tc.want {
			t.Errorf("tenant admin creates %s: %d, want %d", tc.body, code, tc.want)
		}
	}
	var list struct{ Tokens []TokenInfo }
	if code, _ := request(t, srv, "GET", "/v1/tokens", adm.Token, "", &list); code != 200 {
		t.Fatalf("list: %d", code)
	}
	for _, ti := range list.Tokens {
		if ti.Tenant != "acme" || ti.Token != "" {
			t.Errorf("tenant admin lists %+v", ti)
		}
	}
	if code, _ := request(t, srv, "GET", "/v1/tokens", token, "", &list); code != 200 || len(list.Tokens) != 5 {
		t.Fatalf("platform list: %d, %d tokens", code, len(list.Tokens))
	}
	// The tenant admin cannot revoke beta's token nor the CI token; they
	// are missing ones to it.
	for _, id := range []string{other.ID, ci.ID} {
		if code, _ := request(t, srv, "DELETE", "/v1/tokens/"+id, adm.Token, "", nil); code != 404 {
			t.Errorf("tenant admin revokes %s: %d, want 404", id, code)
		}
	}
	// Cached, then revoked: refused at once.
	if code, _ := request(t, srv, "GET", "/v1/devices", other.Token, "", nil); code != 200 {
		t.Fatalf("beta viewer: %d", code)
	}
	if code, _ := request(t, srv, "DELETE", "/v1/tokens/"+other.ID, token, "", nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := request(t, srv, "GET", "/v1/devices", other.Token, "", nil); code != 401 {
		t.Fatalf("revoked cached token: %d, want 401", code)
	}
	// The CI token publishes (past the gate: the empty form is a 400) and
	// reads the repository's status, and sees no device.
	if code, _ := request(t, srv, "POST", "/v1/firmware", ci.Token, "", nil); code != 400 {
		t.Errorf("CI publish: %d, want 400 (past authorization)", code)
	}
	if code, _ := request(t, srv, "GET", "/v1/devices", ci.Token, "", nil); code != 403 {
		t.Errorf("CI devices: %d, want 403", code)
	}
}

// TestHardening: security headers on every answer, no-store on /v1, a
// bound on JSON bodies.
func TestHardening(t *testing.T) {
	srv, _ := tenantAPI(t)
	for _, path := range []string{"/v1/devices", "/healthz", "/tuf/1.root.json", "/v1/nope"} {
		_, h := request(t, srv, "GET", path, token, "", nil)
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
			"Referrer-Policy": "no-referrer"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), v)
			}
		}
		if !strings.HasPrefix(h.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s: CSP %q", path, h.Get("Content-Security-Policy"))
		}
		if got := h.Get("Cache-Control"); (got == "no-store") != strings.HasPrefix(path, "/v1/") {
			t.Errorf("%s: Cache-Control %q", path, got)
		}
	}
	big := `{"tenant":"acme","role":"viewer","ttl":1,"description":"` + strings.Repeat("x", MaxJSONBodyBytes) + `"}`
	if code, _ := request(t, srv, "POST", "/v1/tokens", token, big, nil); code != 400 {
		t.Errorf("oversized body: %d, want 400", code)
	}
	var e errorBody
	if code, h := request(t, srv, "GET", "/v1/devices", "", "", &e); code != 401 || e.Error == "" || h.Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d %+v", code, e)
	}
}

// TestSessions: a session's principal acts with its roles in its tenants.
func TestSessions(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), t.TempDir()+"/db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := auth.Principal{Kind: auth.KindSession, ID: "u1", Tenants: map[string]string{"acme": auth.RoleOperator}}
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, AdminToken: token, Sessions: fakeSessions{"sess-1": p}})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	a.onAllow = func(pattern string, got auth.Principal) {
		if got.Kind != auth.KindSession || got.ID != "u1" {
			t.Errorf("principal %+v", got)
		}
		seen = append(seen, pattern)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	if code, _ := request(t, srv, "GET", "/v1/devices", "sess-1", "", nil); code != 200 {
		t.Fatalf("session: %d", code)
	}
	if code, _ := request(t, srv, "GET", "/v1/devices", "sess-2", "", nil); code != 401 {
		t.Fatalf("unknown session: %d", code)
	}
	if code, _ := request(t, srv, "GET", "/v1/tokens", "sess-1", "", nil); code != 403 {
		t.Fatalf("operator lists tokens: %d", code)
	}
	if !slices.Equal(seen, []string{"GET /v1/devices"}) {
		t.Fatalf("allowed %v", seen)
	}
}
