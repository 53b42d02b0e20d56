// Command fleetsim simulates one phone's reporting with the real reporting
// client (agent/report): it emits events numbered 1..N (the number is in
// Fields["n"]) through the durable outbox, waits until the broker has
// acknowledged all of them, prints a JSON summary on stdout and exits 0.
// hack/e2e's TestNoLossNoDuplicates runs ten of them against a server it
// restarts and kills.
//
//	fleetsim --broker mqtt://127.0.0.1:7883 --device sim-01 --state-dir DIR --events 1000 --rate 40
//
// # Crash safety
//
// SIGKILL at any moment is safe: started again with the same --state-dir it
// continues where it stopped, and the server ends up with every n exactly
// once. The state directory holds the client's outbox (outbox/), the run
// nonce (run) and the progress (progress): K, meaning events 1..K were handed
// to the outbox. Event n is emitted as
//
//  1. report.Client.Event, which persists it in the outbox (fsynced) before
//     returning — from then on the client sends it until the broker
//     acknowledges it, across restarts;
//  2. then progress is replaced (write a temporary file, rename) with n.
//
// A crash between 1 and 2 leaves event n in the outbox (or already
// delivered) while progress still says n-1, so the next run emits n again.
// What makes that harmless is the event ID: it is not random (Event draws
// one only when the ID is empty) but derived from (tenant, device, run, n),
// so the second emission is a redelivery of the same event, which the
// server de-duplicates by (device, ID) like any QoS 1 redelivery. The copy
// emitted again gets a new, higher Seq; the stored copy is the first one the
// broker acknowledged, and since the outbox is sent in Seq order and the
// earlier copy stays in it until acknowledged, that is the earlier one: Seq
// still grows with n.
//
// For the same reason progress need not be durable, only atomic: it is not
// fsynced (a SIGKILL cannot lose what the kernel already has; a power cut
// may make it older, or lose it, which only means more events emitted again
// under the same IDs). That keeps fleetsim's own disk cost off the
// measurement: each event costs what the reporting client costs. The run
// nonce, drawn on the first start, is what must be durable — it is written
// (fsynced) before any event carries it — so that the IDs of two simulations
// of the same device name never collide.
//
// Counting the outbox's Seq instead of keeping progress would not do: the
// outbox persists the advanced Seq before the event itself, so a crash
// between the two leaves a Seq gap that would be counted as an emitted event
// — a silent loss.
//
// --crash-after-handoff N makes the process SIGKILL itself in that window,
// once: right after Event returned for event N, before progress says so (a
// marker file keeps the next run from doing it again).
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dialtone-dev/dialtone/agent/report"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Files in the state directory.
const (
	runFile      = "run"      // the run nonce, hex
	progressFile = "progress" // events handed to the outbox, decimal
	outboxDir    = "outbox"
	crashedFile  = "crashed-after-handoff" // the --crash-after-handoff marker
)

type config struct {
	broker, tenant, device, stateDir string
	tlsCA, tlsCert, tlsKey           string // mqtts: broker CA, device certificate
	events                           int
	rate                             float64
	timeout                          time.Duration
	crashAfter                       int
	logLevel                         slog.Level
}

// progress is the state kept beside the outbox.
type progress struct {
	Run     string // run nonce
	Emitted int    // events 1..Emitted were handed to the outbox
}

// Summary is the JSON line printed on stdout at exit 0.
type Summary struct {
	Device string `json:"device"`
	Events int    `json:"events"`
	// ResumedFrom is the progress at start: events 1..ResumedFrom
	// were handed to the outbox by earlier runs.
	ResumedFrom int `json:"resumed_from"`
	// Emitted is the number of events this run handed to the outbox.
	Emitted int `json:"emitted"`
	// PendingAtStart is the number of events earlier runs left in the
	// outbox, sent again by this run.
	PendingAtStart int `json:"pending_at_start"`
	// Connections counts this run's connections to the broker.
	Connections int64   `json:"connections"`
	OutboxFull  int     `json:"outbox_full"` // Event calls refused: outbox full
	Seconds     float64 `json:"seconds"`
}

