package daemon_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/dialtone-dev/dialtone/server/daemon"
)

// TestOperatorLogin: the server wires operator accounts: the bootstrap
// admin creates a viewer, who logs in and uses its session, and logs out.
func TestOperatorLogin(t *testing.T) {
	dir := t.TempDir()
	addrs := startServer(t, daemon.Options{DataDir: dir, Dev: true})
	admin, err := daemon.ReadAdminToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, tok string, body any, v any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, addrs.URL+path, bytes.NewReader(b))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := devClient(t, addrs).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil {
			_ = json.NewDecoder(resp.Body).Decode(v)
		}
		return resp.StatusCode
	}
	if code := call("POST", "/v1/users", admin, map[string]any{"name": "vera", "password": "a long enough password", "tenants": map[string]string{"acme": "viewer"}}, nil); code != http.StatusCreated {
		t.Fatalf("creating a user: %d", code)
	}
	if code := call("POST", "/v1/login", "", map[string]string{"name": "nobody", "password": "a long enough password"}, nil); code != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", code)
	}
	var se struct {
		Token string `json:"token"`
	}
	if code := call("POST", "/v1/login", "", map[string]string{"name": "vera", "password": "a long enough password"}, &se); code != http.StatusOK || se.Token == "" {
		t.Fatalf("login: %d", code)
	}
	if code := call("GET", "/v1/devices", se.Token, nil, nil); code != http.StatusOK {
		t.Fatalf("a viewer's session listing devices: %d", code)
	}
	if code := call("POST", "/v1/logout", se.Token, nil, nil); code != http.StatusOK {
		t.Fatalf("logout: %d", code)
	}
	if code := call("GET", "/v1/devices", se.Token, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", code)
	}
}
