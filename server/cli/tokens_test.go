package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/cli"
)

// TestTokensCreateScoped: `tokens create --tenant T --role R --expires D`
// makes a tenant-scoped token that sees only its tenant's alerts; a
// publisher token needs models; a tenant token may not name any.
func TestTokensCreateScoped(t *testing.T) {
	alertsServer(t)
	code, stdout, stderr := run(t, "tokens", "create", "--tenant", "acme", "--role", "viewer", "--expires", "720h", "-o", "json")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var info api.TokenInfo
	if err := json.Unmarshal([]byte(stdout), &info); err != nil || info.Tenant != "acme" || info.Role != "viewer" ||
		!strings.HasPrefix(info.Token, api.APITokenPrefix) || info.Expires.Sub(info.Created).Hours() != 720 {
		t.Fatalf("token %+v, %v", info, err)
	}
	// The viewer of acme sees acme's alert, not the one of no tenant.
	t.Setenv("DIALTONE_TOKEN", info.Token)
	code, stdout, stderr = run(t, "alerts", "list", "-o", "json")
	if code != cli.ExitOK || !strings.Contains(stdout, `"new"`) || strings.Contains(stdout, `"old"`) {
		t.Fatalf("viewer alerts: exit %d %s %s", code, stdout, stderr)
	}
	// It may not make tokens.
	if code, _, _ := run(t, "tokens", "create", "--tenant", "acme", "--role", "viewer"); code == cli.ExitOK {
		t.Fatal("a viewer made a token")
	}
	t.Setenv("DIALTONE_TOKEN", apiToken)
	for _, bad := range [][]string{
		{"--role", "publisher"},                                   // no models
		{"--tenant", "acme", "--role", "viewer", "--models", "m"}, // models on a viewer
		{"--role", "admin"},                                       // no tenant
		{"--tenant", "acme", "--role", "viewer", "--expires", "9000h"},
	} {
		if code, _, _ := run(t, append([]string{"tokens", "create"}, bad...)...); code == cli.ExitOK {
			t.Errorf("%v: created", bad)
		}
	}
	code, stdout, _ = run(t, "tokens", "list")
	if code != cli.ExitOK || !strings.Contains(stdout, "TENANT") || !strings.Contains(stdout, "acme") {
		t.Fatalf("list: exit %d\n%s", code, stdout)
	}
}
