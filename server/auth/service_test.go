package auth_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/store"
)

var testParams = auth.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// forEachStore runs fn on a fresh SQLite store and a fresh PostgreSQL
// schema.
func forEachStore(t *testing.T, fn func(t *testing.T, users store.Users)) {
	t.Run("sqlite", func(t *testing.T) {
		s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "fleet.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		fn(t, s)
	})
	t.Run("postgres", func(t *testing.T) { fn(t, OpenPostgres(t)) })
}

// OpenPostgres opens a store in a schema of its own on the test server
// (DIALTONE_TEST_POSTGRES, default the local one), dropped at the end.
func OpenPostgres(t *testing.T) *store.Postgres {
	t.Helper()
	dsn := os.Getenv("DIALTONE_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "dialtone_auth_test_" + hex.EncodeToString(b)
	s, err := store.OpenPostgres(t.Context(), dsn, store.WithSchema(schema))
	if err != nil {
		t.Fatalf("OpenPostgres: %v (set DIALTONE_TEST_POSTGRES)", err)
	}
	t.Cleanup(func() {
		_ = s.Close()
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
	return s
}

func newService(t *testing.T, users store.Users, opts ...auth.Option) (*auth.Service, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC)}
	s, err := auth.New(users, append([]auth.Option{auth.WithParams(testParams), auth.WithClock(c.now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

var platform = auth.Principal{Kind: auth.KindBootstrap, ID: "bootstrap", Platform: true}

const pw = "a long enough password"

func mustCreate(t *testing.T, s *auth.Service, actor auth.Principal, nu auth.NewUser) auth.UserInfo {
	t.Helper()
	if nu.Password == "" {
		nu.Password = pw
	}
	u, err := s.CreateUser(context.Background(), actor, nu)
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", nu.Name, err)
	}
	return u
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := auth.TOTPCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoginFlows(t *testing.T) {
	forEachStore(t, testLoginFlows)
}

func testLoginFlows(t *testing.T, users store.Users) {
	ctx := context.Background()
	s, clk := newService(t, users)
	login := func(name, password, totp, recovery string) (auth.Session, error) {
		return s.Login(ctx, auth.LoginRequest{Name: name, Password: password, TOTP: totp, Recovery: recovery, Client: "192.0.2.1:4000"})
	}
	vera := mustCreate(t, s, platform, auth.NewUser{Name: "vera", Tenants: map[string]string{"acme": auth.RoleViewer}})
	adam := mustCreate(t, s, platform, auth.NewUser{Name: "Adam", Tenants: map[string]string{"acme": auth.RoleAdmin, "globex": auth.RoleViewer}})
	pat := mustCreate(t, s, platform, auth.NewUser{Name: "pat", Platform: true})
	if adam.Name != "adam" {
		t.Fatalf("name not lowercased: %q", adam.Name)
	}

	// Password only: fine for a viewer, in any case of the name.
	se, err := login("VERA", pw, "", "")
	if err != nil {
		t.Fatalf("viewer, password only: %v", err)
	}
	if !strings.HasPrefix(se.Token, auth.SessionPrefix) || len(se.Token) != 68 || se.UserID != vera.ID || !se.Expires.Equal(clk.now().Add(12*time.Hour)) {
		t.Fatalf("session %+v", se)
	}
	p, err := s.AuthenticateSession(ctx, se.Token)
	if err != nil || p.Kind != auth.KindSession || p.ID != vera.ID || p.Platform || len(p.Tenants) != 1 || p.Tenants["acme"] != auth.RoleViewer {
		t.Fatalf("AuthenticateSession = %+v, %v", p, err)
	}

	// Refused for admins, tenant or platform, enrolled or not.
	for _, name := range []string{"adam", "pat"} {
		if _, err := login(name, pw, "", ""); !errors.Is(err, auth.ErrSecondFactorRequired) {
			t.Fatalf("%s, password only: %v, want ErrSecondFactorRequired", name, err)
		}
	}
	enr, err := s.EnrollTOTP(ctx, platform, adam.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := login("adam", pw, "", ""); !errors.Is(err, auth.ErrSecondFactorRequired) {
		t.Fatalf("enrolled admin, password only: %v", err)
	}
	if _, err := login("pat", pw, "123456", ""); !errors.Is(err, auth.ErrSecondFactorRequired) {
		t.Fatalf("platform admin without an enrolled factor: %v", err)
	}

	// Wrong password with a right code: refused, and the code stays
	// unused.
	now := clk.now()
	if _, err := login("adam", "a wrong password!", code(t, enr.Secret, now), ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("wrong password, right code: %v", err)
	}
	// Wrong TOTP.
	wrong := "000000"
	if wrong == code(t, enr.Secret, now) {
		wrong = "111111"
	}
	if _, err := login("adam", pw, wrong, ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("wrong code: %v", err)
	}
	// Password + TOTP.
	se, err = login("adam", pw, code(t, enr.Secret, now), "")
	if err != nil {
		t.Fatalf("password + TOTP: %v", err)
	}
	if p, err := s.AuthenticateSession(ctx, se.Token); err != nil || p.Tenants["acme"] != auth.RoleAdmin {
		t.Fatalf("admin session: %+v, %v", p, err)
	}
	// The same code again: a replay, refused, also from elsewhere.
	if _, err := login("adam", pw, code(t, enr.Secret, now), ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("replayed code: %v", err)
	}
	// The previous step's code is within the skew but older than the
	// accepted one: refused too.
	if _, err := login("adam", pw, code(t, enr.Secret, now.Add(-30*time.Second)), ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("older step's code: %v", err)
	}
	clk.advance(30 * time.Second)
	if _, err := login("adam", pw, code(t, enr.Secret, clk.now()), ""); err != nil {
		t.Fatalf("next step's code: %v", err)
	}

	// Recovery codes: once each, however typed.
	if _, err := login("adam", pw, "", enr.RecoveryCodes[0]); err != nil {
		t.Fatalf("recovery code: %v", err)
	}
	if _, err := login("adam", pw, "", enr.RecoveryCodes[0]); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("recovery code used twice: %v", err)
	}
	if _, err := login("adam", pw, "", strings.ToUpper(strings.ReplaceAll(enr.RecoveryCodes[1], "-", ""))); err != nil {
		t.Fatalf("recovery code typed differently: %v", err)
	}
	if _, err := login("vera", pw, "", enr.RecoveryCodes[2]); err != nil {
		// vera has no factor: a code given in passing is not checked.
		t.Fatalf("viewer with a stray recovery code: %v", err)
	}
	if _, err := login("adam", pw, "123456", enr.RecoveryCodes[2]); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("both factors: %v", err)
	}
	info, _ := s.ListUsers(ctx, platform)
	for _, u := range info {
		if u.Name == "adam" && (u.RecoveryCodes != 8 || !u.TOTP) {
			t.Fatalf("adam after using two codes: %+v", u)
		}
	}

	// Unknown names and wrong passwords get the same answer.
	_, errUnknown := login("nobody", pw, "", "")
	_, errWrong := login("vera", "wrong password!!", "", "")
	if !errors.Is(errUnknown, auth.ErrInvalidCredentials) || errUnknown.Error() != errWrong.Error() {
		t.Fatalf("unknown name: %v; wrong password: %v", errUnknown, errWrong)
	}
	if _, err := login("Not A Valid Name!", pw, "", ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("malformed name: %v", err)
	}

	// Session expiry.
	se, err = login("vera", pw, "", "")
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(12*time.Hour - time.Second)
	if _, err := s.AuthenticateSession(ctx, se.Token); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	clk.advance(time.Second)
	if _, err := s.AuthenticateSession(ctx, se.Token); !errors.Is(err, auth.ErrInvalidSession) {
		t.Fatalf("expired session: %v", err)
	}

	// Logout revokes.
	se, err = login("vera", pw, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx, se.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateSession(ctx, se.Token); !errors.Is(err, auth.ErrInvalidSession) {
		t.Fatalf("after logout: %v", err)
	}
	if err := s.Logout(ctx, se.Token); !errors.Is(err, auth.ErrInvalidSession) {
		t.Fatalf("second logout: %v", err)
	}
	for _, bad := range []string{"", "dts_", "dtp_" + strings.Repeat("0", 64), auth.SessionPrefix + strings.Repeat("z", 64), auth.SessionPrefix + strings.Repeat("0", 64)} {
		if _, err := s.AuthenticateSession(ctx, bad); !errors.Is(err, auth.ErrInvalidSession) {
			t.Errorf("AuthenticateSession(%q) = %v", bad, err)
		}
	}

	// A new password ends every session; a disabled user gets nothing.
	se, _ = login("vera", pw, "", "")
	if err := s.SetPassword(ctx, platform, vera.ID, auth.PasswordChange{Password: "another long password"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateSession(ctx, se.Token); !errors.Is(err, auth.ErrInvalidSession) {
		t.Fatalf("session after a password change: %v", err)
	}
	if _, err := login("vera", pw, "", ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("old password: %v", err)
	}
	se, err = login("vera", "another long password", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := users.SetDisabled(ctx, vera.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateSession(ctx, se.Token); !errors.Is(err, auth.ErrInvalidSession) {
		t.Fatalf("session of a disabled user: %v", err)
	}
	if _, err := login("vera", "another long password", "", ""); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("disabled user: %v", err)
	}
	_ = pat
}

// TestSelfPasswordChange: through a session, the current password is
// needed.
func TestSelfPasswordChange(t *testing.T) {
	forEachStore(t, func(t *testing.T, users store.Users) {
		ctx := context.Background()
		s, _ := newService(t, users)
		v := mustCreate(t, s, platform, auth.NewUser{Name: "vera", Tenants: map[string]string{"acme": auth.RoleViewer}})
		self := auth.Principal{Kind: auth.KindSession, ID: v.ID, Tenants: map[string]string{"acme": auth.RoleViewer}}
		if err := s.SetPassword(ctx, self, v.ID, auth.PasswordChange{Password: "my new long password", Current: "wrong"}); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Fatalf("wrong current password: %v", err)
		}
		if err := s.SetPassword(ctx, self, v.ID, auth.PasswordChange{Password: "short", Current: pw}); !errors.Is(err, auth.ErrWeakPassword) {
			t.Fatalf("weak password: %v", err)
		}
		if err := s.SetPassword(ctx, self, v.ID, auth.PasswordChange{Password: "my new long password", Current: pw}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Login(ctx, auth.LoginRequest{Name: "vera", Password: "my new long password"}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRehash: a hash made with weaker parameters is redone at login.
func TestRehash(t *testing.T) {
	forEachStore(t, func(t *testing.T, users store.Users) {
		ctx := context.Background()
		weak := testParams
		weak.Memory = 32
		old, _ := newService(t, users, auth.WithParams(weak))
		v := mustCreate(t, old, platform, auth.NewUser{Name: "vera", Tenants: map[string]string{"acme": auth.RoleViewer}})
		s, _ := newService(t, users)
		if _, err := s.Login(ctx, auth.LoginRequest{Name: "vera", Password: pw}); err != nil {
			t.Fatal(err)
		}
		u, err := users.UserByID(ctx, v.ID)
		if err != nil || !strings.Contains(u.PasswordHash, "$m=64,t=1,p=1$") {
			t.Fatalf("hash after login: %q, %v", u.PasswordHash, err)
		}
		if _, err := s.Login(ctx, auth.LoginRequest{Name: "vera", Password: pw}); err != nil {
			t.Fatalf("login with the new hash: %v", err)
		}
	})
}

// TestManageUsers: who may create, grant, enroll and list.
func TestManageUsers(t *testing.T) {
	forEachStore(t, func(t *testing.T, users store.Users) {
		ctx := context.Background()
		s, _ := newService(t, users)
		acmeAdmin := auth.Principal{Kind: auth.KindSession, ID: "x", Tenants: map[string]string{"acme": auth.RoleAdmin, "globex": auth.RoleOperator}}
		u := mustCreate(t, s, acmeAdmin, auth.NewUser{Name: "olga", Tenants: map[string]string{"acme": auth.RoleOperator}})
		both := mustCreate(t, s, platform, auth.NewUser{Name: "bea", Tenants: map[string]string{"acme": auth.RoleViewer, "globex": auth.RoleViewer}})
		pat := mustCreate(t, s, platform, auth.NewUser{Name: "pat", Platform: true})
		for name, err := range map[string]error{
			"create in another tenant":  second(s.CreateUser(ctx, acmeAdmin, auth.NewUser{Name: "g", Password: pw, Tenants: map[string]string{"globex": auth.RoleViewer}})),
			"create a platform admin":   second(s.CreateUser(ctx, acmeAdmin, auth.NewUser{Name: "p", Password: pw, Platform: true, Tenants: map[string]string{"acme": auth.RoleViewer}})),
			"create in no tenant":       second(s.CreateUser(ctx, acmeAdmin, auth.NewUser{Name: "n", Password: pw})),
			"create a publisher":        second(s.CreateUser(ctx, acmeAdmin, auth.NewUser{Name: "c", Password: pw, Tenants: map[string]string{"acme": auth.RolePublisher}})),
			"grant in another tenant":   second(s.SetRole(ctx, acmeAdmin, u.ID, "globex", auth.RoleViewer)),
			"revoke in another tenant":  s.RemoveRole(ctx, acmeAdmin, both.ID, "globex"),
			"enroll a shared user":      second(s.EnrollTOTP(ctx, acmeAdmin, both.ID)),
			"enroll a platform admin":   second(s.EnrollTOTP(ctx, acmeAdmin, pat.ID)),
			"password of a shared user": s.SetPassword(ctx, acmeAdmin, both.ID, auth.PasswordChange{Password: "a new long password"}),
		} {
			if !errors.Is(err, auth.ErrForbidden) {
				t.Errorf("%s: %v, want ErrForbidden", name, err)
			}
		}
		for name, err := range map[string]error{
			"bad name":   second(s.CreateUser(ctx, platform, auth.NewUser{Name: "no spaces", Password: pw, Tenants: map[string]string{"acme": auth.RoleViewer}})),
			"weak":       second(s.CreateUser(ctx, platform, auth.NewUser{Name: "w", Password: "short", Tenants: map[string]string{"acme": auth.RoleViewer}})),
			"bad role":   second(s.CreateUser(ctx, platform, auth.NewUser{Name: "r", Password: pw, Tenants: map[string]string{"acme": "root"}})),
			"bad tenant": second(s.SetRole(ctx, platform, u.ID, "a/b", auth.RoleViewer)),
		} {
			if !errors.Is(err, auth.ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", name, err)
			}
		}
		if _, err := s.CreateUser(ctx, platform, auth.NewUser{Name: "OLGA", Password: pw, Tenants: map[string]string{"acme": auth.RoleViewer}}); !errors.Is(err, auth.ErrUserExists) {
			t.Fatalf("duplicate name: %v", err)
		}
		if _, err := s.SetRole(ctx, platform, "nobody", "acme", auth.RoleViewer); !errors.Is(err, auth.ErrNoUser) {
			t.Fatalf("grant to nobody: %v", err)
		}
		if err := s.RemoveRole(ctx, platform, u.ID, "globex"); !errors.Is(err, auth.ErrNoUser) {
			t.Fatalf("revoke a missing membership: %v", err)
		}
		// The tenant admin manages its own tenant's users.
		got, err := s.SetRole(ctx, acmeAdmin, u.ID, "acme", auth.RoleAdmin)
		if err != nil || got.Tenants["acme"] != auth.RoleAdmin {
			t.Fatalf("SetRole = %+v, %v", got, err)
		}
		if _, err := s.EnrollTOTP(ctx, acmeAdmin, u.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveRole(ctx, acmeAdmin, both.ID, "acme"); err != nil {
			t.Fatal(err)
		}
		// It sees acme's members, and only their acme memberships.
		list, err := s.ListUsers(ctx, acmeAdmin)
		if err != nil || len(list) != 1 || list[0].Name != "olga" || len(list[0].Tenants) != 1 {
			t.Fatalf("tenant admin's list = %+v, %v", list, err)
		}
		all, _ := s.ListUsers(ctx, platform)
		if len(all) != 3 {
			t.Fatalf("platform list = %+v", all)
		}
	})
}

func second[T any](_ T, err error) error { return err }

// TestRefusalsCostAlike: an unknown or malformed name costs one argon2id
// verification, as a wrong password does, and gets the same error: the
// answer and its timing do not tell whether the name exists.
func TestRefusalsCostAlike(t *testing.T) {
	forEachStore(t, func(t *testing.T, users store.Users) {
		ctx := context.Background()
		s, _ := newService(t, users)
		mustCreate(t, s, platform, auth.NewUser{Name: "vera", Tenants: map[string]string{"acme": auth.RoleViewer}})
		var msgs []string
		for i, name := range []string{"vera", "nobody", "Not Valid!", strings.Repeat("x", 300)} {
			before := s.Hasher().Computations()
			_, err := s.Login(ctx, auth.LoginRequest{Name: name, Password: "a wrong password", Client: "192.0.2." + string(rune('1'+i))})
			if !errors.Is(err, auth.ErrInvalidCredentials) {
				t.Fatalf("%q: %v", name, err)
			}
			if n := s.Hasher().Computations() - before; n != 1 {
				t.Errorf("%.20q: %d argon2id computations, want 1", name, n)
			}
			msgs = append(msgs, err.Error())
		}
		for _, m := range msgs[1:] {
			if m != msgs[0] {
				t.Errorf("messages differ: %q vs %q", m, msgs[0])
			}
		}
	})
}
