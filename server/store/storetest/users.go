package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/store"
)

// RunUsers runs the behaviour tests of store.Users, each in a subtest with
// a store of its own. open must return a new, empty store on every call
// and register its closing with t.Cleanup.
func RunUsers(t *testing.T, open func(t *testing.T) store.Users) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Users)
	}{
		{"UserRoundTrip", testUserRoundTrip},
		{"UserConflict", testUserConflict},
		{"UserInvalid", testUserInvalid},
		{"UserUnknown", testUserUnknown},
		{"Memberships", testMemberships},
		{"ListUsers", testListUsers},
		{"TOTPStep", testTOTPStep},
		{"TOTPStepConcurrent", testTOTPStepConcurrent},
		{"RecoveryCodes", testRecoveryCodes},
		{"Sessions", testSessions},
		{"Identities", testIdentities},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func newUser(id, name string) store.User {
	return store.User{ID: id, Name: name, PasswordHash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA", Created: at(0),
		Tenants: map[string]string{"acme": "viewer"}}
}

func createUser(t *testing.T, s store.Users, u store.User) {
	t.Helper()
	if err := s.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", u.Name, err)
	}
}

func testUserRoundTrip(t *testing.T, s store.Users) {
	ctx := context.Background()
	u := newUser("u1", "alice")
	u.Platform = true
	u.Tenants = map[string]string{"acme": "admin", "globex": "viewer"}
	createUser(t, s, u)
	for _, get := range []func() (store.User, error){
		func() (store.User, error) { return s.UserByID(ctx, "u1") },
		func() (store.User, error) { return s.UserByName(ctx, "alice") },
	} {
		got, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != "u1" || got.Name != "alice" || got.PasswordHash != u.PasswordHash || !got.Platform || got.Disabled ||
			got.TOTPSecret != "" || got.TOTPStep != 0 || got.RecoveryCodes != 0 || !got.Created.Equal(at(0)) ||
			got.Created.Location() != time.UTC || len(got.Tenants) != 2 || got.Tenants["acme"] != "admin" || got.Tenants["globex"] != "viewer" {
			t.Fatalf("got %+v, want %+v", got, u)
		}
	}
	if err := s.SetPasswordHash(ctx, "u1", "$argon2id$new"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled(ctx, "u1", true); err != nil {
		t.Fatal(err)
	}
	got, err := s.UserByID(ctx, "u1")
	if err != nil || got.PasswordHash != "$argon2id$new" || !got.Disabled {
		t.Fatalf("after updates: %+v, %v", got, err)
	}
	// A user with no membership comes back with an empty, non-nil map.
	v := newUser("u2", "bob")
	v.Tenants = nil
	createUser(t, s, v)
	if got, err := s.UserByName(ctx, "bob"); err != nil || got.Tenants == nil || len(got.Tenants) != 0 {
		t.Fatalf("bob = %+v, %v", got, err)
	}
}

func testUserConflict(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	for _, u := range []store.User{newUser("u1", "carol"), newUser("u2", "alice")} {
		if err := s.CreateUser(ctx, u); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateUser(%s, %s) = %v, want ErrConflict", u.ID, u.Name, err)
		}
	}
	// A failed creation leaves nothing behind, memberships included.
	if _, err := s.UserByID(ctx, "u2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("u2 after conflict: %v", err)
	}
	users, err := s.ListUsers(ctx)
	if err != nil || len(users) != 1 {
		t.Fatalf("ListUsers = %+v, %v", users, err)
	}
}

func testUserInvalid(t *testing.T, s store.Users) {
	ctx := context.Background()
	for _, u := range []store.User{
		{ID: "", Name: "x", PasswordHash: "h"},
		{ID: "x", Name: "", PasswordHash: "h"},
		{ID: "x", Name: "x", PasswordHash: ""},
		{ID: "x", Name: "nul\x00", PasswordHash: "h"},
		{ID: "x", Name: "x", PasswordHash: "h", Tenants: map[string]string{"acme": ""}},
		{ID: "x", Name: "x", PasswordHash: "h", Tenants: map[string]string{"": "viewer"}},
	} {
		if err := s.CreateUser(ctx, u); err == nil {
			t.Errorf("CreateUser(%+v) stored an invalid user", u)
		}
	}
	createUser(t, s, newUser("u1", "alice"))
	if err := s.SetMembership(ctx, "u1", "", "viewer"); err == nil {
		t.Error("SetMembership with an empty tenant succeeded")
	}
	if err := s.SetPasswordHash(ctx, "u1", ""); err == nil {
		t.Error("SetPasswordHash with an empty hash succeeded")
	}
}

