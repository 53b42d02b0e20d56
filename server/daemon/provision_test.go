package daemon_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

// TestProvisioningWired: a --dev server's repository has the config role
// with its own key, the server made the SIP secrets key (owner-only), and
// the provisioning routes are served: the config role's metadata for a
// device profile, and the device route refusing a caller without a device
// certificate.
func TestProvisioningWired(t *testing.T) {
	dir := t.TempDir()
	addrs := startServer(t, daemon.Options{DataDir: dir, Dev: true})
	admin, err := daemon.ReadAdminToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, daemon.KeysDir, sipsecret.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != sipsecret.KeySize {
		t.Fatalf("SIP secrets key: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, daemon.KeysDir, "config.key")); err != nil {
		t.Fatalf("no config key: %v", err)
	}
	get := func(path, tok string, v any) int {
		t.Helper()
		req, _ := http.NewRequest("GET", addrs.URL+path, nil)
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
	var st struct {
		Roles []tufrepo.RoleStatus `json:"roles"`
	}
	if code := get("/v1/tuf/status", admin, &st); code != 200 {
		t.Fatalf("tuf status: %d", code)
	}
	i := slices.IndexFunc(st.Roles, func(r tufrepo.RoleStatus) bool { return r.Role == tufrepo.ConfigRole })
	if i < 0 || !slices.Equal(st.Roles[i].Paths, tufrepo.ConfigPaths) {
		t.Fatalf("roles %+v: want %s over %v", st.Roles, tufrepo.ConfigRole, tufrepo.ConfigPaths)
	}
	var d struct {
		Role string `json:"role"`
	}
	if code := get("/v1/config/delegation?tenant=acme&target=config/acme/devices/p1/sip.json", admin, &d); code != 200 || d.Role != tufrepo.ConfigRole {
		t.Fatalf("config delegation: %d %+v", code, d)
	}
	var e struct {
		Code string `json:"code"`
	}
	if code := get(wire.SIPCredentialPath, "", &e); code != http.StatusUnauthorized || e.Code != wire.SIPNoDeviceCert {
		t.Fatalf("device route without a certificate: %d %+v", code, e)
	}
}
