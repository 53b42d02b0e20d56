package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/mqttingest"
)

// nolossServer is one deployment under TestNoLossNoDuplicates: a broker the
// devices report to and a server storing what they report.
type nolossServer interface {
	// Broker is the devices' broker address, mqtt://HOST:PORT; it stays the
	// same across restarts.
	Broker() string
	// RestartBroker stops the broker process gracefully and starts it
	// again.
	RestartBroker(t *testing.T)
	// KillServer kills the server process (SIGKILL), waits down, and starts
	// it again.
	KillServer(t *testing.T, down time.Duration)
	// Events reads every event of tenant from the server's store.
	Events(t *testing.T, tenant string) []storedEvent
	// Log is the server's (and broker's) log so far.
	Log() string
	// DeviceArgs are the fleetsim flags device needs to connect (its TLS
	// identity), if any.
	DeviceArgs(t *testing.T, device string) []string
}

// nolossSetups are the deployments the test runs against. Mosquitto and
// PostgreSQL setups add entries here: a start function returning a
// nolossServer whose RestartBroker restarts the Mosquitto process
// (testutil.Mosquitto Stop and Start keep its address) and whose Events
// reads PostgreSQL.
var nolossSetups = []struct {
	name  string
	start func(t *testing.T) nolossServer
}{
	{"embedded-broker+sqlite", func(t *testing.T) nolossServer {
		return embeddedSetup{startDevServer(t, bins.Server)}
	}},
	{"embedded-broker+postgres", func(t *testing.T) nolossServer {
		dsn := postgresDatabase(t)
		return embeddedPGSetup{embeddedSetup{startDevServer(t, bins.Server, "--store", dsn)}, dsn}
	}},
}

// embeddedSetup is the dev server: mochi embedded in the server process,
// SQLite, so restarting the broker restarts the server.
type embeddedSetup struct{ s *devServer }

func (e embeddedSetup) Broker() string { return "mqtt://" + e.s.mqtt }

func (e embeddedSetup) RestartBroker(t *testing.T) {
	e.s.signal(t, syscall.SIGTERM)
	e.s.start(t)
}

func (e embeddedSetup) KillServer(t *testing.T, down time.Duration) {
	e.s.signal(t, syscall.SIGKILL)
	time.Sleep(down)
	e.s.start(t)
}

func (e embeddedSetup) Events(t *testing.T, tenant string) []storedEvent {
	return readSQLiteEvents(t, e.s.DBPath(), tenant)
}

func (e embeddedSetup) Log() string { return e.s.log.String() }

func (embeddedSetup) DeviceArgs(*testing.T, string) []string { return nil }

// TestNoLossNoDuplicates: ten simulated phones (hack/fleetsim, the real
// reporting client and its durable outbox) report 1,000 numbered events
// each while the broker is restarted twice, the server is SIGKILLed once,
// one phone is SIGKILLed and another kills itself between handing an event
// to its outbox and recording that it did. Afterwards the store holds every
// (device, n) exactly once, no ID twice, and per device Seq grows with n.
func TestNoLossNoDuplicates(t *testing.T) {
	buildBinaries(t)
	fleetsim := buildFleetsim(t)
	for _, setup := range nolossSetups {
		t.Run(setup.name, func(t *testing.T) { testNoLoss(t, fleetsim, setup.start(t)) })
	}
}

const (
	nolossTenant  = "noloss"
	nolossDevices = 10
	nolossEvents  = 1000
	nolossRate    = 40 // events/s per device: the emission takes 25 s
	// crashDevice kills itself right after Event returned for event
	// crashAfter, before its progress file says so; it re-emits that event.
	crashDevice = 6
	crashAfter  = 250 // ≈ 6 s in
	killDevice  = 2   // SIGKILLed by the test
)

