package e2e

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite", to read the server's store

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// buildFleetsim builds hack/fleetsim into a temporary directory.
func buildFleetsim(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(t.TempDir(), "fleetsim")
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/dialtone-dev/dialtone/hack/fleetsim")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build hack/fleetsim: %v\n%s", err, b)
	}
	return out
}

// devServer is `dialtone server --dev` on fixed addresses, so that it comes
// back where the devices expect it after a restart or a crash (systest's
// server picks new ports on every start).
type devServer struct {
	bin, dataDir, http, mqtt string
	extra                    []string            // more `dialtone server` flags (--store)
	log                      testutil.SyncBuffer // every run's output, in order

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

// startDevServer starts a dev server with a fresh data directory on two
// free ports; it is killed in t.Cleanup.
func startDevServer(t *testing.T, bin string, extra ...string) *devServer {
	t.Helper()
	return startDevServerOn(t, bin, testutil.FreeAddr(t), extra...)
}

// startDevServerOn is startDevServer with the MQTT address the server must
// report: its embedded broker's, or an external broker's (--broker).
func startDevServerOn(t *testing.T, bin, mqtt string, extra ...string) *devServer {
	t.Helper()
	s := &devServer{bin: bin, dataDir: filepath.Join(t.TempDir(), "server"),
		http: testutil.FreeAddr(t), mqtt: mqtt, extra: extra}
	t.Cleanup(func() {
		s.signal(t, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("server log:\n%s", systest.Indent(s.log.String()))
		}
	})
	s.start(t)
	return s
}

// URL is the server's API, HTTPS with its development CA.
func (s *devServer) URL() string { return "https://" + s.http }

// CA is the server's development CA (agents: --server-ca).
func (s *devServer) CA() string { return filepath.Join(s.dataDir, "tls", "ca.pem") }

// DBPath is the server's SQLite store.
func (s *devServer) DBPath() string { return filepath.Join(s.dataDir, "dialtone.db") }

// start starts the server process and waits until it listens.
func (s *devServer) start(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatal("server already running")
	}
	addrFile := filepath.Join(s.dataDir, "server.json")
	if err := os.Remove(addrFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	s.starts++
	fmt.Fprintf(&s.log, "=== start %d at %s\n", s.starts, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(s.bin, append([]string{"server", "--dev", "--data-dir", s.dataDir, "--http", s.http, "--mqtt", s.mqtt}, s.extra...)...)
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	cmd.Stdout, cmd.Stderr = &s.log, &s.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			var a struct{ HTTP, MQTT string }
			if json.Unmarshal(b, &a) == nil && a.MQTT != "" {
				if a.MQTT != s.mqtt {
					t.Fatalf("server listens for MQTT on %s, want %s", a.MQTT, s.mqtt)
				}
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("server exited early (%v):\n%s", cmd.ProcessState, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start within 30s:\n%s", s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signal sends sig to the running server (if any) and waits until it has
// exited, killing it after 10 s.
func (s *devServer) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	fmt.Fprintf(&s.log, "=== %v at %s\n", sig, time.Now().Format("15:04:05.000"))
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("server still running 10s after %v: killing it", sig)
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// storedEvent is one row of the store's events table.
type storedEvent struct {
	Device, ID string
	Seq        int64
	N          int    // Fields["n"]; 0 when missing or not a number
	Run        string // Fields["run"]
}

// readSQLiteEvents reads the events of tenant from the SQLite store at
// path, opened read-only while the server may still be writing it.
func readSQLiteEvents(t *testing.T, path, tenant string) []storedEvent {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_query_only=1&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT device, id, seq, COALESCE(fields, '') FROM events WHERE tenant = ?`, tenant)
	if err != nil {
		t.Fatalf("reading the store %s: %v", path, err)
	}
	defer rows.Close()
	return scanStoredEvents(t, rows)
}

// eventRows is what database/sql's and pgx's result rows both offer.
type eventRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanStoredEvents reads rows of (device, id, seq, fields as JSON text).
func scanStoredEvents(t *testing.T, rows eventRows) []storedEvent {
	t.Helper()
	var out []storedEvent
	for rows.Next() {
		var e storedEvent
		var fields string
		if err := rows.Scan(&e.Device, &e.ID, &e.Seq, &fields); err != nil {
			t.Fatal(err)
		}
		var f map[string]string
		if fields != "" {
			if err := json.Unmarshal([]byte(fields), &f); err != nil {
				t.Fatalf("event %s/%s: fields %q: %v", e.Device, e.ID, fields, err)
			}
		}
		e.N, _ = strconv.Atoi(f["n"])
		e.Run = f["run"]
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// nolossReport is the analysis of the stored events against what the
// devices were asked to send.
type nolossReport struct {
	Stored    int
	PerDevice map[string]int
	Missing   map[string][]int  // device → n never stored
	DupN      map[string][]int  // device → n stored more than once (under different IDs)
	DupIDs    []string          // IDs stored more than once (across devices)
	Disorder  []string          // Seq not strictly increasing with n
	Stray     []string          // rows of unknown devices, n out of range, or of another run
	Runs      map[string]string // device → run nonce seen
	byDevice  map[string][]storedEvent
	multiRuns map[string][]string
}

// analyse checks evs against devices × 1..n.
func analyse(evs []storedEvent, devices []string, n int) nolossReport {
	r := nolossReport{Stored: len(evs), PerDevice: map[string]int{}, Missing: map[string][]int{},
		DupN: map[string][]int{}, Runs: map[string]string{}, byDevice: map[string][]storedEvent{}, multiRuns: map[string][]string{}}
	known := map[string]bool{}
	for _, d := range devices {
		known[d] = true
	}
	ids := map[string]int{}
	for _, e := range evs {
		ids[e.ID]++
		r.PerDevice[e.Device]++
		if !known[e.Device] || e.N < 1 || e.N > n {
			r.Stray = append(r.Stray, fmt.Sprintf("%s id=%s seq=%d n=%d", e.Device, e.ID, e.Seq, e.N))
			continue
		}
		if run, ok := r.Runs[e.Device]; ok && run != e.Run {
			if !slices.Contains(r.multiRuns[e.Device], e.Run) {
				r.multiRuns[e.Device] = append(r.multiRuns[e.Device], e.Run)
				r.Stray = append(r.Stray, fmt.Sprintf("%s: events of two runs, %s and %s", e.Device, run, e.Run))
			}
		} else {
			r.Runs[e.Device] = e.Run
		}
		r.byDevice[e.Device] = append(r.byDevice[e.Device], e)
	}
	for id, c := range ids {
		if c > 1 {
			r.DupIDs = append(r.DupIDs, fmt.Sprintf("%s×%d", id, c))
		}
	}
	slices.Sort(r.DupIDs)
	for _, d := range devices {
		evs := r.byDevice[d]
		slices.SortFunc(evs, func(a, b storedEvent) int {
			if a.N != b.N {
				return a.N - b.N
			}
			return int(a.Seq - b.Seq)
		})
		seen := make([]int, n+1)
		for _, e := range evs {
			seen[e.N]++
		}
		for i := 1; i <= n; i++ {
			switch {
			case seen[i] == 0:
				r.Missing[d] = append(r.Missing[d], i)
			case seen[i] > 1:
				r.DupN[d] = append(r.DupN[d], i)
			}
		}
		for i := 1; i < len(evs); i++ {
			a, b := evs[i-1], evs[i]
			if a.N != b.N && b.Seq <= a.Seq {
				r.Disorder = append(r.Disorder, fmt.Sprintf("%s: n=%d has seq %d, n=%d has seq %d", d, a.N, a.Seq, b.N, b.Seq))
			}
		}
	}
	return r
}

// ranges compacts sorted ints into "1-3,7".
func ranges(ns []int) string {
	var b strings.Builder
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(",")
		}
		if i == j {
			fmt.Fprintf(&b, "%d", ns[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", ns[i], ns[j])
		}
		i = j + 1
	}
	return b.String()
}

// simSummary is fleetsim's JSON summary line.
type simSummary struct {
	Device         string  `json:"device"`
	Events         int     `json:"events"`
	ResumedFrom    int     `json:"resumed_from"`
	Emitted        int     `json:"emitted"`
	PendingAtStart int     `json:"pending_at_start"`
	Connections    int     `json:"connections"`
	OutboxFull     int     `json:"outbox_full"`
	Seconds        float64 `json:"seconds"`
}

// simRun is one fleetsim process run.
type simRun struct {
	Start, End time.Time
	State      *os.ProcessState
	Summary    *simSummary
	Killed     bool // died of SIGKILL (the test's or its own)
}

// sim supervises one device's fleetsim: it runs it, and starts it again
// with the same state directory when it died of an expected SIGKILL.
type sim struct {
	device, stateDir string
	bin              string
	args             []string
	log              testutil.SyncBuffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	expected int  // SIGKILL deaths to restart after
	stopped  bool // by stop: no more runs
	runs     []simRun
	err      error
	done     chan struct{}
}

func newSim(bin, device, stateDir string, expectedKills int, args ...string) *sim {
	return &sim{device: device, stateDir: stateDir, bin: bin, args: args, expected: expectedKills, done: make(chan struct{})}
}

// supervise runs the fleetsim until it exits 0, or dies unexpectedly.
func (s *sim) supervise() {
	defer close(s.done)
	for {
		s.mu.Lock()
		if s.stopped {
			s.err = fmt.Errorf("fleetsim %s stopped before it finished", s.device)
			s.mu.Unlock()
			return
		}
		cmd := exec.Command(s.bin, append([]string{"--device", s.device, "--state-dir", s.stateDir}, s.args...)...)
		var stdout strings.Builder
		cmd.Stdout = &stdout
		cmd.Stderr = &s.log
		run := simRun{Start: time.Now()}
		fmt.Fprintf(&s.log, "=== run %d at %s\n", len(s.runs)+1, run.Start.Format("15:04:05.000"))
		if err := cmd.Start(); err != nil {
			s.err = err
			s.mu.Unlock()
			return
		}
		s.cmd = cmd
		s.mu.Unlock()

		err := cmd.Wait()
		s.mu.Lock()
		s.cmd = nil
		run.End, run.State = time.Now(), cmd.ProcessState
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			run.Killed = true
		}
		sc := bufio.NewScanner(strings.NewReader(stdout.String()))
		for sc.Scan() {
			var sum simSummary
			if json.Unmarshal(sc.Bytes(), &sum) == nil && sum.Device != "" {
				run.Summary = &sum
			}
		}
		s.runs = append(s.runs, run)
		switch {
		case err == nil && run.Summary != nil:
			s.mu.Unlock()
			return
		case run.Killed && s.expected > 0:
			s.expected--
			s.mu.Unlock()
			time.Sleep(500 * time.Millisecond) // a supervisor's restart delay
			continue
		default:
			s.err = fmt.Errorf("fleetsim %s exited: %v (summary %v)", s.device, cmd.ProcessState, run.Summary)
			s.mu.Unlock()
			return
		}
	}
}

// kill SIGKILLs the running fleetsim; supervise starts it again.
func (s *sim) kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("not running")
	}
	s.expected++
	return s.cmd.Process.Kill()
}

// stop kills the fleetsim for good (test cleanup).
func (s *sim) stop() {
	s.mu.Lock()
	s.stopped, s.expected = true, 0
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
	}
	s.mu.Unlock()
	<-s.done
}

// emitted reads the device's progress file (events handed to its outbox).
func (s *sim) emitted() int {
	b, err := os.ReadFile(filepath.Join(s.stateDir, "progress"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