func main() {
	var c config
	flag.StringVar(&c.broker, "broker", "", "broker address, mqtt://HOST:PORT")
	flag.StringVar(&c.tenant, "tenant", "fleetsim", "tenant")
	flag.StringVar(&c.device, "device", "", "device ID (also the MQTT client ID)")
	flag.StringVar(&c.stateDir, "state-dir", "", "state directory: outbox and progress; reuse it to continue after a crash")
	flag.IntVar(&c.events, "events", 1000, "number of events to emit, numbered 1..N")
	flag.Float64Var(&c.rate, "rate", 0, "events per second (0: as fast as the outbox takes them)")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up (exit 1) if the events are not all acknowledged by then")
	flag.IntVar(&c.crashAfter, "crash-after-handoff", 0, "testing: SIGKILL this process right after event N is in the outbox and before the progress file says so (once per state directory)")
	flag.StringVar(&c.tlsCA, "tls-ca", "", "mqtts: PEM CA bundle of the broker's certificate")
	flag.StringVar(&c.tlsCert, "tls-cert", "", "mqtts: PEM client certificate (CN = device ID)")
	flag.StringVar(&c.tlsKey, "tls-key", "", "mqtts: PEM key of --tls-cert")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error (logs go to stderr)")
	flag.Parse()
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		fatalf("--log-level: %v", err)
	}
	switch {
	case c.broker == "" || c.device == "" || c.stateDir == "":
		fatalf("--broker, --device and --state-dir are required")
	case c.events < 1:
		fatalf("--events must be at least 1")
	case c.rate < 0:
		fatalf("--rate must not be negative")
	case !wire.ValidID(c.tenant) || !wire.ValidID(c.device):
		fatalf("invalid --tenant %q or --device %q", c.tenant, c.device)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := run(ctx, c)
	if err != nil {
		fatalf("%s: %v", c.device, err)
	}
	b, _ := json.Marshal(sum)
	fmt.Println(string(b))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fleetsim: "+format+"\n", args...)
	os.Exit(1)
}

func run(ctx context.Context, c config) (Summary, error) {
	start := time.Now()
	sum := Summary{Device: c.device, Events: c.events}
	if err := os.MkdirAll(c.stateDir, 0o700); err != nil {
		return sum, err
	}
	prog, err := loadProgress(c.stateDir)
	if err != nil {
		return sum, err
	}
	sum.ResumedFrom = prog.Emitted

	counter := &connCounter{Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.logLevel}), connected: new(atomic.Int64)}
	log := slog.New(counter).With("device", c.device)
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return sum, err
	}
	cl, err := report.New(report.Options{
		Broker: c.broker, Tenant: c.tenant, Device: c.device, TLS: tlsCfg,
		OutboxDir: filepath.Join(c.stateDir, outboxDir), Logger: log,
	})
	if err != nil {
		return sum, err
	}
	sum.PendingAtStart = cl.Pending()
	defer func() {
		// Close flushes while connected (bounded) and disconnects cleanly;
		// whatever is left stays in the outbox for the next run.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := cl.Close(cctx); err != nil {
			log.Warn("closing", "error", err)
		}
	}()
	// Connect starts the connection manager, which keeps (re)connecting
	// until Close; events go to the outbox meanwhile.
	go func() {
		if err := cl.Connect(ctx); err != nil && ctx.Err() == nil {
			log.Warn("first connection", "error", err)
		}
	}()

	var interval time.Duration
	if c.rate > 0 {
		interval = time.Duration(float64(time.Second) / c.rate)
	}
	next := time.Now()
	for n := prog.Emitted + 1; n <= c.events; n++ {
		if interval > 0 {
			if err := sleepUntil(ctx, next); err != nil {
				return sum, err
			}
			next = next.Add(interval)
		}
		e := wire.Event{
			ID:      eventID(c.tenant, c.device, prog.Run, n),
			Type:    wire.EventCheck,
			Message: "fleetsim",
			Fields:  map[string]string{"n": strconv.Itoa(n), "run": prog.Run},
		}
		for {
			_, err := cl.Event(ctx, e)
			if err == nil {
				break
			}
			if !errors.Is(err, report.ErrOutboxFull) {
				return sum, fmt.Errorf("event %d: %w", n, err)
			}
			sum.OutboxFull++
			if err := sleepUntil(ctx, time.Now().Add(20*time.Millisecond)); err != nil {
				return sum, err
			}
		}
		if n == c.crashAfter {
			crashOnce(c.stateDir, n)
		}
		prog.Emitted = n
		if err := saveProgress(c.stateDir, prog); err != nil {
			return sum, err
		}
		sum.Emitted++
	}

	fctx, cancel := context.WithDeadline(ctx, start.Add(c.timeout))
	defer cancel()
	if err := cl.Flush(fctx); err != nil {
		return sum, err
	}
	sum.Connections = counter.connected.Load()
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// eventID is event n's ID: the same for every emission of n in a run (see
// the package documentation), 26 hex characters like the client's own.
func eventID(tenant, device, run string, n int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("fleetsim\x00%s\x00%s\x00%s\x00%d", tenant, device, run, n)))
	return hex.EncodeToString(h[:13])
}

