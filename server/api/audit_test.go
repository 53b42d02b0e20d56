package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/rollout"
	"github.com/dialtone-dev/dialtone/server/store"
)

// nopPublisher is a broker that takes every message.
type nopPublisher struct{}

func (nopPublisher) Publish(string, []byte, bool, byte) error { return nil }

// failingAudit is an audit log whose appends fail.
type failingAudit struct{ store.Audit }

func (failingAudit) AppendAudit(context.Context, audit.Entry) (audit.Entry, error) {
	return audit.Entry{}, errors.New("disk on fire")
}

// syncBuffer is a log sink the server and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type auditServer struct {
	srv *httptest.Server
	st  *store.SQLite
	api *API
	log *syncBuffer
}

// newAuditAPI serves the fleet of fleet_test.go with rollouts, tokens and
// the audit log in one SQLite store; wrap, when set, wraps the audit log.
func newAuditAPI(t *testing.T, wrap func(store.Audit) store.Audit) *auditServer {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var al store.Audit = st
	if wrap != nil {
		al = wrap(st)
	}
	logs := &syncBuffer{}
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, Rollouts: rollout.New(st, nopPublisher{}, nil),
		Audit: al, AdminToken: token, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	fleet(t, st)
	return &auditServer{srv: srv, st: st, api: a, log: logs}
}

// call makes a request with bearer tok and decodes a 2xx answer into v.
func (as *auditServer) call(t *testing.T, tok, method, path, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, as.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := as.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func (as *auditServer) entries(t *testing.T, tok, query string) []audit.Entry {
	t.Helper()
	var page AuditPage
	if code := as.call(t, tok, "GET", "/v1/audit"+query, "", &page); code != http.StatusOK {
		t.Fatalf("GET /v1/audit%s: %d", query, code)
	}
	return page.Entries
}

func TestAuditRecordsChanges(t *testing.T) {
	as := newAuditAPI(t, nil)

	// Reads and refused changes record nothing.
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/devices", "", 200},
		{"GET", "/v1/devices/p1", "", 200},
		{"GET", "/v1/tokens", "", 200},
		{"PUT", "/v1/devices/nosuch/desired", `{"version":"1.1.0"}`, 404},
		{"PUT", "/v1/devices/p1/desired", `{"version":"not a version"}`, 400},
		{"POST", "/v1/tokens", `{"role":"wizard"}`, 400},
	} {
		if code := as.call(t, token, c.method, c.path, c.body, nil); code != c.want {
			t.Fatalf("%s %s = %d, want %d", c.method, c.path, code, c.want)
		}
	}
	if es := as.entries(t, token, ""); len(es) != 0 {
		t.Fatalf("reads and refusals recorded %d entries: %+v", len(es), es)
	}

	// Two desired versions, a token created and revoked.
	for _, v := range []string{"1.1.0", "1.2.0"} {
		if code := as.call(t, token, "PUT", "/v1/devices/p1/desired", `{"version":"`+v+`"}`, nil); code != 200 {
			t.Fatalf("PUT desired %s: %d", v, code)
		}
	}
	var info TokenInfo
	if code := as.call(t, token, "POST", "/v1/tokens", `{"tenant":"acme","role":"operator","ttl":3600000000000,"description":"ops"}`, &info); code != http.StatusCreated {
		t.Fatalf("POST /v1/tokens: %d", code)
	}
	if code := as.call(t, token, "DELETE", "/v1/tokens/"+info.ID, "", nil); code != 200 {
		t.Fatalf("DELETE token: %d", code)
	}

	es := as.entries(t, token, "")
	if len(es) != 4 {
		t.Fatalf("%d entries, want 4: %+v", len(es), es)
	}
	type doc map[string]any
	decode := func(raw json.RawMessage) doc {
		if raw == nil {
			return nil
		}
		var d doc
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("document %s: %v", raw, err)
		}
		return d
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) || e.Actor != "bootstrap:bootstrap" || e.ActorKind != "bootstrap" || e.Tenant != "acme" ||
			!strings.HasPrefix(e.Remote, "127.0.0.1:") || e.Time.IsZero() {
			t.Errorf("entry %d: %+v", i+1, e)
		}
	}
	d1, d2 := es[0], es[1]
	if d1.Action != "PUT /v1/devices/{id}/desired" || d1.Target != "id=p1" || d1.Status != 200 {
		t.Errorf("desired entry: %+v", d1)
	}
	if b, a := decode(d1.Before), decode(d1.After); b["version"] != "" || b["device"] != "p1" || a["version"] != "1.1.0" {
		t.Errorf("first desired: before %s after %s", d1.Before, d1.After)
	}
	if b, a := decode(d2.Before), decode(d2.After); b["version"] != "1.1.0" || a["version"] != "1.2.0" {
		t.Errorf("second desired: before %s after %s", d2.Before, d2.After)
	}
	created, revoked := es[2], es[3]
	if created.Action != "POST /v1/tokens" || created.Target != "id="+info.ID || created.Status != http.StatusCreated || created.Before != nil {
		t.Errorf("token created: %+v", created)
	}
	if a := decode(created.After); a["id"] != info.ID || a["role"] != "operator" || a["tenant"] != "acme" {
		t.Errorf("token created: after %s", created.After)
	}
	if revoked.Action != "DELETE /v1/tokens/{id}" || revoked.Target != "id="+info.ID {
		t.Errorf("token revoked: %+v", revoked)
	}
	if b, a := decode(revoked.Before), decode(revoked.After); b["revoked"] != nil || a["revoked"] == nil {
		t.Errorf("token revoked: before %s after %s", revoked.Before, revoked.After)
	}
	all, _ := json.Marshal(es)
	if info.Token == "" || bytes.Contains(all, []byte(info.Token)) || bytes.Contains(all, []byte(strings.TrimPrefix(info.Token, APITokenPrefix))) {
		t.Error("the audit log holds the token's secret")
	}

	// The chain verifies against the head, and the head was logged.
	var head AuditHead
	if code := as.call(t, token, "GET", "/v1/audit/head", "", &head); code != 200 {
		t.Fatalf("GET /v1/audit/head: %d", code)
	}
	if p := append(audit.Verify(es), audit.CheckHead(es, head.Head, head.Head)...); p != nil || head.Seq != 4 || head.AppendFailures != 0 {
		t.Errorf("head %+v: %v", head, p)
	}
	if !strings.Contains(as.log.String(), "msg=\"audit appended\" seq=4 hash=") {
		t.Errorf("the head was not logged:\n%s", as.log.String())
	}
}

