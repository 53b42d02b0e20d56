// Package testutil holds helpers for tests that start real daemons
// (Mosquitto, the embedded broker, …) on free local ports, route their logs
// to the test log and stop them in t.Cleanup.
package testutil

import (
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// FreeAddr returns "127.0.0.1:PORT" for a port that was free a moment ago:
// it listens on port 0 and closes the listener. Use it only for external
// daemons that cannot report the port they bound; in-process servers should
// listen on :0 and report their address instead.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("closing probe listener: %v", err)
	}
	return addr
}

// RequireBinary returns the path of the named program, or fails the test
// with an installation hint. It never skips: a missing daemon is a broken
// development environment, not a reason to pass.
func RequireBinary(t testing.TB, name, installHint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install with: %s", name, installHint)
	}
	return path
}

// Logger returns a logger that writes every record, at debug level and up,
// to t.Logf. Records arriving after the test finished (from goroutines that
// outlive it) are dropped instead of panicking.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
