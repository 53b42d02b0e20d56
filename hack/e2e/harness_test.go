package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bins are the binaries under test, built once per test binary run.
var bins struct {
	once   sync.Once
	dir    string
	err    error
	server string
	agent  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func buildBinaries(t *testing.T) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "dialtone-e2e-bin")
		if bins.err != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		for _, b := range []struct {
			out       *string
			pkg, name string
		}{
			{&bins.server, "github.com/dialtone-dev/dialtone/server/cmd/dialtone", "dialtone"},
			{&bins.agent, "github.com/dialtone-dev/dialtone/agent/cmd/dialtone-agent", "dialtone-agent"},
		} {
			*b.out = filepath.Join(bins.dir, b.name)
			cmd := exec.Command(goBin, "build", "-o", *b.out, b.pkg)
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = errors.New("go build " + b.pkg + ": " + err.Error() + "\n" + string(out))
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// result of one command run.
type result struct {
	code   int
	stdout string
	stderr string
}

// run runs a binary to completion and returns its exit code and output.
func run(t *testing.T, env []string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %s %v: %v", filepath.Base(bin), args, err)
	}
	t.Logf("$ %s %s -> %d\n%s%s", filepath.Base(bin), strings.Join(args, " "), code, indent(so.String()), indent(se.String()))
	return result{code: code, stdout: so.String(), stderr: se.String()}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// mustRun runs and fails the test on a non-zero exit.
func mustRun(t *testing.T, env []string, bin string, args ...string) result {
	t.Helper()
	r := run(t, env, bin, args...)
	if r.code != 0 {
		t.Fatalf("%s %v exited %d:\n%s", filepath.Base(bin), args, r.code, r.stderr)
	}
	return r
}

// server is a running `dialtone server --dev`.
type server struct {
	dataDir string
	http    string
	mqtt    string
	token   string
	cmd     *exec.Cmd
	stop    func()
}

func (s *server) url() string    { return "http://" + s.http }
func (s *server) broker() string { return "mqtt://" + s.mqtt }

// clientEnv sets what every client command needs.
func (s *server) clientEnv() []string {
	return []string{"DIALTONE_SERVER=" + s.url(), "DIALTONE_TOKEN=" + s.token, "DIALTONE_CONFIG=/dev/null"}
}

// logBuffer collects a server's output; exec copies both streams into it
// from its own goroutines, and the test reads it after the process ends.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServer(t *testing.T) *server {
	t.Helper()
	return startServerIn(t, filepath.Join(t.TempDir(), "server"))
}

// restart stops s and starts a server on the same data directory, as an
// attacker who controls the server's files would have to.
func restart(t *testing.T, s *server) *server {
	t.Helper()
	s.stop()
	if err := os.Remove(filepath.Join(s.dataDir, "server.json")); err != nil {
		t.Fatal(err)
	}
	return startServerIn(t, s.dataDir)
}

func startServerIn(t *testing.T, dataDir string) *server {
	t.Helper()
	s := &server{dataDir: dataDir}
	lb := &logBuffer{}
	cmd := exec.Command(bins.server, "server", "--dev", "--data-dir", s.dataDir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	cmd.Stdout, cmd.Stderr = lb, lb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("server log:\n%s", indent(lb.String()))
			}
		})
	}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(s.dataDir, "server.json"))
		if err == nil {
			var a struct{ HTTP, MQTT string }
			if json.Unmarshal(b, &a) == nil && a.HTTP != "" {
				s.http, s.mqtt = a.HTTP, a.MQTT
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server exited early: %v\n%s", err, lb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start within 30s:\n%s", lb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	return s
}

// phone is one provisioned agent state directory.
type phone struct {
	id       string
	stateDir string
}

func provision(t *testing.T, s *server, id, model string) *phone {
	t.Helper()
	p := &phone{id: id, stateDir: filepath.Join(t.TempDir(), id)}
	mustRun(t, nil, bins.agent, "provision", "--root", filepath.Join(s.dataDir, "tuf", "metadata", "1.root.json"),
		"--state-dir", p.stateDir, "--model", model, "--factory-version", "1.0.0", "--device-id", id)
	return p
}

func (p *phone) once(t *testing.T, s *server, model, hw string) result {
	t.Helper()
	return run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.agent, "--once", "--server", s.url(), "--broker", s.broker(),
		"--state-dir", p.stateDir, "--model", model, "--hardware", hw, "--log-level", "debug")
}

// bootState reads the phone's slot boot state.
func (p *phone) bootState(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.stateDir, "slots", "boot.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// slotTree is every file under the phone's slots, with contents.
func (p *phone) slotTree(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	root := filepath.Join(p.stateDir, "slots")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(root, path)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type deviceRow struct {
	ID          string `json:"id"`
	Model       string `json:"model"`
	Version     string `json:"version"`
	Slot        string `json:"slot"`
	UpdateState string `json:"update_state"`
}

// devices runs `dialtone devices list -o json`.
func devices(t *testing.T, s *server) map[string]deviceRow {
	t.Helper()
	r := mustRun(t, s.clientEnv(), bins.server, "devices", "list", "-o", "json")
	var rows []deviceRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("devices list output: %v\n%s", err, r.stdout)
	}
	out := map[string]deviceRow{}
	for _, d := range rows {
		out[d.ID] = d
	}
	return out
}

// eventually polls cond until it holds or 15 s pass.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 15s; last state: %s", what, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