func TestAuditTokenActorAndTenants(t *testing.T) {
	as := newAuditAPI(t, nil)
	var acme, beta TokenInfo
	for _, c := range []struct {
		body string
		into *TokenInfo
	}{
		{`{"tenant":"acme","role":"admin","ttl":3600000000000}`, &acme},
		{`{"tenant":"beta","role":"admin","ttl":3600000000000}`, &beta},
	} {
		if code := as.call(t, token, "POST", "/v1/tokens", c.body, c.into); code != http.StatusCreated {
			t.Fatalf("POST /v1/tokens: %d", code)
		}
	}
	if code := as.call(t, acme.Token, "PUT", "/v1/devices/p2/desired", `{"version":"1.1.0"}`, nil); code != 200 {
		t.Fatalf("acme admin PUT desired: %d", code)
	}
	if code := as.call(t, beta.Token, "PUT", "/v1/devices/b1/desired", `{"version":"1.1.0"}`, nil); code != 200 {
		t.Fatalf("beta admin PUT desired: %d", code)
	}
	// Another tenant's device: refused, not recorded.
	if code := as.call(t, beta.Token, "PUT", "/v1/devices/p2/desired", `{"version":"1.0.0"}`, nil); code/100 == 2 {
		t.Fatalf("beta admin set an acme device: %d", code)
	}

	es := as.entries(t, acme.Token, "")
	if len(es) != 2 || es[0].Tenant != "acme" || es[1].Tenant != "acme" {
		t.Fatalf("acme's view: %+v", es)
	}
	if e := es[1]; e.Actor != "token:"+acme.ID || e.ActorKind != "token" || e.Target != "id=p2" {
		t.Errorf("acme's change: %+v", e)
	}
	if code := as.call(t, acme.Token, "GET", "/v1/audit?tenant=beta", "", nil); code != http.StatusForbidden {
		t.Errorf("acme admin read beta's log: %d", code)
	}
	if code := as.call(t, acme.Token, "GET", "/v1/audit/head", "", nil); code != http.StatusForbidden {
		t.Errorf("a tenant admin read the whole chain's head: %d", code)
	}
	if es := as.entries(t, token, "?tenant=beta"); len(es) != 2 || es[1].Actor != "token:"+beta.ID {
		t.Errorf("platform view of beta: %+v", es)
	}

	// Pages.
	var seqs []uint64
	after := ""
	for {
		var page AuditPage
		if code := as.call(t, token, "GET", "/v1/audit?limit=2"+after, "", &page); code != 200 {
			t.Fatalf("page: %d", code)
		}
		for _, e := range page.Entries {
			seqs = append(seqs, e.Seq)
		}
		if page.Next == 0 {
			break
		}
		after = "&after=" + strconv.FormatUint(page.Next, 10)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4}) {
		t.Errorf("paged seqs = %v", seqs)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?after=-1", "?after=x", "?tenant=a%00b"} {
		if code := as.call(t, token, "GET", "/v1/audit"+q, "", nil); code != http.StatusBadRequest {
			t.Errorf("GET /v1/audit%s = %d, want 400", q, code)
		}
	}
}

