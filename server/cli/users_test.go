package cli_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/store"
)

const usersToken = "cli-users-token-0123456789"

// usersServer serves the API with operator accounts over a real SQLite
// store, holding platform admin pat (TOTP enrolled) and viewer vera, and
// points the user configuration directory at a temporary one.
func usersServer(t *testing.T) (url string, svc *auth.Service, patSecret string) {
	t.Helper()
	return usersServerOn(t, func(h http.Handler) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	})
}

// usersServerOn is usersServer served by start.
func usersServerOn(t *testing.T, start func(http.Handler) string) (url string, svc *auth.Service, patSecret string) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DIALTONE_CONFIG", "")
	t.Setenv("DIALTONE_SERVER", "")
	t.Setenv("DIALTONE_TOKEN", "")
	t.Setenv("DIALTONE_CA", "")
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	svc, err = auth.New(st, auth.WithParams(auth.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}))
	if err != nil {
		t.Fatal(err)
	}
	a, err := api.New(api.Options{Repo: noRepo{}, Devices: st, Tokens: st, AdminToken: usersToken, Sessions: svc, Accounts: svc})
	if err != nil {
		t.Fatal(err)
	}
	url = start(a)
	boot := auth.Principal{Kind: auth.KindBootstrap, ID: "bootstrap", Platform: true}
	pat, err := svc.CreateUser(t.Context(), boot, auth.NewUser{Name: "pat", Password: "pat's long password", Platform: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := svc.EnrollTOTP(t.Context(), boot, pat.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateUser(t.Context(), boot, auth.NewUser{Name: "vera", Password: "vera's long password", Tenants: map[string]string{"acme": "viewer"}}); err != nil {
		t.Fatal(err)
	}
	return url, svc, e.Secret
}

// runIn runs the CLI with stdin.
func runIn(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	root := cli.New(&out, &errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	code := cli.ExitOK
	if err != nil {
		errb.WriteString(err.Error())
		code = cli.ExitError
		var ec *cli.ExitCodeError
		if errors.As(err, &ec) {
			code = ec.Code
		}
	}
	return code, out.String(), errb.String()
}

func TestLoginUsersLogout(t *testing.T) {
	url, _, secret := usersServer(t)

	// An admin without its code is refused, and nothing is stored.
	if code, _, stderr := runIn(t, "pat's long password\n", "login", "--server", url, "--user", "pat"); code == cli.ExitOK || !strings.Contains(stderr, "second factor") {
		t.Fatalf("login without TOTP: exit %d: %s", code, stderr)
	}
	cfg, _ := os.UserConfigDir()
	credPath := filepath.Join(cfg, cli.CredentialsFile)
	if _, err := os.Stat(credPath); !os.IsNotExist(err) {
		t.Fatalf("credentials after a refused login: %v", err)
	}

	totp, _ := auth.TOTPCode(secret, time.Now())
	code, stdout, stderr := runIn(t, "pat's long password\n", "login", "--server", url, "--user", "pat", "--totp", totp)
	if code != cli.ExitOK || !strings.Contains(stdout, "logged in to "+url+" as pat") {
		t.Fatalf("login: exit %d: %s %s", code, stdout, stderr)
	}
	fi, err := os.Stat(credPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, %v", fi, err)
	}
	if di, err := os.Stat(filepath.Dir(credPath)); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("credentials dir: %v, %v", di, err)
	}
	raw, _ := os.ReadFile(credPath)
	if !strings.Contains(string(raw), "token: dts_") || strings.Contains(string(raw), "long password") {
		t.Fatalf("credentials file holds:\n%s", raw)
	}

	// Every command uses the session: no --server, no --token.
	code, stdout, stderr = runIn(t, "olga's long password\n", "users", "add", "olga", "--tenant", "acme=operator", "--tenant", "beta=viewer")
	if code != cli.ExitOK || !strings.Contains(stdout, "olga") || !strings.Contains(stdout, "acme=operator,beta=viewer") {
		t.Fatalf("users add: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, "", "users", "grant", "olga", "acme", "admin")
	if code != cli.ExitOK || !strings.Contains(stdout, "acme=admin") {
		t.Fatalf("users grant: exit %d: %s %s", code, stdout, stderr)
	}
	if code, _, stderr := runIn(t, "", "users", "grant", "olga", "acme", "king"); code != cli.ExitUsage {
		t.Fatalf("grant of a bad role: exit %d: %s", code, stderr)
	}
	code, stdout, stderr = runIn(t, "", "users", "revoke", "olga", "beta")
	if code != cli.ExitOK || !strings.Contains(stdout, "removed from beta") {
		t.Fatalf("users revoke: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, "", "users", "totp-enroll", "olga", "-o", "json")
	var e auth.Enrollment
	if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &e) != nil || len(e.RecoveryCodes) != 10 || !strings.HasPrefix(e.URL, "otpauth://totp/") {
		t.Fatalf("users totp-enroll: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = runIn(t, "", "users", "list", "-o", "json")
	var users []auth.UserInfo
	if code != cli.ExitOK || json.Unmarshal([]byte(stdout), &users) != nil || len(users) != 3 {
		t.Fatalf("users list: exit %d: %s %s", code, stdout, stderr)
	}
	for _, u := range users {
		if u.Name == "olga" && (len(u.Tenants) != 1 || u.Tenants["acme"] != "admin" || !u.TOTP) {
			t.Fatalf("olga = %+v", u)
		}
	}
	code, stdout, stderr = runIn(t, "", "users", "link-sso", "olga", "--issuer", "https://idp.example", "--subject", "o-1")
	if code != cli.ExitOK || !strings.Contains(stdout, "linked to olga") {
		t.Fatalf("users link-sso: exit %d: %s %s", code, stdout, stderr)
	}
	if code, _, stderr := runIn(t, "", "users", "link-sso", "vera", "--issuer", "https://idp.example", "--subject", "o-1"); code == cli.ExitOK || !strings.Contains(stderr, "409") {
		t.Fatalf("linking a linked account: exit %d: %s", code, stderr)
	}
	code, stdout, stderr = runIn(t, "", "users", "unlink-sso", "olga", "--issuer", "https://idp.example", "--subject", "o-1")
	if code != cli.ExitOK || !strings.Contains(stdout, "unlinked from olga") {
		t.Fatalf("users unlink-sso: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, _ = runIn(t, "", "users", "list")
	if code != cli.ExitOK || !strings.Contains(stdout, "ID") || !strings.Contains(stdout, "totp(10 recovery)") {
		t.Fatalf("users list table: %s", stdout)
	}
	// olga logs in with a recovery code from the enrollment, then changes
	// her own password (giving the current one) -- through another login.
	code, _, stderr = runIn(t, "olga's long password\n", "login", "--server", url, "--user", "olga", "--recovery", e.RecoveryCodes[0])
	if code != cli.ExitOK {
		t.Fatalf("olga's login: exit %d: %s", code, stderr)
	}
	code, _, stderr = runIn(t, "olga's long password\nolga's new long password\n", "users", "password", "olga", "--self")
	if code != cli.ExitOK {
		t.Fatalf("users password --self: exit %d: %s", code, stderr)
	}
	// The change ended olga's session: the stored one no longer works.
	if code, _, stderr := runIn(t, "", "users", "list"); code == cli.ExitOK || !strings.Contains(stderr, "401") {
		t.Fatalf("users list with an ended session: exit %d: %s", code, stderr)
	}

	// Log in again and out: the file goes, the session ends.
	totp, _ = auth.TOTPCode(secret, time.Now().Add(30*time.Second))
	if code, _, stderr := runIn(t, "pat's long password\n", "login", "--server", url, "--user", "pat", "--totp", totp); code != cli.ExitOK {
		t.Fatalf("second login: exit %d: %s", code, stderr)
	}
	raw, _ = os.ReadFile(credPath)
	code, stdout, stderr = runIn(t, "", "logout")
	if code != cli.ExitOK || !strings.Contains(stdout, "logged out") {
		t.Fatalf("logout: exit %d: %s %s", code, stdout, stderr)
	}
	if _, err := os.Stat(credPath); !os.IsNotExist(err) {
		t.Fatalf("credentials after logout: %v", err)
	}
	if code, _, _ := runIn(t, "", "users", "list"); code != cli.ExitUsage {
		t.Fatalf("users list after logout: exit %d, want usage (no server, no token)", code)
	}
	// The old session is revoked on the server too.
	if err := os.WriteFile(credPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runIn(t, "", "users", "list"); code == cli.ExitOK || !strings.Contains(stderr, "401") {
		t.Fatalf("users list with a logged-out session: exit %d: %s", code, stderr)
	}
}

// TestCredentialsNotSentElsewhere: the stored session goes only to its own
// server, and a file others may read is refused.
func TestCredentialsNotSentElsewhere(t *testing.T) {
	url, _, _ := usersServer(t)
	if code, _, stderr := runIn(t, "vera's long password\n", "login", "--server", url, "--user", "vera"); code != cli.ExitOK {
		t.Fatalf("login: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runIn(t, "", "users", "list", "--server", "http://127.0.0.1:1"); code != cli.ExitUsage || !strings.Contains(stderr, "--token") {
		t.Fatalf("another server: exit %d: %s", code, stderr)
	}
	cfg, _ := os.UserConfigDir()
	if err := os.Chmod(filepath.Join(cfg, cli.CredentialsFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runIn(t, "", "users", "list"); code != cli.ExitUsage {
		t.Fatalf("world-readable credentials used: exit %d", code)
	}
}
