package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoHint tells how to install the Mosquitto broker.
const MosquittoHint = "make deps (apt-get install mosquitto)"

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
)

// Mosquitto is a Mosquitto broker run for one test, on its own port, with its
// configuration and any persistence files in a temporary directory. It can be
// stopped and started again on the same address to simulate a broker restart.
type Mosquitto struct {
	// Addr is "127.0.0.1:PORT"; it does not change across restarts.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	conf string
	logs SyncBuffer

	mu   sync.Mutex
	proc *mosquittoProc // nil while stopped
}

type mosquittoProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
}

// StartMosquitto starts a Mosquitto broker for the test and returns its
// address; see NewMosquitto.
func StartMosquitto(t testing.TB, extraConf string) string {
	t.Helper()
	return NewMosquitto(t, extraConf).Addr
}

// NewMosquitto writes a configuration to a temporary directory — a listener
// on a free port of 127.0.0.1, anonymous access allowed and persistence off
// unless extraConf sets allow_anonymous or persistence itself — starts
// `mosquitto -c` and waits until it accepts TCP connections. extraConf is
// appended verbatim. The broker is killed in t.Cleanup; its log goes to
// t.Logf if the test failed.
func NewMosquitto(t testing.TB, extraConf string) *Mosquitto {
	t.Helper()
	m := &Mosquitto{
		t:   t,
		bin: RequireBinary(t, "mosquitto", MosquittoHint),
		dir: t.TempDir(),
	}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	t.Cleanup(func() {
		m.Kill()
		if t.Failed() {
			t.Logf("mosquitto %s log:\n%s", m.Addr, m.logs.String())
		}
	})
	// Another process may take the free port before mosquitto binds it;
	// try a few ports before giving up.
	const attempts = 3
	for i := 1; ; i++ {
		m.Addr = FreeAddr(t)
		if err := m.writeConfig(extraConf); err != nil {
			t.Fatalf("writing mosquitto config: %v", err)
		}
		err := m.start()
		if err == nil {
			return m
		}
		if i == attempts {
			t.Fatalf("starting mosquitto: %v\n%s", err, m.logs.String())
		}
		t.Logf("starting mosquitto on %s: %v; retrying on another port", m.Addr, err)
	}
}

// Dir is the broker's temporary directory (configuration, persistence).
func (m *Mosquitto) Dir() string { return m.dir }

// Start starts the broker again on the same address after Stop or Kill.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatalf("restarting mosquitto on %s: %v\n%s", m.Addr, err, m.logs.String())
	}
}

// Stop shuts the broker down gracefully (SIGTERM: it closes its sockets and
// saves its persistence file, if any) and waits until it has exited.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill kills the broker (SIGKILL) and waits until it has exited.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

func (m *Mosquitto) writeConfig(extraConf string) error {
	keys := map[string]bool{}
	for _, line := range strings.Split(extraConf, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			keys[f[0]] = true
		}
	}
	_, port, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return fmt.Errorf("splitting %q: %w", m.Addr, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listener %s 127.0.0.1\n", port)
	if !keys["allow_anonymous"] {
		b.WriteString("allow_anonymous true\n")
	}
	if !keys["persistence"] {
		b.WriteString("persistence false\n")
	}
	if os.Geteuid() == 0 && !keys["user"] {
		// Run as root: otherwise mosquitto switches to the "mosquitto" user,
		// which cannot write to the test's temporary directory.
		b.WriteString("user root\n")
	}
	b.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n")
	b.WriteString(extraConf)
	b.WriteString("\n")
	return os.WriteFile(m.conf, []byte(b.String()), 0o600)
}

func (m *Mosquitto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		return fmt.Errorf("already running")
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout = &m.logs
	cmd.Stderr = &m.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", m.bin, err)
	}
	p := &mosquittoProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", m.Addr, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
			m.proc = p
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("mosquitto exited early: %s", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("mosquitto not accepting connections on %s after %s", m.Addr, readyTimeout)
		}
	}
}

func (m *Mosquitto) signal(sig os.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.proc
	if p == nil {
		return
	}
	m.proc = nil
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// SyncBuffer is a bytes.Buffer safe for the concurrent writes of a child
// process's stdout and stderr copiers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