func testNoLoss(t *testing.T, fleetsim string, srv nolossServer) {
	var sims []*sim
	var names []string
	for i := range nolossDevices {
		name := fmt.Sprintf("sim-%02d", i)
		args := []string{"--broker", srv.Broker(), "--tenant", nolossTenant,
			"--events", fmt.Sprint(nolossEvents), "--rate", fmt.Sprint(nolossRate), "--timeout", "90s"}
		args = append(args, srv.DeviceArgs(t, name)...)
		expected := 0
		if i == crashDevice {
			args = append(args, "--crash-after-handoff", fmt.Sprint(crashAfter))
			expected = 1
		}
		s := newSim(fleetsim, name, filepath.Join(t.TempDir(), name), expected, args...)
		sims = append(sims, s)
		names = append(names, name)
	}
	t0 := time.Now()
	for _, s := range sims {
		go s.supervise()
	}
	t.Cleanup(func() {
		for _, s := range sims {
			s.stop()
			if t.Failed() {
				t.Logf("%s log:\n%s", s.device, indentTail(s.log.String(), 40))
			}
		}
	})

	// The disruptions, spaced over the 25 s of emission.
	type disruption struct {
		at   time.Duration
		what string
		do   func()
	}
	plan := []disruption{
		{3 * time.Second, "broker restart 1 (graceful)", func() { srv.RestartBroker(t) }},
		{8 * time.Second, fmt.Sprintf("SIGKILL fleetsim %s", names[killDevice]), func() {
			if err := sims[killDevice].kill(); err != nil {
				t.Errorf("killing %s: %v", names[killDevice], err)
			}
		}},
		{11 * time.Second, "server SIGKILL, down 1 s, started again", func() { srv.KillServer(t, time.Second) }},
		{16 * time.Second, "broker restart 2 (graceful)", func() { srv.RestartBroker(t) }},
	}
	var log []string
	for _, d := range plan {
		time.Sleep(time.Until(t0.Add(d.at)))
		lo, hi := nolossEvents, 0
		for _, s := range sims {
			e := s.emitted()
			lo, hi = min(lo, e), max(hi, e)
		}
		start := time.Since(t0)
		d.do()
		log = append(log, fmt.Sprintf("t=%5.2fs-%5.2fs %s (events handed over per device: %d..%d of %d)",
			start.Seconds(), time.Since(t0).Seconds(), d.what, lo, hi, nolossEvents))
		if lo == nolossEvents {
			t.Errorf("%s landed after every device had emitted everything: the run is too fast to test anything", d.what)
		}
	}

	// Every fleetsim must exit 0: all its events acknowledged.
	deadline := time.After(90 * time.Second)
	for _, s := range sims {
		select {
		case <-s.done:
		case <-deadline:
			t.Fatalf("%s did not finish within 90 s (%d handed over)", s.device, s.emitted())
		}
	}
	finished := time.Since(t0)
	var failed bool
	var runs, resumes, resent, conns int
	for _, s := range sims {
		if s.err != nil {
			t.Errorf("%v", s.err)
			failed = true
			continue
		}
		for i, r := range s.runs {
			runs++
			if r.Summary == nil {
				log = append(log, fmt.Sprintf("%s run %d: t=%.2fs-%.2fs, %v", s.device, i+1, r.Start.Sub(t0).Seconds(), r.End.Sub(t0).Seconds(), r.State))
				continue
			}
			conns += r.Summary.Connections
			if i > 0 {
				resumes++
				resent += r.Summary.PendingAtStart
				log = append(log, fmt.Sprintf("%s run %d: t=%.2fs-%.2fs, resumed from %d, resent %d left in the outbox, emitted %d",
					s.device, i+1, r.Start.Sub(t0).Seconds(), r.End.Sub(t0).Seconds(), r.Summary.ResumedFrom, r.Summary.PendingAtStart, r.Summary.Emitted))
			}
		}
	}
	if failed {
		t.FailNow()
	}
	// The self-killing device must have hit its window: it resumed from
	// crashAfter-1 and so emitted event crashAfter a second time.
	if rs := sims[crashDevice].runs; len(rs) != 2 || !rs[0].Killed || rs[1].Summary == nil || rs[1].Summary.ResumedFrom != crashAfter-1 {
		t.Errorf("%s: want a run killed after handing over event %d and a second resuming from %d; runs: %+v", names[crashDevice], crashAfter, crashAfter-1, rs)
	}
	if rs := sims[killDevice].runs; len(rs) != 2 || !rs[0].Killed {
		t.Errorf("%s: want a killed run and a second; runs: %+v", names[killDevice], rs)
	}

	// With an external broker the devices' PUBACKs come from the broker,
	// which queues the reports for the server: wait until the server has
	// drained that queue. The store may stand still for as long as the
	// server's reconnect backoff (a full queue makes it reconnect to get
	// the reports again, and repeated reconnects back off up to
	// mqttingest.DefaultMaxBackoff): only a store that stands still longer
	// than that has stopped growing. At most two minutes.
	quiet := mqttingest.DefaultMaxBackoff + 5*time.Second
	evs := srv.Events(t, nolossTenant)
	for last, still := len(evs), time.Now(); len(evs) < nolossDevices*nolossEvents && time.Since(still) < quiet && time.Since(t0) < finished+2*time.Minute; {
		time.Sleep(250 * time.Millisecond)
		if evs = srv.Events(t, nolossTenant); len(evs) != last {
			last, still = len(evs), time.Now()
		}
	}
	drained := time.Since(t0) - finished
	r := analyse(evs, names, nolossEvents)
	srvLog := srv.Log()
	withheld := strings.Count(srvLog, "report not stored")
	t.Logf("no-loss run: %d devices × %d events at %d/s, all acknowledged after %.1fs, store read %.1fs later", nolossDevices, nolossEvents, nolossRate, finished.Seconds(), drained.Seconds())
	for _, l := range log {
		t.Logf("  %s", l)
	}
	t.Logf("events sent: %d handed to the outboxes (each n once), plus a re-emission by each of the %d resumed runs that crashed between Event and its progress update (%s certainly: n=%d); %d resent from outboxes by restarted runs; %d fleetsim runs, %d broker connections in the runs that finished",
		nolossDevices*nolossEvents, resumes, names[crashDevice], crashAfter, resent, runs, conns)
	t.Logf("events stored: %d (want %d); redeliveries the server de-duplicated: not counted here (the server logs its ingestion totals at a clean shutdown, which this run does not end with); reports not stored/withheld per server log: %d",
		r.Stored, nolossDevices*nolossEvents, withheld)

	for _, d := range names {
		if len(r.Missing[d]) > 0 {
			t.Errorf("LOSS: %s: %d events never stored: n=%s", d, len(r.Missing[d]), ranges(r.Missing[d]))
		}
		if len(r.DupN[d]) > 0 {
			t.Errorf("DUPLICATE: %s: %d events stored more than once under different IDs: n=%s", d, len(r.DupN[d]), ranges(r.DupN[d]))
		}
	}
	if len(r.DupIDs) > 0 {
		t.Errorf("DUPLICATE IDs stored: %v", r.DupIDs)
	}
	if len(r.Disorder) > 0 {
		t.Errorf("Seq does not grow with n (%d places): %v", len(r.Disorder), r.Disorder[:min(len(r.Disorder), 10)])
	}
	if len(r.Stray) > 0 {
		t.Errorf("unexpected rows (%d): %v", len(r.Stray), r.Stray[:min(len(r.Stray), 10)])
	}
	if warn := serverProblems(srvLog); len(warn) > 0 {
		t.Logf("server warnings and errors (%d kinds):", len(warn))
		for _, w := range warn {
			t.Logf("  %s", w)
		}
	}
	if r.Stored != nolossDevices*nolossEvents {
		t.Errorf("stored %d events, want exactly %d (per device: %v)", r.Stored, nolossDevices*nolossEvents, r.PerDevice)
	}
}

