package cli_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/daemon"
)

// tlsStart serves a handler over HTTPS with a certificate of a fresh
// development CA, whose file it stores in *ca.
func tlsStart(t *testing.T, ca *string) func(http.Handler) string {
	return func(h http.Handler) string {
		cert, key, caFile, err := daemon.EnsureDevCA(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		*ca = caFile
		return srv.URL
	}
}

// TestServerCA: a server whose certificate no system root issued is
// refused with a hint to --ca, and trusted with --ca, DIALTONE_CA or ca:
// in the config file.
func TestServerCA(t *testing.T) {
	var ca string
	url := alertsServerOn(t, tlsStart(t, &ca))
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("url %s", url)
	}
	code, _, stderr := run(t, "alerts", "list")
	if code == cli.ExitOK || !strings.Contains(stderr, "not trusted") || !strings.Contains(stderr, "--ca") {
		t.Fatalf("untrusted server: exit %d: %s", code, stderr)
	}
	// A CA that did not issue it: still refused, naming the file.
	other := filepath.Join(t.TempDir(), "other")
	if _, _, otherCA, err := daemon.EnsureDevCA(other); err != nil {
		t.Fatal(err)
	} else if code, _, stderr := run(t, "alerts", "list", "--ca", otherCA); code == cli.ExitOK || !strings.Contains(stderr, "not trusted") || !strings.Contains(stderr, otherCA) {
		t.Fatalf("wrong CA: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run(t, "alerts", "list", "--ca", filepath.Join(other, "nothing.pem")); code == cli.ExitOK || !strings.Contains(stderr, "--ca") {
		t.Fatalf("missing CA file: exit %d: %s", code, stderr)
	}

	if code, stdout, stderr := run(t, "alerts", "list", "--ca", ca); code != cli.ExitOK || !strings.Contains(stdout, "acl-denied") {
		t.Fatalf("--ca: exit %d: %s %s", code, stdout, stderr)
	}
	t.Setenv("DIALTONE_CA", ca)
	if code, stdout, stderr := run(t, "alerts", "list"); code != cli.ExitOK || !strings.Contains(stdout, "acl-denied") {
		t.Fatalf("DIALTONE_CA: exit %d: %s %s", code, stdout, stderr)
	}
	t.Setenv("DIALTONE_CA", "")
	os.Unsetenv("DIALTONE_CA")
	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, []byte("ca: "+ca+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIALTONE_CONFIG", conf)
	if code, stdout, stderr := run(t, "alerts", "list"); code != cli.ExitOK || !strings.Contains(stdout, "acl-denied") {
		t.Fatalf("ca: in the config: exit %d: %s %s", code, stdout, stderr)
	}
}

// TestLoginKeepsCA: `dialtone login --ca` stores the CA with the session,
// and the commands that use the session trust it.
func TestLoginKeepsCA(t *testing.T) {
	var ca string
	url, _, _ := usersServerOn(t, tlsStart(t, &ca))
	if code, _, stderr := runIn(t, "vera's long password\n", "login", "--server", url, "--user", "vera"); code == cli.ExitOK || !strings.Contains(stderr, "--ca") {
		t.Fatalf("login without the CA: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runIn(t, "vera's long password\n", "login", "--server", url, "--user", "vera", "--ca", ca)
	if code != cli.ExitOK {
		t.Fatalf("login --ca: exit %d: %s %s", code, stdout, stderr)
	}
	cfg, _ := os.UserConfigDir()
	raw, _ := os.ReadFile(filepath.Join(cfg, cli.CredentialsFile))
	if !strings.Contains(string(raw), "ca: "+ca) {
		t.Fatalf("credentials lack the CA:\n%s", raw)
	}
	if code, stdout, stderr := runIn(t, "", "devices", "list"); code != cli.ExitOK {
		t.Fatalf("devices list with the session: exit %d: %s %s", code, stdout, stderr)
	}
	if code, stdout, stderr := runIn(t, "", "logout"); code != cli.ExitOK || !strings.Contains(stdout, "logged out") {
		t.Fatalf("logout: exit %d: %s %s", code, stdout, stderr)
	}
}

// TestServerRefusesWithoutCertificate: outside --dev, `dialtone server`
// without --tls-cert/--tls-key stops with a usage error naming them.
func TestServerRefusesWithoutCertificate(t *testing.T) {
	t.Setenv("DIALTONE_CONFIG", "/dev/null")
	code, _, stderr := run(t, "server", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0")
	if code != cli.ExitUsage || !strings.Contains(stderr, "--tls-cert") || !strings.Contains(stderr, "--tls-key") || !strings.Contains(stderr, "--insecure-http") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, _, stderr = run(t, "server", "--data-dir", t.TempDir(), "--tls-cert", "x.pem")
	if code == cli.ExitOK || !strings.Contains(stderr, "go together") {
		t.Fatalf("--tls-cert alone: exit %d: %s", code, stderr)
	}
}
