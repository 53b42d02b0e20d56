package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

const token = "test-token-0123456789abcdef"

// newAPI serves a real SQLite store. The repository is never reached by
// these tests (they exercise auth, decoding and device listing), so an
// empty one that fails loudly stands in for it.
func newAPI(t *testing.T) (*httptest.Server, *store.SQLite) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv, st
}

type unreachableRepo struct{ t *testing.T }

func (u unreachableRepo) Handler() http.Handler { return http.NotFoundHandler() }
func (u unreachableRepo) Delegation(string) (string, []byte, error) {
	u.t.Error("repository reached")
	return "", nil, errors.New("unreachable")
}
func (u unreachableRepo) Publish(context.Context, tufrepo.PublishRequest) (*tufrepo.PublishResult, error) {
	u.t.Error("repository reached")
	return nil, errors.New("unreachable")
}
func (u unreachableRepo) Push(context.Context, tufrepo.PushRequest) (*tufrepo.PushResult, error) {
	u.t.Error("repository reached")
	return nil, errors.New("unreachable")
}
func (u unreachableRepo) Status() []tufrepo.RoleStatus { return nil }
func (u unreachableRepo) Revocations() ([]tufrepo.Revocation, error) {
	return nil, nil
}

func TestAuthRequired(t *testing.T) {
	srv, _ := newAPI(t)
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/v1/devices", "", 401},
		{"GET", "/v1/devices", "Bearer wrong", 401},
		{"GET", "/v1/devices", "Basic " + token, 401},
		{"GET", "/v1/firmware/delegation?target=x", "", 401},
		{"POST", "/v1/firmware", "", 401},
		{"POST", "/v1/tuf/push", "", 401},
		{"GET", "/v1/tuf/status", "", 401},
		{"GET", "/v1/devices", "Bearer " + token, 200},
		{"GET", "/healthz", "", 200},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.auth, resp.StatusCode, tc.want)
		}
	}
}

func TestDevicesListAndFilters(t *testing.T) {
	srv, st := newAPI(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, d := range []struct{ tenant, id, model string }{{"acme", "p1", "dt100"}, {"acme", "p2", "dt200"}, {"beta", "p3", "dt100"}} {
		err := st.UpsertState(ctx, d.tenant, wire.State{Schema: wire.SchemaVersion, Tenant: d.tenant, Device: d.id, Model: d.model,
			Hardware: "r1", Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now)
		if err != nil {
			t.Fatal(err)
		}
	}
	get := func(q string) (int, []Device) {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/devices"+q, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Devices []Device }
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Devices
	}
	for _, tc := range []struct {
		q    string
		code int
		n    int
	}{{"", 200, 3}, {"?tenant=acme", 200, 2}, {"?model=dt100", 200, 2}, {"?tenant=beta&model=dt200", 200, 0},
		{"?limit=1", 200, 1}, {"?limit=-1", 400, 0}, {"?limit=x", 400, 0}, {"?tenant=a/b", 400, 0}} {
		code, ds := get(tc.q)
		if code != tc.code || len(ds) != tc.n {
			t.Errorf("GET /v1/devices%s: %d with %d devices, want %d with %d", tc.q, code, len(ds), tc.code, tc.n)
		}
	}
}

func form(parts ...[2]string) (*multipart.Reader, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		w, _ := mw.CreateFormFile(p[0], p[0])
		io.WriteString(w, p[1])
	}
	mw.Close()
	return multipart.NewReader(bytes.NewReader(buf.Bytes()), mw.Boundary()), buf.Bytes()
}

func TestReadPublishForm(t *testing.T) {
	good := [][2]string{{"role", "publisher"}, {"metadata", "{}"}, {"signature", "c2ln"}, {"bundle", "tar bytes"}}
	mr, _ := form(good...)
	f, bundle, err := ReadPublishForm(mr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(bundle)
	if f.Role != "publisher" || string(f.Metadata) != "{}" || string(f.Signature) != "c2ln" || string(b) != "tar bytes" {
		t.Fatalf("decoded %+v and bundle %q", f, b)
	}
	for name, parts := range map[string][][2]string{
		"missing bundle":       good[:3],
		"parts out of order":   {good[1], good[0], good[2], good[3]},
		"oversized role":       {{"role", strings.Repeat("r", 200)}, good[1], good[2], good[3]},
		"oversized signature":  {good[0], good[1], {"signature", strings.Repeat("s", tufrepo.MaxSignatureBytes+1)}, good[3]},
		"unknown leading part": {{"junk", "x"}, good[0], good[1], good[2], good[3]},
		"empty":                {},
	} {
		mr, _ := form(parts...)
		if _, _, err := ReadPublishForm(mr); !errors.Is(err, ErrForm) {
			t.Errorf("%s: err = %v, want ErrForm", name, err)
		}
	}
}

func FuzzReadPublishForm(f *testing.F) {
	_, body := form([2]string{"role", "publisher"}, [2]string{"metadata", "{}"}, [2]string{"signature", "x"}, [2]string{"bundle", "y"})
	f.Add(body)
	f.Add([]byte("--b\r\n\r\n--b--"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The boundary is whatever the first line names, as for a real
		// request whose Content-Type the client chose.
		boundary := "b"
		if i := bytes.Index(b, []byte("\r\n")); i > 2 && bytes.HasPrefix(b, []byte("--")) {
			boundary = string(b[2:i])
		}
		mr := multipart.NewReader(bytes.NewReader(b), boundary)
		f, bundle, err := ReadPublishForm(mr)
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error %v does not wrap ErrForm", err)
			}
			return
		}
		if len(f.Role) > 128 || len(f.Metadata) > tufrepo.MaxMetadataBytes || len(f.Signature) > tufrepo.MaxSignatureBytes || bundle == nil {
			t.Fatalf("bounds not enforced: %d %d %d", len(f.Role), len(f.Metadata), len(f.Signature))
		}
	})
}