// TestAuditAppendFailure: the change stands, the failure is logged with
// the entry and counted, and the head reports the count.
func TestAuditAppendFailure(t *testing.T) {
	as := newAuditAPI(t, func(a store.Audit) store.Audit { return failingAudit{a} })
	if code := as.call(t, token, "PUT", "/v1/devices/p1/desired", `{"version":"1.1.0"}`, nil); code != 200 {
		t.Fatalf("PUT desired with a failing audit log: %d", code)
	}
	if n := as.api.AuditFailures(); n != 1 {
		t.Errorf("AuditFailures = %d, want 1", n)
	}
	var head AuditHead
	if code := as.call(t, token, "GET", "/v1/audit/head", "", &head); code != 200 || head.AppendFailures != 1 {
		t.Errorf("head %+v (%d), want append_failures 1", head, code)
	}
	logs := as.log.String()
	if !strings.Contains(logs, "level=ERROR msg=\"audit append failed") || !strings.Contains(logs, `target="id=p1"`) {
		t.Errorf("failure not logged with its entry:\n%s", logs)
	}
}

func TestAuditOff(t *testing.T) {
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/v1/audit", "/v1/audit/head"} {
		req := httptest.NewRequest("GET", p, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		a.ServeHTTP(w, req)
		if w.Code != http.StatusNotImplemented {
			t.Errorf("GET %s without an audit log = %d, want 501", p, w.Code)
		}
	}
}

func TestAuditLogin(t *testing.T) {
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := &API{opts: Options{Audit: st}, log: slog.New(slog.DiscardHandler)}
	login := a.audited("POST /v1/login", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Name, Password string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		audit.SetActor(r.Context(), req.Name)
		switch req.Password {
		case "right":
			writeJSON(w, http.StatusOK, map[string]string{"token": "s3cret"})
		case "slow down":
			writeError(w, http.StatusTooManyRequests, "later")
		default:
			writeError(w, http.StatusUnauthorized, "no")
		}
	}))
	for _, pw := range []string{"right", "wrong", "slow down"} {
		w := httptest.NewRecorder()
		login.ServeHTTP(w, httptest.NewRequest("POST", "/v1/login", strings.NewReader(`{"name":"alice","password":"`+pw+`"}`)))
	}
	es, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Status != 200 || es[1].Status != 401 {
		t.Fatalf("login entries: %+v", es)
	}
	for _, e := range es {
		if e.Action != "login" || e.Actor != "alice" || e.Before != nil || e.After != nil {
			t.Errorf("login entry %+v", e)
		}
	}
}

func TestClientAddr(t *testing.T) {
	a := &API{opts: Options{TrustedProxies: Proxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}
	for _, c := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"192.0.2.1:1234", []string{"203.0.113.9"}, "192.0.2.1:1234"}, // not a proxy: its header is not believed
		{"10.1.2.3:443", nil, "10.1.2.3:443"},
		{"10.1.2.3:443", []string{"203.0.113.9"}, "203.0.113.9 via 10.1.2.3:443"},
		{"10.1.2.3:443", []string{"198.51.100.1, 203.0.113.9, 10.9.9.9"}, "203.0.113.9 via 10.1.2.3:443"},
		{"10.1.2.3:443", []string{"198.51.100.1", "203.0.113.9"}, "203.0.113.9 via 10.1.2.3:443"},
		{"10.1.2.3:443", []string{"10.5.5.5"}, "10.5.5.5 via 10.1.2.3:443"},
		{"10.1.2.3:443", []string{"garbage"}, "10.1.2.3:443"},
		{"[::1]:443", []string{"::ffff:203.0.113.9"}, "203.0.113.9 via [::1]:443"},
	} {
		r := httptest.NewRequest("POST", "/v1/tokens", nil)
		r.RemoteAddr = c.remote
		for _, h := range c.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := a.clientAddr(r); got != c.want {
			t.Errorf("clientAddr(%s, %q) = %q, want %q", c.remote, c.xff, got, c.want)
		}
	}
}

func TestWildcards(t *testing.T) {
	for p, want := range map[string]string{
		"/v1/devices":                  "",
		"/v1/devices/{id}/desired":     "id",
		"/v1/a/{x}/b/{rest...}":        "x rest",
		"/v1/{$}":                      "",
		"/v1/tenants/{t}/users/{name}": "t name",
	} {
		if got := strings.Join(wildcards(p), " "); got != want {
			t.Errorf("wildcards(%s) = %q, want %q", p, got, want)
		}
	}
	if got := clean("a\x00b\xffc" + strings.Repeat("é", 400)); strings.ContainsRune(got, 0) || len(got) > 512 || !strings.HasPrefix(got, "a\uFFFDb\uFFFDc") {
		t.Errorf("clean = %q", got)
	}
}

// TestStatusWriter: a handler that writes without WriteHeader answered 200;
// informational headers do not count.
func TestStatusWriter(t *testing.T) {
	w := &statusWriter{ResponseWriter: httptest.NewRecorder()}
	if w.code() != 200 {
		t.Errorf("nothing written: %d", w.code())
	}
	w.WriteHeader(http.StatusEarlyHints)
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte("x"))
	if w.code() != http.StatusCreated {
		t.Errorf("code = %d, want 201", w.code())
	}
	if http.NewResponseController(w).Flush() != nil {
		t.Error("Flush does not reach the recorder")
	}
}
