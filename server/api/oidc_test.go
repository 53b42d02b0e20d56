package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/auth/oidc"
	"github.com/dialtone-dev/dialtone/server/auth/oidc/oidctest"
	"github.com/dialtone-dev/dialtone/server/store"
)

// fakeIssuer links identities (issuer+subject) to users; a user marked
// secondFactor needs an MFA assertion.
type fakeIssuer struct {
	mu     sync.Mutex
	links  map[string]bool // issuer+" "+subject -> secondFactor
	issued []oidc.Identity
}

func (f *fakeIssuer) link(issuer, subject string, secondFactor bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[issuer+" "+subject] = secondFactor
}

func (f *fakeIssuer) IssueOIDCSession(_ context.Context, id oidc.Identity) (string, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sf, ok := f.links[id.Issuer+" "+id.Subject]
	switch {
	case !ok:
		return "", time.Time{}, fmt.Errorf("%s %s: %w", id.Issuer, id.Subject, oidc.ErrUnknownIdentity)
	case sf && !id.MFA():
		return "", time.Time{}, fmt.Errorf("amr %v: %w", id.AMR, oidc.ErrSecondFactor)
	}
	f.issued = append(f.issued, id)
	return "dts_session_of_" + id.Subject, time.Now().Add(12 * time.Hour), nil
}

type ssoEnv struct {
	srv    *httptest.Server
	op     *oidctest.OP
	issuer *fakeIssuer
}

// newSSO serves the API with SSO against a real provider.
func newSSO(t *testing.T) *ssoEnv {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	t.Cleanup(srv.Close)
	redirect := "http://" + srv.Listener.Addr().String() + "/v1/oidc/callback"
	op := oidctest.Start(t, oidctest.Client{ID: "dialtone", Secret: "sso-secret", RedirectURI: redirect})
	rp, err := oidc.New(oidc.Config{Issuer: op.Issuer, ClientID: "dialtone", ClientSecret: "sso-secret",
		RedirectURL: redirect, Key: bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	fi := &fakeIssuer{links: map[string]bool{}}
	h, err := NewOIDC(rp, fi, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, AdminToken: token, OIDC: h})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = a
	srv.Start()
	return &ssoEnv{srv: srv, op: op, issuer: fi}
}

// ssoLogin signs user in from start and returns the callback's answer.
func ssoLogin(t *testing.T, start, user string) (*http.Response, string) {
	t.Helper()
	browser := oidctest.Browser(t, "/v1/oidc/callback")
	cb := oidctest.SignIn(t, browser, start, user, oidctest.Password)
	return oidctest.Get(t, browser, cb.String())
}

func TestSSOLinkedIdentity(t *testing.T) {
	e := newSSO(t)
	e.issuer.link(e.op.Issuer, oidctest.OtherSubject, false)
	resp, body := ssoLogin(t, e.srv.URL+"/v1/oidc/login", oidctest.OtherUser)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("linked identity: %s %s", resp.Status, body)
	}
	var s OIDCSession
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Token != "dts_session_of_id2" || time.Until(s.Expires) < time.Hour {
		t.Fatalf("answer %s (%v)", body, err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	// The routes are public, the rest of /v1 is not.
	if code := do(t, e.srv, "GET", "/v1/devices", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/devices without a token: %d", code)
	}
}

func TestSSORefusals(t *testing.T) {
	e := newSSO(t)
	// Unknown: no user is linked to the admin's identity (the email, the
	// same in any case, is never the key).
	resp, body := ssoLogin(t, e.srv.URL+"/v1/oidc/login", oidctest.AdminUser)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no Dialtone user is linked") {
		t.Errorf("unknown identity: %s %s", resp.Status, body)
	}
	// Linked, but an admin who needs a second factor: the provider only
	// asserted a password (amr ["pwd"]).
	e.issuer.link(e.op.Issuer, oidctest.AdminSubject, true)
	resp, body = ssoLogin(t, e.srv.URL+"/v1/oidc/login", oidctest.AdminUser)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "second factor") {
		t.Errorf("admin without MFA: %s %s", resp.Status, body)
	}
	// Linked under another issuer: refused.
	e.issuer.link("https://other-idp.example", oidctest.OtherSubject, false)
	resp, body = ssoLogin(t, e.srv.URL+"/v1/oidc/login", oidctest.OtherUser)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("subject linked under another issuer: %s %s", resp.Status, body)
	}
	if len(e.issuer.issued) != 0 {
		t.Errorf("sessions issued: %v", e.issuer.issued)
	}
}

