// Package systest owns running Dialtone's built binaries as processes for
// system tests (hack/e2e, hack/interop): building them once per test
// process, a dev server on free ports, provisioned phones, and CLI runs
// whose output goes to the test log.
package systest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// Binaries are the built dialtone and dialtone-agent.
type Binaries struct {
	Server string
	Agent  string
}

var built struct {
	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// Build builds both binaries once per test process (CGO as the Makefile
// builds them). Call Cleanup from TestMain.
func Build(t testing.TB) Binaries {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "dialtone-systest-bin")
		if built.err != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		for _, b := range []struct {
			out  *string
			pkg  string
			name string
		}{
			{&built.bins.Server, "github.com/dialtone-dev/dialtone/server/cmd/dialtone", "dialtone"},
			{&built.bins.Agent, "github.com/dialtone-dev/dialtone/agent/cmd/dialtone-agent", "dialtone-agent"},
		} {
			*b.out = filepath.Join(built.dir, b.name)
			cmd := exec.Command(goBin, "build", "-o", *b.out, b.pkg)
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = errors.New("go build " + b.pkg + ": " + err.Error() + "\n" + string(out))
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bins
}

// Cleanup removes the built binaries.
func Cleanup() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// Result of one command run.
type Result struct {
	Code   int
	Stdout string
	Stderr string
}

// Run runs a program to completion and returns its exit code and output.
func Run(t testing.TB, env []string, bin string, args ...string) Result {
	t.Helper()
	return RunIn(t, "", env, bin, args...)
}

// RunIn is Run in the working directory dir ("" for the test's own).
func RunIn(t testing.TB, dir string, env []string, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
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
	t.Logf("$ %s %s -> %d\n%s%s", filepath.Base(bin), strings.Join(args, " "), code, Indent(so.String()), Indent(se.String()))
	return Result{Code: code, Stdout: so.String(), Stderr: se.String()}
}

// MustRun runs and fails the test on a non-zero exit.
func MustRun(t testing.TB, env []string, bin string, args ...string) Result {
	t.Helper()
	r := Run(t, env, bin, args...)
	if r.Code != 0 {
		t.Fatalf("%s %v exited %d:\n%s", filepath.Base(bin), args, r.Code, r.Stderr)
	}
	return r
}

// Indent indents text for the test log.
func Indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// Server is a running `dialtone server --dev`.
type Server struct {
	Bins    Binaries
	DataDir string
	HTTP    string
	MQTT    string
	Token   string
	// CA is the server's development CA (DATA/tls/ca.pem): clients trust
	// it with --ca / DIALTONE_CA, agents with --server-ca.
	CA  string
	url string
	Cmd *exec.Cmd
	// Log is the server's output so far.
	Log  *testutil.SyncBuffer
	args []string
	stop func()
}

// URL is the server's base URL, https://HOST:PORT.
func (s *Server) URL() string { return s.url }

// HTTPClient trusts the server's development CA (and nothing else).
func (s *Server) HTTPClient(t testing.TB) *http.Client {
	t.Helper()
	return &http.Client{Transport: s.Transport(t)}
}

// Transport is an HTTP transport that trusts the server's development CA.
func (s *Server) Transport(t testing.TB) *http.Transport {
	t.Helper()
	b, err := os.ReadFile(s.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", s.CA)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr
}

// Broker is the embedded broker's URL.
func (s *Server) Broker() string { return "mqtt://" + s.MQTT }

// PublisherKey is the dev publisher key.
func (s *Server) PublisherKey() string { return filepath.Join(s.DataDir, "keys", "publisher.key") }

// RootPath is the repository's 1.root.json, what phones are provisioned with.
func (s *Server) RootPath() string { return filepath.Join(s.DataDir, "tuf", "metadata", "1.root.json") }

// ClientEnv is the environment every client command needs.
func (s *Server) ClientEnv() []string {
	return []string{"DIALTONE_SERVER=" + s.URL(), "DIALTONE_TOKEN=" + s.Token, "DIALTONE_CA=" + s.CA, "DIALTONE_CONFIG=/dev/null"}
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s); safe to repeat.
func (s *Server) Stop() { s.stop() }

// StartServer starts a dev server with a fresh data directory.
func StartServer(t testing.TB, bins Binaries) *Server {
	t.Helper()
	return StartServerIn(t, bins, filepath.Join(t.TempDir(), "server"))
}

// Restart stops s and starts a server on the same data directory.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	s.Stop()
	if err := os.Remove(filepath.Join(s.DataDir, "server.json")); err != nil {
		t.Fatal(err)
	}
	return StartServerIn(t, s.Bins, s.DataDir, s.args...)
}

// StartServerIn starts `dialtone server --dev` on free ports in dataDir and
// waits until it has written its addresses to DATA/server.json.
//
// extra are more flags of `dialtone server`; Restart keeps them.
func StartServerIn(t testing.TB, bins Binaries, dataDir string, extra ...string) *Server {
	t.Helper()
	s := &Server{Bins: bins, DataDir: dataDir, args: extra}
	lb := &testutil.SyncBuffer{}
	s.Log = lb
	cmd := exec.Command(bins.Server, append([]string{"server", "--dev", "--data-dir", s.DataDir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"}, extra...)...)
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	cmd.Stdout, cmd.Stderr = lb, lb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.Cmd = cmd
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
				t.Logf("server log:\n%s", Indent(lb.String()))
			}
		})
	}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(s.DataDir, "server.json"))
		if err == nil {
			var a struct{ HTTP, MQTT, URL, CA string }
			if json.Unmarshal(b, &a) == nil && a.HTTP != "" {
				s.HTTP, s.MQTT, s.url, s.CA = a.HTTP, a.MQTT, a.URL, a.CA
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
	tok, err := os.ReadFile(filepath.Join(s.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.Token = strings.TrimSpace(string(tok))
	return s
}

// Phone is one provisioned agent state directory.
type Phone struct {
	ID       string
	StateDir string
	bins     Binaries
}

// Provision provisions a phone for model with the repository's 1.root.json
// and a factory image 1.0.0.
func Provision(t testing.TB, s *Server, id, model string) *Phone {
	t.Helper()
	p := &Phone{ID: id, StateDir: filepath.Join(t.TempDir(), id), bins: s.Bins}
	MustRun(t, nil, s.Bins.Agent, "provision", "--root", s.RootPath(),
		"--state-dir", p.StateDir, "--model", model, "--factory-version", "1.0.0", "--device-id", id)
	return p
}

// Once runs one agent cycle against s.
func (p *Phone) Once(t testing.TB, s *Server, model, hw string) Result {
	t.Helper()
	return Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, p.bins.Agent, "--once", "--server", s.URL(), "--server-ca", s.CA, "--broker", s.Broker(),
		"--state-dir", p.StateDir, "--model", model, "--hardware", hw, "--log-level", "debug")
}

// BootState reads the phone's slot boot state.
func (p *Phone) BootState(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.StateDir, "slots", "boot.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// SlotTree is every file under the phone's slots, with contents.
func (p *Phone) SlotTree(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	root := filepath.Join(p.StateDir, "slots")
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

// FlipByte inverts the byte at off in path.
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Eventually polls cond until it holds or 15 s pass.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
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