// indentTail is the last n lines of s, indented.
func indentTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… %d lines", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return "    " + strings.Join(lines, "\n    ") + "\n"
}

// serverProblems groups the server log's WARN and ERROR lines by level,
// message and the last part of their error (what varies per event or
// connection left out), with a count and a shortened example each.
func serverProblems(log string) []string {
	type group struct {
		n       int
		example string
	}
	groups := map[string]*group{}
	var order []string
	for _, line := range strings.Split(log, "\n") {
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := m[1] + " " + m[2]
		if e := logErr.FindStringSubmatch(line); e != nil {
			parts := strings.Split(e[1], ": ")
			key += ": " + parts[len(parts)-1]
		}
		g := groups[key]
		if g == nil {
			ex := line
			if len(ex) > 300 {
				ex = ex[:300] + "…"
			}
			g = &group{example: ex}
			groups[key] = g
			order = append(order, key)
		}
		g.n++
	}
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%d× %s; e.g. %s", groups[k].n, k, groups[k].example))
	}
	return out
}

var (
	logLine = regexp.MustCompile(`level=(WARN|ERROR) msg=("[^"]*"|\S+)`)
	logErr  = regexp.MustCompile(` err(?:or)?="((?:[^"\\]|\\.)*)"`)
)

// TestNoLossAnalyse checks that the analysis behind TestNoLossNoDuplicates
// sees each kind of failure.
func TestNoLossAnalyse(t *testing.T) {
	ev := func(dev string, n int, seq int64, id string) storedEvent {
		return storedEvent{Device: dev, ID: id, Seq: seq, N: n, Run: "r-" + dev}
	}
	good := []storedEvent{ev("a", 1, 1, "a1"), ev("a", 2, 3, "a2"), ev("a", 3, 4, "a3"), ev("b", 1, 1, "b1"), ev("b", 2, 2, "b2"), ev("b", 3, 3, "b3")}
	r := analyse(good, []string{"a", "b"}, 3)
	if len(r.Missing)+len(r.DupN)+len(r.DupIDs)+len(r.Disorder)+len(r.Stray) != 0 || r.Stored != 6 {
		t.Fatalf("good input: %+v", r)
	}
	bad := []storedEvent{
		ev("a", 1, 1, "a1"), ev("a", 3, 4, "a3"), // a: 2 lost
		ev("b", 1, 1, "b1"), ev("b", 2, 5, "b2"), ev("b", 2, 6, "b2bis"), ev("b", 3, 3, "b3"), // b: 2 twice, 3 before 2
		ev("c", 1, 1, "a1"), // unknown device, and a1 again
	}
	r = analyse(bad, []string{"a", "b"}, 3)
	if got := ranges(r.Missing["a"]); got != "2" {
		t.Errorf("missing a = %q, want 2", got)
	}
	if got := ranges(r.DupN["b"]); got != "2" {
		t.Errorf("duplicate n of b = %q, want 2", got)
	}
	if len(r.DupIDs) != 1 || len(r.Stray) != 1 || len(r.Disorder) != 1 {
		t.Errorf("dup IDs %v, stray %v, disorder %v: want one each", r.DupIDs, r.Stray, r.Disorder)
	}
	if got := ranges([]int{1, 2, 3, 5, 7, 8}); got != "1-3,5,7-8" {
		t.Errorf("ranges = %q", got)
	}
}
