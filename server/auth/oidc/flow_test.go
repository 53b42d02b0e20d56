package oidc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/auth/oidc/oidctest"
)

const callbackPath = "/v1/oidc/callback"

// swapTransport records the id_token of every token response and, when
// substitute is set, replaces it: a provider (or a network attacker with
// the provider's signatures) handing the relying party someone else's
// valid ID token.
type swapTransport struct {
	mu         sync.Mutex
	last       string
	substitute string
}

func (s *swapTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/oauth/token") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.last, _ = m["id_token"].(string)
	if s.substitute != "" {
		m["id_token"] = s.substitute
	}
	s.mu.Unlock()
	if b, err = json.Marshal(m); err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func (s *swapTransport) lastIDToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *swapTransport) swap(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.substitute = tok
}

// testRP is a relying party served over HTTP: /login begins, the callback
// finishes and keeps the outcome for the test.
type testRP struct {
	srv  *httptest.Server
	tr   *swapTransport
	skew atomic.Int64 // added to the clock, in nanoseconds
	cfg  Config

	mu  sync.Mutex
	rp  *RP
	res Result
	err error
}

func newTestRP(t *testing.T) *testRP {
	t.Helper()
	trp := &testRP{srv: httptest.NewUnstartedServer(nil), tr: &swapTransport{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		to, err := trp.current().Begin(r.Context(), w, CLI{})
		if err != nil {
			t.Errorf("Begin: %v", err)
			http.Error(w, "begin", http.StatusInternalServerError)
			return
		}
		http.Redirect(w, r, to, http.StatusFound)
	})
	mux.HandleFunc("GET "+callbackPath, func(w http.ResponseWriter, r *http.Request) {
		res, err := trp.current().Finish(r.Context(), w, r)
		trp.mu.Lock()
		trp.res, trp.err = res, err
		trp.mu.Unlock()
		if err != nil {
			http.Error(w, "refused", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	trp.srv.Config.Handler = mux
	t.Cleanup(trp.srv.Close)
	return trp
}

func (trp *testRP) redirectURL() string {
	return "http://" + trp.srv.Listener.Addr().String() + callbackPath
}

// start builds the RP for client id at op and serves it.
func (trp *testRP) start(t *testing.T, op *oidctest.OP, id, secret string) {
	t.Helper()
	trp.cfg = Config{Issuer: op.Issuer, ClientID: id, ClientSecret: secret, RedirectURL: trp.redirectURL(),
		Key: bytes.Repeat([]byte{7}, 32), HTTPClient: &http.Client{Transport: trp.tr, Timeout: 10 * time.Second},
		Now: func() time.Time { return time.Now().Add(time.Duration(trp.skew.Load())) }}
	trp.replica(t)
	if err := trp.current().Discover(t.Context()); err != nil {
		t.Fatalf("discovery: %v", err)
	}
	trp.srv.Start()
}

// replica replaces the RP by a fresh one with the same configuration and
// key: another server replica, which shares no memory with the first.
func (trp *testRP) replica(t *testing.T) {
	t.Helper()
	rp, err := New(trp.cfg)
	if err != nil {
		t.Fatal(err)
	}
	trp.mu.Lock()
	trp.rp = rp
	trp.mu.Unlock()
}

func (trp *testRP) current() *RP {
	trp.mu.Lock()
	defer trp.mu.Unlock()
	return trp.rp
}

// outcome returns the last callback's result, and clears it.
func (trp *testRP) outcome() (Result, error) {
	trp.mu.Lock()
	defer trp.mu.Unlock()
	res, err := trp.res, trp.err
	trp.res, trp.err = Result{}, errors.New("no callback")
	return res, err
}

// world is a provider with two registered clients, each with its relying
// party.
type world struct {
	op   *oidctest.OP
	a, b *testRP
}

func newWorld(t *testing.T) *world {
	t.Helper()
	a, b := newTestRP(t), newTestRP(t)
	op := oidctest.Start(t,
		oidctest.Client{ID: "dialtone", Secret: "dialtone-secret", RedirectURI: a.redirectURL()},
		oidctest.Client{ID: "other-app", Secret: "other-secret", RedirectURI: b.redirectURL()})
	a.start(t, op, "dialtone", "dialtone-secret")
	b.start(t, op, "other-app", "other-secret")
	return &world{op: op, a: a, b: b}
}

// signIn runs a login at trp up to the provider's redirect to the callback
// and returns the browser and that callback URL.
func signIn(t *testing.T, trp *testRP, user string) (*http.Client, *url.URL) {
	t.Helper()
	browser := oidctest.Browser(t, callbackPath)
	cb := oidctest.SignIn(t, browser, trp.srv.URL+"/login", user, oidctest.Password)
	if cb.Path != callbackPath || cb.Query().Get("code") == "" {
		t.Fatalf("provider redirected to %s, want the callback with a code", cb)
	}
	return browser, cb
}

// login signs user in at trp through the whole flow.
func login(t *testing.T, trp *testRP, user string) (Result, error) {
	t.Helper()
	browser, cb := signIn(t, trp, user)
	oidctest.Get(t, browser, cb.String())
	return trp.outcome()
}

func TestLoginThroughProvider(t *testing.T) {
	w := newWorld(t)
	res, err := login(t, w.a, oidctest.AdminUser)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	id := res.Identity
	if id.Issuer != w.op.Issuer || id.Subject != oidctest.AdminSubject {
		t.Errorf("identity %+v, want issuer %s subject %s", id, w.op.Issuer, oidctest.AdminSubject)
	}
	if !slices.Contains(id.AMR, "pwd") || id.MFA() {
		t.Errorf("amr %v: want pwd and no MFA", id.AMR)
	}
	if id.AuthTime.IsZero() || time.Since(id.AuthTime) > time.Minute {
		t.Errorf("auth_time %v", id.AuthTime)
	}
	if res.CLI != (CLI{}) {
		t.Errorf("CLI %+v for a browser login", res.CLI)
	}
	res, err = login(t, w.a, oidctest.OtherUser)
	if err != nil || res.Identity.Subject != oidctest.OtherSubject {
		t.Fatalf("second user: %+v, %v", res.Identity, err)
	}
}

func TestTamperedState(t *testing.T) {
	w := newWorld(t)
	browser, cb := signIn(t, w.a, oidctest.AdminUser)
	q := cb.Query()
	q.Set("state", q.Get("state")+"x")
	bad := *cb
	bad.RawQuery = q.Encode()
	oidctest.Get(t, browser, bad.String())
	if _, err := w.a.outcome(); !errors.Is(err, ErrState) {
		t.Fatalf("tampered state: %v, want ErrState", err)
	}
	// The refusal cleared the cookie: the genuine callback now fails too.
	oidctest.Get(t, browser, cb.String())
	if _, err := w.a.outcome(); !errors.Is(err, ErrState) {
		t.Fatalf("callback after a refusal: %v, want ErrState", err)
	}
}

func TestTamperedCookie(t *testing.T) {
	w := newWorld(t)
	browser, cb := signIn(t, w.a, oidctest.AdminUser)
	u, _ := url.Parse(w.a.srv.URL)
	cs := browser.Jar.Cookies(u)
	if len(cs) != 1 || cs[0].Name != cookieName {
		t.Fatalf("cookies %v", cs)
	}
	// Re-sign nothing: change the payload (a longer expiry, say).
	payload, sig, _ := strings.Cut(cs[0].Value, ".")
	raw, _ := base64Decode(payload)
	raw = bytes.Replace(raw, []byte(`"e":`), []byte(`"e":9`), 1)
	browser.Jar.SetCookies(u, []*http.Cookie{{Name: cookieName, Value: base64Encode(raw) + "." + sig, Path: "/"}})
	oidctest.Get(t, browser, cb.String())
	if _, err := w.a.outcome(); !errors.Is(err, ErrState) {
		t.Fatalf("tampered cookie: %v, want ErrState", err)
	}
}

func TestExpiredLogin(t *testing.T) {
	w := newWorld(t)
	browser, cb := signIn(t, w.a, oidctest.AdminUser)
	w.a.skew.Store(int64(DefaultStateTTL + time.Second))
	oidctest.Get(t, browser, cb.String())
	if _, err := w.a.outcome(); !errors.Is(err, ErrState) {
		t.Fatalf("expired login: %v, want ErrState", err)
	}
}

func TestReplayedCallback(t *testing.T) {
	w := newWorld(t)
	browser, cb := signIn(t, w.a, oidctest.AdminUser)
	u, _ := url.Parse(w.a.srv.URL)
	cookies := browser.Jar.Cookies(u) // what an attacker who saw the request holds
	oidctest.Get(t, browser, cb.String())
	if _, err := w.a.outcome(); err != nil {
		t.Fatalf("first callback: %v", err)
	}
	// The same callback with the same cookie, on the same replica: the
	// state was consumed.
	browser.Jar.SetCookies(u, cookies)
	oidctest.Get(t, browser, cb.String())
	if _, err := w.a.outcome(); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay on the same replica: %v, want ErrReplay", err)
	}
	// On another replica, which has not seen the state: the provider
	// refuses the code a second time.
	w.a.replica(t)
	browser.Jar.SetCookies(u, cookies)
	oidctest.Get(t, browser, cb.String())
	if _, err := w.a.outcome(); !errors.Is(err, ErrExchange) {
		t.Fatalf("code reuse on another replica: %v, want ErrExchange", err)
	}
}

func TestWrongNonce(t *testing.T) {
	w := newWorld(t)
	if _, err := login(t, w.a, oidctest.AdminUser); err != nil {
		t.Fatal(err)
	}
	// A valid ID token for this client, from an earlier login: its nonce is
	// that login's.
	w.a.tr.swap(w.a.tr.lastIDToken())
	if _, err := login(t, w.a, oidctest.AdminUser); !errors.Is(err, ErrNonce) {
		t.Fatalf("earlier login's ID token: %v, want ErrNonce", err)
	}
}

func TestOtherAudience(t *testing.T) {
	w := newWorld(t)
	if _, err := login(t, w.b, oidctest.AdminUser); err != nil {
		t.Fatalf("login at the other client: %v", err)
	}
	// A valid ID token of the same provider, issued to another client.
	w.a.tr.swap(w.b.tr.lastIDToken())
	_, err := login(t, w.a, oidctest.AdminUser)
	if !errors.Is(err, ErrIDToken) || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("other client's ID token: %v, want ErrIDToken for the audience", err)
	}
}

func TestForgedIDToken(t *testing.T) {
	w := newWorld(t)
	if _, err := login(t, w.a, oidctest.AdminUser); err != nil {
		t.Fatal(err)
	}
	// The same token with its subject changed: the signature fails.
	parts := strings.Split(w.a.tr.lastIDToken(), ".")
	claims, _ := base64Decode(parts[1])
	claims = bytes.Replace(claims, []byte(`"sub":"id1"`), []byte(`"sub":"id2"`), 1)
	parts[1] = base64Encode(claims)
	w.a.tr.swap(strings.Join(parts, "."))
	if _, err := login(t, w.a, oidctest.AdminUser); !errors.Is(err, ErrIDToken) {
		t.Fatalf("forged ID token: %v, want ErrIDToken", err)
	}
}

func TestProviderError(t *testing.T) {
	w := newWorld(t)
	// Stop at the provider's authorization endpoint to learn the state.
	browser := oidctest.Browser(t, "/auth")
	resp, _ := oidctest.Get(t, browser, w.a.srv.URL+"/login")
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	cb := w.a.redirectURL() + "?" + url.Values{"state": {loc.Query().Get("state")}, "error": {"access_denied"},
		"error_description": {"<script>alert(1)</script>"}}.Encode()
	oidctest.Get(t, browser, cb)
	if _, err := w.a.outcome(); !errors.Is(err, ErrProvider) {
		t.Fatalf("provider error: %v, want ErrProvider", err)
	}
	if q := loc.Query(); q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" {
		t.Errorf("authorization request %s: want PKCE S256 and a nonce", loc)
	}
}
