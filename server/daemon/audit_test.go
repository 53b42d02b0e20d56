package daemon_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/daemon"
)

// TestAuditWired runs the server (SQLite): a token created through the API
// is in the audit log, and `dialtone audit verify` finds the log intact.
func TestAuditWired(t *testing.T) {
	dir := t.TempDir()
	addrs := startServer(t, daemon.Options{DataDir: dir, Dev: true})
	token, err := daemon.ReadAdminToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := addrs.URL

	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/v1/tokens",
		strings.NewReader(`{"tenant":"acme","role":"viewer","ttl":3600000000000}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := devClient(t, addrs).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/tokens: %s", resp.Status)
	}

	req, _ = http.NewRequestWithContext(t.Context(), "GET", base+"/v1/audit", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = devClient(t, addrs).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page api.AuditPage
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Action != "POST /v1/tokens" || page.Entries[0].Tenant != "acme" {
		t.Fatalf("GET /v1/audit: %v %+v", err, page)
	}

	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIALTONE_CONFIG", conf)
	var out, errb bytes.Buffer
	code := cli.Execute(t.Context(), []string{"audit", "verify", "--server", base, "--token", token, "--ca", addrs.CA}, &out, &errb)
	if code != cli.ExitOK || !strings.Contains(out.String(), "1 entries, head seq 1") {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out.String(), errb.String())
	}
}