func TestReadPushForm(t *testing.T) {
	mr, _ := form([2]string{"reason", "CVE"}, [2]string{"root", "{}"}, [2]string{"publisher", "{}"})
	req, err := ReadPushForm(mr)
	if err != nil || req.Reason != "CVE" || len(req.Files) != 2 {
		t.Fatalf("ReadPushForm = %+v, %v", req, err)
	}
	for name, parts := range map[string][][2]string{
		"duplicate role":   {{"root", "{}"}, {"root", "{}"}},
		"oversized reason": {{"reason", strings.Repeat("r", 2000)}},
		"oversized file":   {{"root", strings.Repeat("x", tufrepo.MaxMetadataBytes+1)}},
	} {
		mr, _ := form(parts...)
		if _, err := ReadPushForm(mr); !errors.Is(err, ErrForm) {
			t.Errorf("%s: err = %v, want ErrForm", name, err)
		}
	}
}

func FuzzReadPushForm(f *testing.F) {
	_, body := form([2]string{"reason", "r"}, [2]string{"root", "{}"})
	f.Add(body)
	f.Fuzz(func(t *testing.T, b []byte) {
		boundary := "b"
		if i := bytes.Index(b, []byte("\r\n")); i > 2 && bytes.HasPrefix(b, []byte("--")) {
			boundary = string(b[2:i])
		}
		req, err := ReadPushForm(multipart.NewReader(bytes.NewReader(b), boundary))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error %v does not wrap ErrForm", err)
			}
			return
		}
		if len(req.Files) > tufrepo.MaxPushFiles || len(req.Reason) > 1024 {
			t.Fatal("bounds not enforced")
		}
	})
}

func createToken(t *testing.T, srv *httptest.Server, body string) (int, TokenInfo) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/tokens", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info TokenInfo
	_ = json.NewDecoder(resp.Body).Decode(&info)
	return resp.StatusCode, info
}

func do(t *testing.T, srv *httptest.Server, method, path, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPublisherTokens: the policy table against a scoped token, expiry and
// revocation.
func TestPublisherTokens(t *testing.T) {
	srv, st := newAPI(t)
	for _, bad := range []string{`{"role":"admin","models":["m"],"ttl":3600000000000}`, `{"role":"publisher","ttl":3600000000000}`,
		`{"role":"publisher","models":["a/b"],"ttl":3600000000000}`, `{"role":"publisher","models":["m"],"ttl":0}`, `{"role":"publisher","models":["m"],"ttl":1,"x":1}`, `nope`} {
		if code, _ := createToken(t, srv, bad); code != 400 {
			t.Errorf("token request %s: %d, want 400", bad, code)
		}
	}
	code, info := createToken(t, srv, `{"role":"publisher","models":["dt100"],"ttl":3600000000000,"description":"ci"}`)
	if code != 201 || !strings.HasPrefix(info.Token, "dtp_") {
		t.Fatalf("create token: %d %+v", code, info)
	}
	pub := info.Token
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/devices", 403},
		{"GET", "/v1/tokens", 403},
		{"POST", "/v1/tokens", 403},
		{"GET", "/v1/firmware/delegation?target=firmware/dt200/x.tar", 403},
		{"GET", "/v1/tuf/status", 200},
	} {
		if got := do(t, srv, tc.method, tc.path, pub); got != tc.want {
			t.Errorf("publisher %s %s: %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
	// The stored token is a hash, never the token.
	all, _ := st.ListTokens(context.Background())
	if len(all) != 1 || bytes.Contains(all[0].Hash, []byte(pub)) || len(all[0].Hash) != 32 {
		t.Fatalf("stored token %+v", all)
	}
	if got := do(t, srv, "DELETE", "/v1/tokens/"+info.ID, token); got != 200 {
		t.Fatalf("revoke: %d", got)
	}
	if got := do(t, srv, "GET", "/v1/tuf/status", pub); got != 401 {
		t.Fatalf("revoked token: %d, want 401", got)
	}
	// An expired token is refused too.
	h := sha256Sum("dtp_expired")
	if err := st.CreateToken(context.Background(), store.Token{ID: "old", Hash: h, Role: RolePublisher, Models: []string{"dt100"},
		Created: time.Now().Add(-2 * time.Hour), Expires: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got := do(t, srv, "GET", "/v1/tuf/status", "dtp_expired"); got != 401 {
		t.Fatalf("expired token: %d, want 401", got)
	}
}

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func FuzzDecodeTokenRequest(f *testing.F) {
	f.Add([]byte(`{"role":"publisher","models":["dt100"],"ttl":3600000000000}`))
	f.Add([]byte(`{"tenant":"acme","role":"viewer","ttl":3600000000000}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := DecodeTokenRequest(bytes.NewReader(b))
		if err == nil && (!auth.ValidRole(tr.Role) || (tr.Role == RolePublisher) != (len(tr.Models) > 0) ||
			(tr.Role != RolePublisher && tr.Tenant == "") || tr.TTL <= 0 || tr.TTL > MaxTokenTTL) {
			t.Fatalf("accepted %+v", tr)
		}
	})
}