func TestSSOErrorsAreGeneric(t *testing.T) {
	e := newSSO(t)
	browser := oidctest.Browser(t, "/auth")
	resp, _ := oidctest.Get(t, browser, e.srv.URL+"/v1/oidc/login")
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	cb := e.srv.URL + "/v1/oidc/callback?" + url.Values{"state": {loc.Query().Get("state")},
		"error": {"server_error"}, "error_description": {"<script>internal detail</script>"}}.Encode()
	resp, body := oidctest.Get(t, browser, cb)
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "script") || strings.Contains(body, "server_error") {
		t.Errorf("provider error: %s %s", resp.Status, body)
	}
	// No state cookie at all.
	resp, body = oidctest.Get(t, oidctest.Browser(t, ""), e.srv.URL+"/v1/oidc/callback?state=x&code=y")
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(strings.TrimSpace(body), `{`) {
		t.Errorf("no cookie: %s %s", resp.Status, body)
	}
}

func TestSSOLoopback(t *testing.T) {
	e := newSSO(t)
	e.issuer.link(e.op.Issuer, oidctest.OtherSubject, false)
	verifier := strings.Repeat("k", 43)
	loopback := "http://127.0.0.1:53682/"
	start := e.srv.URL + "/v1/oidc/login?" + url.Values{"redirect_uri": {loopback},
		"code_challenge": {oidc.Challenge(verifier)}, "code_challenge_method": {"S256"}}.Encode()
	browser := oidctest.Browser(t, "/v1/oidc/callback")
	cb := oidctest.SignIn(t, browser, start, oidctest.OtherUser, oidctest.Password)
	// Stop at the loopback: nothing listens on it in this test.
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, body := oidctest.Get(t, browser, cb.String())
	to, err := resp.Location()
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(to.String(), loopback+"?code=") {
		t.Fatalf("callback of a CLI login: %s %s %v", resp.Status, body, to)
	}
	if strings.Contains(to.String(), "dts_") {
		t.Fatalf("the session token is in the redirect: %s", to)
	}
	redeem := func(code, v string) (*http.Response, string) {
		b, _ := json.Marshal(OIDCTokenRequest{Code: code, CodeVerifier: v})
		resp, err := http.Post(e.srv.URL+"/v1/oidc/token", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp, buf.String()
	}
	code := to.Query().Get("code")
	if resp, body := redeem(code, strings.Repeat("x", 43)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("wrong verifier: %s %s", resp.Status, body)
	}
	resp, body = redeem(code, verifier)
	var s OIDCSession
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || s.Token != "dts_session_of_id2" {
		t.Fatalf("redeem: %s %s", resp.Status, body)
	}
	if resp, body := redeem(code, verifier); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("second redeem: %s %s", resp.Status, body)
	}
}

func TestSSOLoginRejectsBadRedirect(t *testing.T) {
	e := newSSO(t)
	challenge := oidc.Challenge("v")
	for _, q := range []url.Values{
		{"redirect_uri": {"http://evil.example:80/"}, "code_challenge": {challenge}},
		{"redirect_uri": {"http://localhost:80/"}, "code_challenge": {challenge}},
		{"redirect_uri": {"http://127.0.0.1:80/x"}, "code_challenge": {challenge}},
		{"redirect_uri": {"http://127.0.0.1:80/"}},
		{"redirect_uri": {"http://127.0.0.1:80/"}, "code_challenge": {"short"}},
		{"redirect_uri": {"http://127.0.0.1:80/"}, "code_challenge": {challenge}, "code_challenge_method": {"plain"}},
	} {
		resp, body := oidctest.Get(t, oidctest.Browser(t, "/auth"), e.srv.URL+"/v1/oidc/login?"+q.Encode())
		if resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0 {
			t.Errorf("%v: %s %s", q, resp.Status, body)
		}
	}
}
