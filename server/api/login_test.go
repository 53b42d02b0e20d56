package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/store"
)

// loginStore is what the login tests need of a store.
type loginStore interface {
	Devices
	TokenStore
	store.Users
}

// testStore is every store interface the API's store-backed tests use;
// SQLite and PostgreSQL both satisfy it.
type testStore interface {
	loginStore
	sipStore
}

// forEachLoginStore runs fn on a fresh SQLite store and a fresh
// PostgreSQL schema.
func forEachLoginStore(t *testing.T, fn func(t *testing.T, st loginStore)) {
	forEachStore(t, "dialtone_api_test_", func(t *testing.T, st testStore) { fn(t, st) })
}

// forEachStore runs fn on a fresh SQLite store and on a fresh PostgreSQL
// schema named prefix plus random hex (DIALTONE_TEST_POSTGRES, default the
// local trust-auth server), dropped afterwards.
func forEachStore(t *testing.T, prefix string, fn func(t *testing.T, st testStore)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("DIALTONE_TEST_POSTGRES")
		if dsn == "" {
			dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
		}
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		schema := prefix + hex.EncodeToString(b)
		st, err := store.OpenPostgres(t.Context(), dsn, store.WithSchema(schema))
		if err != nil {
			t.Fatalf("OpenPostgres: %v (start PostgreSQL on 127.0.0.1:5432 with trust auth, or set DIALTONE_TEST_POSTGRES)", err)
		}
		t.Cleanup(func() {
			st.Close()
			conn, err := pgx.Connect(context.Background(), dsn)
			if err != nil {
				t.Errorf("dropping %s: %v", schema, err)
				return
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`); err != nil {
				t.Errorf("dropping %s: %v", schema, err)
			}
		})
		fn(t, st)
	})
}

type loginServer struct {
	srv *httptest.Server
	svc *auth.Service
}

// newLoginServer serves the API with the accounts service on st, on
// 127.0.0.1, so that clients can come from other loopback addresses.
func newLoginServer(t *testing.T, st loginStore, opts ...auth.Option) *loginServer {
	t.Helper()
	svc, err := auth.New(st, append([]auth.Option{auth.WithParams(auth.Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, AdminToken: token, Sessions: svc, Accounts: svc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &loginServer{srv: srv, svc: svc}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
}

// call sends a JSON request and decodes a JSON answer into v (may be nil).
func (ls *loginServer) call(t *testing.T, c *http.Client, method, path, tok string, body any, v any) (int, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, ls.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: decoding %q: %v", method, path, b, err)
		}
	}
	if resp.StatusCode >= 400 {
		var e errorBody
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: %d answer %q is not the error shape", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, resp.Header
}

const userPW = "a long enough password"

func (ls *loginServer) createUser(t *testing.T, body UserBody) auth.UserInfo {
	t.Helper()
	var u auth.UserInfo
	if code, _ := ls.call(t, http.DefaultClient, "POST", "/v1/users", token, body, &u); code != http.StatusCreated {
		t.Fatalf("creating %s: %d", body.Name, code)
	}
	return u
}

func TestLoginAPI(t *testing.T) {
	forEachLoginStore(t, func(t *testing.T, st loginStore) {
		ls := newLoginServer(t, st)
		c := http.DefaultClient
		vera := ls.createUser(t, UserBody{Name: "vera", Password: userPW, Tenants: map[string]string{"acme": "viewer"}})
		adam := ls.createUser(t, UserBody{Name: "adam", Password: userPW, Tenants: map[string]string{"acme": "admin"}})
		pat := ls.createUser(t, UserBody{Name: "pat", Password: userPW, Platform: true})
		login := func(b LoginBody) (int, LoginAnswer) {
			var se LoginAnswer
			code, _ := ls.call(t, c, "POST", "/v1/login", "", b, &se)
			return code, se
		}

		// Password only: a viewer gets a session; admins do not.
		code, se := login(LoginBody{Name: "vera", Password: userPW})
		if code != http.StatusOK || se.UserID != vera.ID || len(se.Token) != 68 {
			t.Fatalf("viewer login: %d %+v", code, se)
		}
		// A viewer's session does not manage users (policy), but is a
		// session: 403, not 401.
		if code, _ := ls.call(t, c, "GET", "/v1/users", se.Token, nil, nil); code != http.StatusForbidden {
			t.Fatalf("viewer listing users: %d", code)
		}
		for _, name := range []string{"adam", "pat"} {
			if code, _ := login(LoginBody{Name: name, Password: userPW}); code != http.StatusUnauthorized {
				t.Fatalf("%s, password only: %d", name, code)
			}
		}

		// Enroll pat (platform admin) through the API, with the bootstrap
		// token; then pat logs in with a TOTP code and manages users.
		var enr auth.Enrollment
		if code, _ := ls.call(t, c, "POST", "/v1/users/"+pat.ID+"/totp", token, nil, &enr); code != http.StatusCreated || len(enr.RecoveryCodes) != 10 {
			t.Fatalf("enrolling: %d %+v", code, enr)
		}
		totp, err := auth.TOTPCode(enr.Secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		code, se = login(LoginBody{Name: "pat", Password: userPW, TOTP: totp})
		if code != http.StatusOK {
			t.Fatalf("password + TOTP: %d", code)
		}
		patToken := se.Token
		var list UserList
		if code, _ := ls.call(t, c, "GET", "/v1/users", patToken, nil, &list); code != http.StatusOK || len(list.Users) != 3 {
			t.Fatalf("platform admin listing users: %d %+v", code, list)
		}
		// The code again: replayed, refused.
		if code, _ := login(LoginBody{Name: "pat", Password: userPW, TOTP: totp}); code != http.StatusUnauthorized {
			t.Fatalf("replayed TOTP: %d", code)
		}
		// A wrong code.
		wrong := "000000"
		if wrong == totp {
			wrong = "999999"
		}
		if code, _ := login(LoginBody{Name: "pat", Password: userPW, TOTP: wrong}); code != http.StatusUnauthorized {
			t.Fatalf("wrong TOTP: %d", code)
		}
		// A recovery code, twice.
		if code, _ := login(LoginBody{Name: "pat", Password: userPW, Recovery: enr.RecoveryCodes[3]}); code != http.StatusOK {
			t.Fatalf("recovery code: %d", code)
		}
		if code, _ := login(LoginBody{Name: "pat", Password: userPW, Recovery: enr.RecoveryCodes[3]}); code != http.StatusUnauthorized {
			t.Fatalf("recovery code used twice: %d", code)
		}

		// The tenant admin, enrolled by the platform admin's session.
		if code, _ := ls.call(t, c, "POST", "/v1/users/"+adam.ID+"/totp", patToken, nil, &enr); code != http.StatusCreated {
			t.Fatalf("enrolling adam: %d", code)
		}
		totp, _ = auth.TOTPCode(enr.Secret, time.Now())
		code, se = login(LoginBody{Name: "adam", Password: userPW, TOTP: totp})
		if code != http.StatusOK {
			t.Fatalf("tenant admin login: %d", code)
		}
		adamToken := se.Token
		// It grants in its tenant, not in another.
		var u auth.UserInfo
		if code, _ := ls.call(t, c, "PUT", "/v1/users/"+vera.ID+"/tenants/acme", adamToken, RoleBody{Role: "operator"}, &u); code != http.StatusOK || u.Tenants["acme"] != "operator" {
			t.Fatalf("grant in own tenant: %d %+v", code, u)
		}
		if code, _ := ls.call(t, c, "PUT", "/v1/users/"+vera.ID+"/tenants/beta", adamToken, RoleBody{Role: "viewer"}, nil); code != http.StatusForbidden {
			t.Fatalf("grant in another tenant: %d", code)
		}
		if code, _ := ls.call(t, c, "POST", "/v1/users", adamToken, UserBody{Name: "x", Password: userPW, Platform: true, Tenants: map[string]string{"acme": "viewer"}}, nil); code != http.StatusForbidden {
			t.Fatalf("tenant admin making a platform admin: %d", code)
		}
		if code, _ := ls.call(t, c, "POST", "/v1/users", adamToken, UserBody{Name: "vera", Password: userPW, Tenants: map[string]string{"acme": "viewer"}}, nil); code != http.StatusConflict {
			t.Fatalf("taken name: %d", code)
		}
		if code, _ := ls.call(t, c, "DELETE", "/v1/users/"+vera.ID+"/tenants/acme", adamToken, nil, nil); code != http.StatusOK {
			t.Fatalf("revoke: %d", code)
		}
		if code, _ := ls.call(t, c, "DELETE", "/v1/users/"+vera.ID+"/tenants/acme", adamToken, nil, nil); code != http.StatusNotFound {
			t.Fatalf("revoke again: %d", code)
		}
		if code, _ := ls.call(t, c, "POST", "/v1/users/nosuch/password", patToken, PasswordBody{Password: "another long password"}, nil); code != http.StatusNotFound {
			t.Fatalf("password of nobody: %d", code)
		}

		// A new password ends vera's sessions.
		_, se = login(LoginBody{Name: "vera", Password: userPW})
		if code, _ := ls.call(t, c, "POST", "/v1/users/"+vera.ID+"/password", patToken, PasswordBody{Password: "another long password"}, nil); code != http.StatusOK {
			t.Fatalf("setting a password: %d", code)
		}
		if code, _ := ls.call(t, c, "POST", "/v1/logout", se.Token, nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("logout of an ended session: %d", code)
		}

		// Logout revokes.
		if code, _ := ls.call(t, c, "POST", "/v1/logout", adamToken, nil, nil); code != http.StatusOK {
			t.Fatalf("logout: %d", code)
		}
		if code, _ := ls.call(t, c, "GET", "/v1/users", adamToken, nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("after logout: %d", code)
		}
		if code, _ := ls.call(t, c, "POST", "/v1/logout", token, nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("logout with the bootstrap token: %d", code)
		}

		// Malformed bodies.
		for _, b := range []string{`{"name":"vera"}`, `{"name":"vera","password":"x","extra":1}`, `{"name":"vera","password":"x"} {}`,
			`{"name":"vera","password":"x","totp":"12345a"}`, `{"name":"vera","password":"x","totp":"123456","recovery":"a"}`} {
			resp, err := http.Post(ls.srv.URL+"/v1/login", "application/json", bytes.NewReader([]byte(b)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("login body %s: %d, want 400", b, resp.StatusCode)
			}
		}
	})
}

// TestSessionExpiry: a session ends after its lifetime.
func TestSessionExpiry(t *testing.T) {
	forEachLoginStore(t, func(t *testing.T, st loginStore) {
		ls := newLoginServer(t, st, auth.WithSessionTTL(time.Second))
		// A viewer's session probes: 403 while valid, 401 after.
		ls.createUser(t, UserBody{Name: "val", Password: userPW, Tenants: map[string]string{"acme": "viewer"}})
		var se LoginAnswer
		if code, _ := ls.call(t, http.DefaultClient, "POST", "/v1/login", "", LoginBody{Name: "val", Password: userPW}, &se); code != http.StatusOK {
			t.Fatalf("login: %d", code)
		}
		if code, _ := ls.call(t, http.DefaultClient, "GET", "/v1/users", se.Token, nil, nil); code != http.StatusForbidden {
			t.Fatalf("valid session: %d", code)
		}
		time.Sleep(time.Until(se.Expires) + 10*time.Millisecond)
		if code, _ := ls.call(t, http.DefaultClient, "GET", "/v1/users", se.Token, nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("expired session: %d", code)
		}
	})
}

// burst sends n login attempts from client, concurrently, and counts the
// answers by status; every 429 must carry a positive Retry-After.
func burst(t *testing.T, ls *loginServer, client *http.Client, n int, body func(i int) LoginBody) map[int]int {
	t.Helper()
	var (
		mu     sync.Mutex
		counts = map[int]int{}
		wg     sync.WaitGroup
		next   atomic.Int64
	)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				b, _ := json.Marshal(body(i))
				resp, err := client.Post(ls.srv.URL+"/v1/login", "application/json", bytes.NewReader(b))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
						t.Errorf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
					}
				}
				mu.Lock()
				counts[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}

// TestBruteForce: 1,000 wrong passwords in a burst against one account,
// then 1,000 across accounts, each from one address. Both are limited
// before any hashing; the real user logs in from another address right
// after; and the server answers others fast throughout.
func TestBruteForce(t *testing.T) {
	forEachLoginStore(t, func(t *testing.T, st loginStore) {
		ls := newLoginServer(t, st, auth.WithParams(auth.Params{Memory: 8192, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}))
		ls.createUser(t, UserBody{Name: "vera", Password: userPW, Tenants: map[string]string{"acme": "viewer"}})
		for i := range 20 {
			ls.createUser(t, UserBody{Name: fmt.Sprintf("user%d", i), Password: userPW, Tenants: map[string]string{"acme": "viewer"}})
		}
		policy := auth.DefaultLimitPolicy
		// The most hashes one address can cause in a burst of a few
		// seconds: its bucket's burst, a token or two of refill, and the
		// dummy hashes of unknown names count the same.
		maxHashes := int64(policy.IPBurst + 3)

		// Others' requests during the bursts: the health check and an
		// authenticated listing, from an address of their own.
		other := clientFrom("127.0.0.9")
		stop := make(chan struct{})
		var (
			probes   atomic.Int64
			slowest  atomic.Int64
			probesWG sync.WaitGroup
		)
		probesWG.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				for _, p := range []struct{ path, tok string }{{"/healthz", ""}, {"/v1/users", token}} {
					req, _ := http.NewRequest("GET", ls.srv.URL+p.path, nil)
					if p.tok != "" {
						req.Header.Set("Authorization", "Bearer "+p.tok)
					}
					start := time.Now()
					resp, err := other.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					d := time.Since(start)
					if resp.StatusCode != http.StatusOK {
						t.Errorf("%s during the burst: %d", p.path, resp.StatusCode)
					}
					for {
						cur := slowest.Load()
						if int64(d) <= cur || slowest.CompareAndSwap(cur, int64(d)) {
							break
						}
					}
					probes.Add(1)
				}
			}
		})

		for _, tc := range []struct {
			name, from string
			body       func(i int) LoginBody
		}{
			{"one account", "127.0.0.2", func(int) LoginBody { return LoginBody{Name: "vera", Password: "wrong password guess"} }},
			{"across accounts", "127.0.0.3", func(i int) LoginBody {
				// Real accounts and unknown names, alternating.
				if i%2 == 0 {
					return LoginBody{Name: fmt.Sprintf("user%d", i%20), Password: "wrong password guess"}
				}
				return LoginBody{Name: fmt.Sprintf("nobody%d", i), Password: "wrong password guess"}
			}},
		} {
			before := ls.svc.Hasher().Computations()
			start := time.Now()
			counts := burst(t, ls, clientFrom(tc.from), 1000, tc.body)
			hashes := ls.svc.Hasher().Computations() - before
			t.Logf("%s: 1000 wrong passwords from %s in %v: %v, %d argon2id computations", tc.name, tc.from, time.Since(start).Round(time.Millisecond), counts, hashes)
			if counts[http.StatusUnauthorized]+counts[http.StatusTooManyRequests] != 1000 {
				t.Errorf("%s: answers %v, want only 401 and 429", tc.name, counts)
			}
			if counts[http.StatusTooManyRequests] < 1000-int(maxHashes) {
				t.Errorf("%s: only %d of 1000 limited", tc.name, counts[http.StatusTooManyRequests])
			}
			if hashes > maxHashes || hashes != int64(counts[http.StatusUnauthorized]) {
				t.Errorf("%s: %d argon2id computations for %d refusals of a password; want one each, at most %d", tc.name, hashes, counts[http.StatusUnauthorized], maxHashes)
			}

			// The real user, from its own address, right after.
			var se LoginAnswer
			if code, _ := ls.call(t, clientFrom("127.0.0.4"), "POST", "/v1/login", "", LoginBody{Name: "vera", Password: userPW}, &se); code != http.StatusOK {
				t.Fatalf("%s: the real user from another address: %d", tc.name, code)
			}
		}
		close(stop)
		probesWG.Wait()
		t.Logf("%d requests of others during the bursts, slowest %v", probes.Load(), time.Duration(slowest.Load()))
		if probes.Load() == 0 {
			t.Fatal("no request of others was made during the bursts")
		}
		if d := time.Duration(slowest.Load()); d > 2*time.Second {
			t.Errorf("a request of others took %v during the bursts", d)
		}

		// The attacker's address still waits; the account is not locked.
		code, h := ls.call(t, clientFrom("127.0.0.2"), "POST", "/v1/login", "", LoginBody{Name: "vera", Password: userPW}, nil)
		if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
			t.Errorf("the attacking address right after: %d", code)
		}
	})
}

func TestDecodeLoginBody(t *testing.T) {
	for in, ok := range map[string]bool{
		`{"name":"vera","password":"pw"}`:                                  true,
		`{"name":"vera","password":"pw","totp":"123456"}`:                  true,
		`{"name":"vera","password":"pw","recovery":"abcd-efgh-ijkm-npqr"}`: true,
		`{"name":"","password":"pw"}`:                                      false,
		`{"name":"vera","password":""}`:                                    false,
		`{"name":"vera","password":"pw","totp":"1234567"}`:                 false,
		`{"name":"vera","password":"pw","extra":true}`:                     false,
		`{"name":"vera","password":"pw"}{}`:                                false,
		`[]`:                                                               false,
		``:                                                                 false,
	} {
		if _, err := DecodeLoginBody(bytes.NewReader([]byte(in))); (err == nil) != ok {
			t.Errorf("DecodeLoginBody(%s) = %v, want ok=%v", in, err, ok)
		}
	}
	long := `{"name":"vera","password":"` + string(bytes.Repeat([]byte("a"), auth.MaxPasswordLen+1)) + `"}`
	if _, err := DecodeLoginBody(bytes.NewReader([]byte(long))); err == nil {
		t.Error("an over-long password was accepted")
	}
}

func TestDecodeUserBodies(t *testing.T) {
	if _, err := DecodeUserBody(bytes.NewReader([]byte(`{"name":"olga","password":"a long enough password","tenants":{"acme":"operator"}}`))); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{
		`{"name":"ol ga","password":"a long enough password"}`,
		`{"name":"olga","password":"short"}`,
		`{"name":"olga","password":"a long enough password","tenants":{"acme":"root"}}`,
		`{"name":"olga","password":"a long enough password","tenants":{"a/b":"viewer"}}`,
		`{"name":"olga","password":"a long enough password","role":"admin"}`,
	} {
		if _, err := DecodeUserBody(bytes.NewReader([]byte(in))); err == nil {
			t.Errorf("DecodeUserBody(%s) accepted", in)
		}
	}
	if _, err := DecodeRoleBody(bytes.NewReader([]byte(`{"role":"king"}`))); err == nil {
		t.Error("role king accepted")
	}
	if _, err := DecodePasswordBody(bytes.NewReader([]byte(`{"password":"short"}`))); err == nil {
		t.Error("a short password accepted")
	}
	for in, ok := range map[string]bool{``: true, `{}`: true, ` `: true, `{"x":1}`: false, `[]`: false} {
		if err := DecodeEnrollBody(bytes.NewReader([]byte(in))); (err == nil) != ok {
			t.Errorf("DecodeEnrollBody(%q) = %v", in, err)
		}
	}
}
