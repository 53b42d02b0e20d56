package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/server/cli"
)

// mosquittoFiles writes stand-ins for the CA, certificate and key (the
// command checks they exist, not what they hold) and an empty config file.
func mosquittoFiles(t *testing.T) (dir string, args []string) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range []string{"ca.pem", "broker.pem", "broker.key", "config.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DIALTONE_CONFIG", filepath.Join(dir, "config.yaml"))
	return dir, []string{"broker", "mosquitto-config",
		"--ca", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "broker.pem"), "--key", filepath.Join(dir, "broker.key"),
		"--persistence-dir", dir, "--log-file", filepath.Join(dir, "mosquitto.log")}
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Execute(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBrokerMosquittoConfig(t *testing.T) {
	dir, args := mosquittoFiles(t)
	out := filepath.Join(dir, "etc")
	code, stdout, stderr := run(t, append(args, "--out", out, "--port", "8884", "--server-identity", "srv-a", "--server-identity", "srv-b")...)
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	conf, err := os.ReadFile(filepath.Join(out, "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listener 8884\n", "acl_file " + filepath.Join(out, "acl") + "\n", "log_type debug\n", "use_identity_as_username true\n"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("mosquitto.conf lacks %q", want)
		}
	}
	acl, err := os.ReadFile(filepath.Join(out, "acl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(acl), "user srv-a\n") || !strings.Contains(string(acl), "user srv-b\n") {
		t.Errorf("acl lacks the server identities:\n%s", acl)
	}
	if fi, err := os.Stat(filepath.Join(out, "acl")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("acl mode: %v %v", fi.Mode(), err)
	}
	if !strings.Contains(stdout, "mosquitto -c "+filepath.Join(out, "mosquitto.conf")) || !strings.Contains(stdout, filepath.Join(out, "acl")) {
		t.Errorf("stdout:\n%s", stdout)
	}
	if !strings.Contains(stderr, "chown") {
		t.Errorf("no ownership hint on stderr:\n%s", stderr)
	}

	// Existing files are kept unless --force; -o json.
	if code, _, stderr := run(t, append(args, "--out", out)...); code != cli.ExitUsage || !strings.Contains(stderr, "--force") {
		t.Errorf("overwrite without --force: exit %d: %s", code, stderr)
	}
	code, stdout, stderr = run(t, append(args, "--out", out, "--force", "-o", "json", "--log-denials=false")...)
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res struct {
		Files   []struct{ Path, Mode string }
		Command string
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || len(res.Files) != 2 || !strings.HasPrefix(res.Command, "mosquitto -c ") {
		t.Errorf("json output %q: %+v, %v", stdout, res, err)
	}
	if conf, _ := os.ReadFile(filepath.Join(out, "mosquitto.conf")); strings.Contains(string(conf), "log_type debug") {
		t.Error("--log-denials=false still logs at debug level")
	}
}

func TestBrokerMosquittoConfigUsageErrors(t *testing.T) {
	dir, args := mosquittoFiles(t)
	out := filepath.Join(dir, "etc")
	for _, tc := range []struct {
		name  string
		args  []string
		env   string
		wants string
	}{
		{"no --out", args, "", "--out"},
		{"no --key", []string{"broker", "mosquitto-config", "--out", out, "--ca", "x", "--cert", "y"}, "", "--key"},
		{"port out of range", append(args, "--out", out, "--port", "70000"), "", "--port"},
		{"missing CA", append(slicesReplace(args, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "nope.pem")), "--out", out), "", "CA file"},
		{"bad identity", append(args, "--out", out, "--server-identity", "a b"), "", "server identity"},
		{"bad output format", append(args, "--out", out, "-o", "yaml"), "", "output format"},
		{"key from the environment", []string{"broker", "mosquitto-config", "--out", out, "--ca", args[3], "--cert", args[5]}, args[7], "--key must be given on the command line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("DIALTONE_KEY", tc.env)
			}
			code, _, stderr := run(t, tc.args...)
			if code != cli.ExitUsage || !strings.Contains(stderr, tc.wants) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %q", code, stderr, cli.ExitUsage, tc.wants)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(out, "acl")); err == nil {
		t.Error("a failed run wrote the acl")
	}
}

func slicesReplace(s []string, old, repl string) []string {
	r := append([]string(nil), s...)
	for i := range r {
		if r[i] == old {
			r[i] = repl
		}
	}
	return r
}