func testUserUnknown(t *testing.T, s store.Users) {
	ctx := context.Background()
	for name, err := range map[string]error{
		"UserByID":        second(s.UserByID(ctx, "nobody")),
		"UserByName":      second(s.UserByName(ctx, "nobody")),
		"SetPasswordHash": s.SetPasswordHash(ctx, "nobody", "h"),
		"SetDisabled":     s.SetDisabled(ctx, "nobody", true),
		"SetMembership":   s.SetMembership(ctx, "nobody", "acme", "viewer"),
		"SetTOTP":         s.SetTOTP(ctx, "nobody", "SECRET", nil),
		"AdvanceTOTPStep": s.AdvanceTOTPStep(ctx, "nobody", 5),
		"UseRecoveryCode": s.UseRecoveryCode(ctx, "nobody", []byte{1}),
		"SessionByHash":   second(s.SessionByHash(ctx, []byte{1})),
		"RevokeSession":   s.RevokeSession(ctx, []byte{1}, at(0)),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of an unknown user: %v, want ErrNotFound", name, err)
		}
	}
	if err := s.CreateSession(ctx, store.Session{ID: "s1", Hash: []byte{1}, UserID: "nobody", Created: at(0), Expires: at(time.Hour)}); err == nil {
		t.Error("a session of an unknown user was stored")
	}
}

func second[T any](_ T, err error) error { return err }