func loadProgress(dir string) (progress, error) {
	var p progress
	runPath := filepath.Join(dir, runFile)
	b, err := os.ReadFile(runPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// First run: draw the run nonce and persist it (fsynced) before any
		// event carries it.
		var nonce [8]byte
		_, _ = rand.Read(nonce[:])
		p.Run = hex.EncodeToString(nonce[:])
		return p, atomicfile.WriteFile(runPath, []byte(p.Run+"\n"), 0o600)
	case err != nil:
		return p, err
	}
	p.Run = strings.TrimSpace(string(b))
	if len(p.Run) != 16 {
		return p, fmt.Errorf("%s: corrupt run nonce %q", runPath, b)
	}
	b, err = os.ReadFile(filepath.Join(dir, progressFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, err
	}
	if err == nil {
		// A torn or lost progress (power cut) only means emitting again
		// under the same IDs: start over rather than fail.
		if p.Emitted, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil || p.Emitted < 0 {
			fmt.Fprintf(os.Stderr, "fleetsim: unreadable progress %q: emitting from 1 again (same IDs)\n", b)
			p.Emitted = 0
		}
	}
	return p, nil
}

// saveProgress replaces the progress file atomically, without fsync (see
// the package documentation).
func saveProgress(dir string, p progress) error {
	tmp := filepath.Join(dir, "."+progressFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(p.Emitted)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, progressFile))
}

// crashOnce kills the process in the window between Event and the progress
// update, unless an earlier run already did.
func crashOnce(dir string, n int) {
	path := filepath.Join(dir, crashedFile)
	if _, err := os.Stat(path); err == nil {
		return
	}
	if err := atomicfile.WriteFile(path, []byte(strconv.Itoa(n)+"\n"), 0o600); err != nil {
		fatalf("writing %s: %v", path, err)
	}
	fmt.Fprintf(os.Stderr, "fleetsim: crashing on purpose after handing event %d to the outbox\n", n)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connCounter passes records on and counts the client's "connected" logs.
type connCounter struct {
	slog.Handler
	connected *atomic.Int64
}

func (h *connCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.Handler.Enabled(ctx, l)
}

func (h *connCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "connected" {
		h.connected.Add(1)
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h *connCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &connCounter{Handler: h.Handler.WithAttrs(as), connected: h.connected}
}

func (h *connCounter) WithGroup(name string) slog.Handler {
	return &connCounter{Handler: h.Handler.WithGroup(name), connected: h.connected}
}

// tlsConfig is the mqtts configuration of the --tls-* flags; nil without
// them.
func (c config) tlsConfig() (*tls.Config, error) {
	if c.tlsCA == "" && c.tlsCert == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", c.tlsCA)
		}
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
