// Package testutil holds helpers for tests that start real daemons
// (Mosquitto, the embedded broker, …) on free local ports, route their logs
// to the test log and stop them in t.Cleanup.
package testutil

import (
	"bytes"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreeAddr returns "127.0.0.1:PORT" for a port free for TCP and UDP a
// moment ago. Use it only for external daemons that cannot report the port
// they bound; in-process servers should listen on :0 and report their
// address instead.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePorts(t, 1)))
}

// FreePorts returns the first of n consecutive loopback ports that are free
// for TCP and UDP now (swtpm takes a pair, baresip its SIP port and the
// next for TLS). The ports come from below the kernel's ephemeral range,
// which the kernel never hands out by itself, to a port-0 listener or to an
// outgoing connection: between this check and the daemon's bind, only
// another test drawing the same random number can take them.
func FreePorts(t testing.TB, n int) int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	if hi-lo < 1000 {
		lo, hi = 1024, 10000
	}
	for range 200 {
		p := lo + rand.IntN(hi-lo-n)
		if portsFree(p, n) {
			return p
		}
	}
	t.Fatalf("no %d consecutive free ports found in %d-%d", n, lo, hi)
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

func portsFree(first, n int) bool {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}()
	for p := first; p < first+n; p++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return false
		}
		closers = append(closers, l)
		u, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return false
		}
		closers = append(closers, u)
	}
	return true
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

// NoFileHolds fails the test when a file under dir holds secret in clear
// (a password that must only ever be on disk sealed or encrypted).
func NoFileHolds(t testing.TB, dir, secret string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the secret in clear", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
