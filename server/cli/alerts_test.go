package cli_test

import (
	"context"
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
	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

const apiToken = "cli-test-token-0123456789"

// noRepo stands in for the TUF repository, which alerts never reach.
type noRepo struct{}

func (noRepo) Handler() http.Handler                      { return http.NotFoundHandler() }
func (noRepo) Delegation(string) (string, []byte, error)  { return "", nil, errors.New("no repository") }
func (noRepo) Status() []tufrepo.RoleStatus               { return nil }
func (noRepo) Revocations() ([]tufrepo.Revocation, error) { return nil, nil }
func (noRepo) Publish(context.Context, tufrepo.PublishRequest) (*tufrepo.PublishResult, error) {
	return nil, errors.New("no repository")
}
func (noRepo) Push(context.Context, tufrepo.PushRequest) (*tufrepo.PushResult, error) {
	return nil, errors.New("no repository")
}

// alertsServer serves the real API over a real store holding two alerts:
// one now, one two hours ago.
func alertsServer(t *testing.T) string {
	t.Helper()
	return alertsServerOn(t, func(h http.Handler) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	})
}

// alertsServerOn is alertsServer served by start.
func alertsServerOn(t *testing.T, start func(http.Handler) string) string {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	for _, a := range []store.Alert{
		{ID: "new", Time: now, Tenant: "acme", Device: "phone1", Kind: "acl-denied", Severity: store.AlertCritical,
			Source: "embedded-broker", Message: "refused subscription to \"#\"\nby phone1", Count: 3},
		{ID: "old", Time: now.Add(-2 * time.Hour), Device: "phone2", Kind: "malformed-payload", Severity: store.AlertWarning,
			Source: "ingest", Message: "rejected report"},
	} {
		if _, err := st.AddAlert(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}
	h, err := api.New(api.Options{Repo: noRepo{}, Devices: st, Tokens: st, Alerts: st, AdminToken: apiToken})
	if err != nil {
		t.Fatal(err)
	}
	url := start(h)
	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIALTONE_CONFIG", conf)
	t.Setenv("DIALTONE_SERVER", url)
	t.Setenv("DIALTONE_TOKEN", apiToken)
	t.Setenv("DIALTONE_CA", "")
	return url
}

func TestAlertsList(t *testing.T) {
	alertsServer(t)

	code, stdout, stderr := run(t, "alerts", "list")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[1], "acl-denied") ||
		!strings.Contains(lines[1], "critical") || !strings.Contains(lines[1], `"#" by phone1`) || !strings.Contains(lines[2], "malformed-payload") {
		t.Errorf("table:\n%s", stdout)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "1h"}, "new"},
		{[]string{"--since", time.Now().Add(-3 * time.Hour).UTC().Format(time.RFC3339)}, "new old"},
		{[]string{"--kind", "malformed-payload"}, "old"},
		{[]string{"--device", "phone1"}, "new"},
		{[]string{"--tenant", "acme"}, "new"},
		{[]string{"--limit", "1"}, "new"},
	} {
		code, stdout, stderr := run(t, append([]string{"alerts", "list", "-o", "json"}, tc.args...)...)
		if code != cli.ExitOK {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr)
		}
		var as []store.Alert
		if err := json.Unmarshal([]byte(stdout), &as); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, stdout)
		}
		var ids []string
		for _, a := range as {
			ids = append(ids, a.ID)
		}
		if strings.Join(ids, " ") != tc.want {
			t.Errorf("%v: got %v, want %s", tc.args, ids, tc.want)
		}
	}

	for _, bad := range [][]string{
		{"--since", "yesterday"},
		{"--since", "-1h"},
		{"--limit", "0"},
		{"-o", "yaml"},
	} {
		if code, _, _ := run(t, append([]string{"alerts", "list"}, bad...)...); code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d", bad, code, cli.ExitUsage)
		}
	}
}

func TestServerAlertWebhookFlags(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "config.yaml")
	short := filepath.Join(dir, "short")
	for p, b := range map[string]string{conf: "", short: "too-short\n"} {
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DIALTONE_CONFIG", conf)
	for _, args := range [][]string{
		{"--alert-webhook-secret-file", short},
		{"--alert-webhook", "https://hooks.example/x", "--alert-webhook-secret-file", short},
		{"--alert-webhook", "https://hooks.example/x", "--alert-webhook-secret-file", filepath.Join(dir, "missing")},
	} {
		code, _, stderr := run(t, append([]string{"server", "--data-dir", filepath.Join(dir, "data")}, args...)...)
		if code != cli.ExitUsage || !strings.Contains(stderr, "secret") {
			t.Errorf("%v: exit %d (%s), want %d", args, code, stderr, cli.ExitUsage)
		}
	}
}