func testMemberships(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	if err := s.SetMembership(ctx, "u1", "acme", "admin"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMembership(ctx, "u1", "globex", "operator"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.UserByID(ctx, "u1")
	if len(got.Tenants) != 2 || got.Tenants["acme"] != "admin" || got.Tenants["globex"] != "operator" {
		t.Fatalf("tenants = %v", got.Tenants)
	}
	if err := s.RemoveMembership(ctx, "u1", "acme"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMembership(ctx, "u1", "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second removal: %v", err)
	}
	got, _ = s.UserByID(ctx, "u1")
	if len(got.Tenants) != 1 || got.Tenants["globex"] != "operator" {
		t.Fatalf("tenants = %v", got.Tenants)
	}
}

func testListUsers(t *testing.T, s store.Users) {
	ctx := context.Background()
	users, err := s.ListUsers(ctx)
	if err != nil || users == nil || len(users) != 0 {
		t.Fatalf("empty ListUsers = %#v, %v", users, err)
	}
	for i, name := range []string{"carol", "alice", "bob"} {
		u := newUser(fmt.Sprintf("u%d", i), name)
		u.Tenants = map[string]string{name: "admin"}
		createUser(t, s, u)
	}
	users, err = s.ListUsers(ctx)
	if err != nil || len(users) != 3 {
		t.Fatalf("ListUsers = %+v, %v", users, err)
	}
	for i, want := range []string{"alice", "bob", "carol"} {
		if users[i].Name != want || len(users[i].Tenants) != 1 || users[i].Tenants[want] != "admin" {
			t.Errorf("users[%d] = %+v, want %s, admin of %s", i, users[i], want, want)
		}
	}
}

func testTOTPStep(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	if err := s.SetTOTP(ctx, "u1", "JBSWY3DPEHPK3PXP", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AdvanceTOTPStep(ctx, "u1", 100); err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{100, 99} {
		if err := s.AdvanceTOTPStep(ctx, "u1", step); !errors.Is(err, store.ErrConflict) {
			t.Errorf("step %d after 100: %v, want ErrConflict", step, err)
		}
	}
	if err := s.AdvanceTOTPStep(ctx, "u1", 101); err != nil {
		t.Fatal(err)
	}
	got, _ := s.UserByID(ctx, "u1")
	if got.TOTPSecret != "JBSWY3DPEHPK3PXP" || got.TOTPStep != 101 {
		t.Fatalf("after steps: %+v", got)
	}
	// Enrolling again resets the step.
	if err := s.SetTOTP(ctx, "u1", "NEWSECRET", nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.UserByID(ctx, "u1"); got.TOTPSecret != "NEWSECRET" || got.TOTPStep != 0 {
		t.Fatalf("after re-enrolling: %+v", got)
	}
}

// testTOTPStepConcurrent: of many concurrent attempts to use one step,
// exactly one wins, so that a code cannot be replayed in a race.
func testTOTPStepConcurrent(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range 16 {
		wg.Go(func() {
			err := s.AdvanceTOTPStep(ctx, "u1", 7)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, store.ErrConflict) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent uses of one step succeeded, want 1", wins)
	}
}

func testRecoveryCodes(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	createUser(t, s, newUser("u2", "bob"))
	codes := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)}
	if err := s.SetTOTP(ctx, "u1", "SECRET", codes); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.UserByID(ctx, "u1"); got.RecoveryCodes != 3 {
		t.Fatalf("RecoveryCodes = %d, want 3", got.RecoveryCodes)
	}
	// Another user cannot use u1's code.
	if err := s.UseRecoveryCode(ctx, "u2", codes[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("u2 using u1's code: %v", err)
	}
	if err := s.UseRecoveryCode(ctx, "u1", codes[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.UseRecoveryCode(ctx, "u1", codes[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second use: %v, want ErrNotFound", err)
	}
	if got, _ := s.UserByID(ctx, "u1"); got.RecoveryCodes != 2 {
		t.Fatalf("RecoveryCodes = %d, want 2", got.RecoveryCodes)
	}
	// Enrolling again replaces the codes.
	if err := s.SetTOTP(ctx, "u1", "SECRET2", codes[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.UseRecoveryCode(ctx, "u1", codes[1]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old code after re-enrolling: %v", err)
	}
	if err := s.UseRecoveryCode(ctx, "u1", codes[0]); err != nil {
		t.Fatalf("new code: %v", err)
	}
}

func testSessions(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	h1, h2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	se := store.Session{ID: "s1", Hash: h1, UserID: "u1", Created: at(0), Expires: at(12 * time.Hour)}
	if err := s.CreateSession(ctx, se); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, store.Session{ID: "s2", Hash: h1, UserID: "u1", Created: at(0), Expires: at(time.Hour)}); err == nil {
		t.Fatal("a second session with the same hash was stored")
	}
	if err := s.CreateSession(ctx, store.Session{ID: "s3", Hash: h2, UserID: "u1", Created: at(0), Expires: at(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.SessionByHash(ctx, h1)
	if err != nil || got.ID != "s1" || got.UserID != "u1" || !bytes.Equal(got.Hash, h1) || !got.Created.Equal(at(0)) ||
		!got.Expires.Equal(at(12*time.Hour)) || !got.Revoked.IsZero() || got.Expires.Location() != time.UTC {
		t.Fatalf("SessionByHash = %+v, %v", got, err)
	}
	if err := s.RevokeSession(ctx, h1, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, h1, at(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	if got, _ := s.SessionByHash(ctx, h1); !got.Revoked.Equal(at(time.Minute)) {
		t.Fatalf("revoked = %v", got.Revoked)
	}
	if err := s.RevokeUserSessions(ctx, "u1", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SessionByHash(ctx, h2); !got.Revoked.Equal(at(time.Hour)) {
		t.Fatalf("s3 revoked = %v", got.Revoked)
	}
	// The first revocation time stays.
	if got, _ := s.SessionByHash(ctx, h1); !got.Revoked.Equal(at(time.Minute)) {
		t.Fatalf("s1 revoked = %v", got.Revoked)
	}
	if got, _ := s.SessionByHash(ctx, h1); got.Method != "password" {
		t.Fatalf("default method = %q", got.Method)
	}
	h4 := bytes.Repeat([]byte{4}, 32)
	if err := s.CreateSession(ctx, store.Session{ID: "s4", Hash: h4, UserID: "u1", Method: "oidc", Created: at(0), Expires: at(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SessionByHash(ctx, h4); got.Method != "oidc" {
		t.Fatalf("method = %q, want oidc", got.Method)
	}
}

func testIdentities(t *testing.T, s store.Users) {
	ctx := context.Background()
	createUser(t, s, newUser("u1", "alice"))
	createUser(t, s, newUser("u2", "bob"))
	const iss = "https://idp.example"
	if err := s.LinkIdentity(ctx, "u1", iss, "sub-1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, sub string }{{"u1", "sub-1"}, {"u2", "sub-1"}} {
		if err := s.LinkIdentity(ctx, tc.id, iss, tc.sub); !errors.Is(err, store.ErrConflict) {
			t.Errorf("linking %s to %s again: %v, want ErrConflict", tc.sub, tc.id, err)
		}
	}
	if err := s.LinkIdentity(ctx, "nobody", iss, "sub-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("linking to nobody: %v", err)
	}
	if err := s.LinkIdentity(ctx, "u1", "", "sub-2"); err == nil {
		t.Error("an empty issuer was linked")
	}
	// The same subject at another issuer is another account.
	if err := s.LinkIdentity(ctx, "u2", "https://other.example", "sub-1"); err != nil {
		t.Fatal(err)
	}
	if u, err := s.UserByIdentity(ctx, iss, "sub-1"); err != nil || u.ID != "u1" {
		t.Fatalf("UserByIdentity = %+v, %v", u, err)
	}
	if u, err := s.UserByIdentity(ctx, "https://other.example", "sub-1"); err != nil || u.ID != "u2" {
		t.Fatalf("UserByIdentity(other) = %+v, %v", u, err)
	}
	if _, err := s.UserByIdentity(ctx, iss, "sub-9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unlinked identity: %v", err)
	}
	if err := s.UnlinkIdentity(ctx, iss, "sub-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.UnlinkIdentity(ctx, iss, "sub-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second unlink: %v", err)
	}
	if _, err := s.UserByIdentity(ctx, iss, "sub-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after unlink: %v", err)
	}
}
