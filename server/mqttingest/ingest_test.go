package mqttingest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/broker/brokertest"
	"github.com/dialtone-dev/dialtone/server/mqttingest"
)

const (
	tenant  = "acme"
	waitFor = 15 * time.Second
	// servers are the identities the broker's ACL knows.
	serverA = "dialtone-server-a"
	serverB = "dialtone-server-b"
)

// startMosquitto starts a Mosquitto whose ACL knows serverA and serverB.
func startMosquitto(t *testing.T, adjust ...func(*broker.MosquittoOptions)) *brokertest.Mosquitto {
	t.Helper()
	return brokertest.Start(t, func(o *broker.MosquittoOptions) {
		o.ServerIdentities = []string{serverA, serverB}
		for _, f := range adjust {
			f(o)
		}
	})
}

// device connects a phone with its certificate.
func device(t *testing.T, m *brokertest.Mosquitto, id string) mqtt.Client {
	t.Helper()
	return m.Connect(t, id, id, nil)
}

func publish(t *testing.T, c mqtt.Client, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("publishing to %s: timeout", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publishing to %s: %v", topic, err)
	}
}

// --- the server's side ---

type report struct {
	Topic, Payload string
}

// recorder is a fake Handler: it records what it stored; fail, when set,
// decides which deliveries fail (attempt counts deliveries of a payload).
type recorder struct {
	mu       sync.Mutex
	got      []report
	attempts map[string]int
	fail     func(r report, attempt int) error
	changed  chan struct{}
}

func newRecorder(fail func(r report, attempt int) error) *recorder {
	return &recorder{attempts: map[string]int{}, fail: fail, changed: make(chan struct{}, 1)}
}

func (r *recorder) Handle(_ context.Context, topic string, payload []byte) error {
	rep := report{Topic: topic, Payload: string(payload)}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[rep.Payload]++
	if r.fail != nil {
		if err := r.fail(rep, r.attempts[rep.Payload]); err != nil {
			return err
		}
	}
	r.got = append(r.got, rep)
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) reports() []report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) attemptsOf(payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[payload]
}

// payloads are the stored payloads, sorted.
func (r *recorder) payloads() []string {
	var ps []string
	for _, rep := range r.reports() {
		ps = append(ps, rep.Payload)
	}
	slices.Sort(ps)
	return ps
}

// waitFor waits until every payload in want was stored.
func (r *recorder) waitFor(t *testing.T, want ...string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("reports %v", want), r.changed, func() bool {
		have := r.payloads()
		for _, w := range want {
			if _, ok := slices.BinarySearch(have, w); !ok {
				return false
			}
		}
		return true
	})
}

func waitUntil(t *testing.T, what string, changed <-chan struct{}, done func() bool) {
	t.Helper()
	deadline := time.After(waitFor)
	for !done() {
		select {
		case <-changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timeout waiting for %s", what)
		}
	}
}

// server is one run of a mqttingest.Client.
type server struct {
	c         *mqttingest.Client
	cancel    context.CancelFunc
	done      chan error
	connected chan bool // session present, per connection
}

func startServer(t *testing.T, m *brokertest.Mosquitto, identity string, h mqttingest.Handler, adjust func(*mqttingest.Options)) *server {
	t.Helper()
	s := &server{done: make(chan error, 1), connected: make(chan bool, 100)}
	opts := mqttingest.Options{
		Broker:     m.TLSAddr,
		TLS:        m.PKI.ClientTLS(t, identity),
		Logger:     testutil.Logger(t).With("server", identity),
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		OnConnect:  func(present bool) { s.connected <- present },
	}
	if adjust != nil {
		adjust(&opts)
	}
	c, err := mqttingest.New(h, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.c = c
	ctx, cancel := context.WithCancel(t.Context())
	s.cancel = cancel
	go func() { s.done <- c.Run(ctx) }()
	t.Cleanup(s.stop)
	return s
}

// waitConnected waits for the next connection and returns whether the
// broker kept the session.
func (s *server) waitConnected(t *testing.T) bool {
	t.Helper()
	select {
	case present := <-s.connected:
		return present
	case <-time.After(waitFor):
		t.Fatal("mqttingest client not connected")
		return false
	}
}

func (s *server) stop() {
	s.cancel()
	if err := <-s.done; err != nil {
		panic(fmt.Sprintf("Run: %v", err))
	}
	s.done <- nil // stop is idempotent
}

// --- tests ---

func TestNewValidatesOptions(t *testing.T) {
	h := newRecorder(nil)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	for _, tc := range []struct {
		name string
		h    mqttingest.Handler
		opts mqttingest.Options
		want string
	}{
		{"no handler", nil, mqttingest.Options{Broker: "127.0.0.1:8883", TLS: cfg, ClientID: "s"}, "nil handler"},
		{"no TLS", h, mqttingest.Options{Broker: "127.0.0.1:8883", ClientID: "s"}, "TLS"},
		{"no broker", h, mqttingest.Options{TLS: cfg, ClientID: "s"}, "no broker"},
		{"plain tcp", h, mqttingest.Options{Broker: "tcp://127.0.0.1:1883", TLS: cfg, ClientID: "s"}, "only mqtts"},
		{"no port", h, mqttingest.Options{Broker: "mqtts://broker", TLS: cfg, ClientID: "s"}, "no port"},
		{"no client id nor certificate", h, mqttingest.Options{Broker: "127.0.0.1:8883", TLS: cfg}, "no client certificate"},
		{"bad client id", h, mqttingest.Options{Broker: "127.0.0.1:8883", TLS: cfg, ClientID: "a/b"}, "client id"},
		{"bad group", h, mqttingest.Options{Broker: "127.0.0.1:8883", TLS: cfg, ClientID: "s", Group: "g/#"}, "group"},
		{"negative queue", h, mqttingest.Options{Broker: "127.0.0.1:8883", TLS: cfg, ClientID: "s", QueueSize: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mqttingest.New(tc.h, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := mqttingest.New(h, mqttingest.Options{Broker: "mqtts://broker:8883", TLS: cfg, ClientID: "s"}); err != nil {
		t.Errorf("New: %v", err)
	}
}

func TestFilters(t *testing.T) {
	plain := mqttingest.Filters(false, "")
	shared := mqttingest.Filters(true, "ingest")
	for kind, qos := range map[string]byte{wire.KindState: 1, wire.KindEvents: 1, wire.KindTelemetry: 0} {
		if q, ok := plain["dialtone/v1/+/+/"+kind]; !ok || q != qos {
			t.Errorf("plain filters %v: want %s at QoS %d", plain, kind, qos)
		}
		if q, ok := shared["$share/ingest/dialtone/v1/+/+/"+kind]; !ok || q != qos {
			t.Errorf("shared filters %v: want %s at QoS %d", shared, kind, qos)
		}
	}
	if len(plain) != 3 || len(shared) != 3 {
		t.Errorf("filters: %v, %v", plain, shared)
	}
}

func TestDeviceReportsReachTheHandler(t *testing.T) {
	m := startMosquitto(t)
	rec := newRecorder(nil)
	srv := startServer(t, m, serverA, rec, nil)
	srv.waitConnected(t)

	dev := device(t, m, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindState), 1, true, "state-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "event-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindTelemetry), 0, false, "telemetry-1")
	// Not a report, and another device's topic: neither reaches the server.
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindCmd), 1, false, "cmd")
	publish(t, dev, wire.Topic(tenant, "phone-2", wire.KindEvents), 1, false, "spoofed")
	rec.waitFor(t, "state-1", "event-1", "telemetry-1")
	for _, r := range rec.reports() {
		switch r.Payload {
		case "state-1":
			if r.Topic != wire.Topic(tenant, "phone-1", wire.KindState) {
				t.Errorf("state on %s", r.Topic)
			}
		case "cmd", "spoofed":
			t.Errorf("%q reached the server on %s", r.Payload, r.Topic)
		}
	}
	if st := srv.c.Stats(); st.Handled < 3 || st.Failed != 0 || st.Connects != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A report the handler fails to store is not acknowledged: the client
// reconnects and the broker sends it again.
func TestUnstoredReportIsRedelivered(t *testing.T) {
	m := startMosquitto(t)
	rec := newRecorder(func(r report, attempt int) error {
		if r.Payload == "event-1" && attempt == 1 {
			return errors.New("store unavailable")
		}
		return nil
	})
	srv := startServer(t, m, serverA, rec, nil)
	srv.waitConnected(t)
	dev := device(t, m, "phone-1")
	for i := 1; i <= 3; i++ {
		publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "event-"+strconv.Itoa(i))
	}
	rec.waitFor(t, "event-1", "event-2", "event-3")
	if present := srv.waitConnected(t); !present {
		t.Error("the broker did not keep the session across the reconnection")
	}
	if n := rec.attemptsOf("event-1"); n != 2 {
		t.Errorf("event-1 handled %d times, want 2", n)
	}
	st := srv.c.Stats()
	if st.Failed != 1 || st.Connects < 2 {
		t.Errorf("stats %+v: want one failure and a reconnection", st)
	}
	// Stored once each: after the failure the client skipped the rest of
	// the connection's reports, which came again in order.
	if got, want := rec.payloads(), []string{"event-1", "event-2", "event-3"}; !slices.Equal(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}

// A server that stops before storing a report gets it when it starts again
// with the same client ID.
func TestUnstoredReportSurvivesAServerRestart(t *testing.T) {
	m := startMosquitto(t)
	failing := newRecorder(func(r report, _ int) error { return errors.New("store down") })
	first := startServer(t, m, serverA, failing, nil)
	first.waitConnected(t)
	dev := device(t, m, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "event-1")
	waitUntil(t, "a failed delivery", nil, func() bool { return failing.attemptsOf("event-1") >= 2 })
	first.stop()

	rec := newRecorder(nil)
	second := startServer(t, m, serverA, rec, nil)
	if present := second.waitConnected(t); !present {
		t.Error("session not resumed")
	}
	rec.waitFor(t, "event-1")
}

// Reports published while the server is away wait in its persistent
// session, also across a (clean) broker restart.
func TestReportsQueuedWhileAwaySurviveABrokerRestart(t *testing.T) {
	m := startMosquitto(t)
	rec := newRecorder(nil)
	first := startServer(t, m, serverA, rec, nil)
	first.waitConnected(t)
	first.stop()

	dev := device(t, m, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindState), 1, true, "state-1")
	for i := 1; i <= 5; i++ {
		publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "before-restart-"+strconv.Itoa(i))
	}
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindTelemetry), 0, false, "telemetry-lost")
	dev.Disconnect(100)
	m.Stop() // SIGTERM: Mosquitto saves its database
	m.Start()
	dev = device(t, m, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "after-restart")

	second := startServer(t, m, serverA, rec, nil)
	if present := second.waitConnected(t); !present {
		t.Error("session lost in the broker restart")
	}
	rec.waitFor(t, "state-1", "before-restart-1", "before-restart-2", "before-restart-3", "before-restart-4", "before-restart-5", "after-restart")
	// The order of a device's events is kept.
	var events []string
	for _, r := range rec.reports() {
		if strings.HasSuffix(r.Topic, "/events") {
			events = append(events, r.Payload)
		}
	}
	want := []string{"before-restart-1", "before-restart-2", "before-restart-3", "before-restart-4", "before-restart-5", "after-restart"}
	if !slices.Equal(events, want) {
		t.Errorf("events in order %v, want %v", events, want)
	}
	// QoS 0 telemetry is not queued for an absent client.
	if rec.attemptsOf("telemetry-lost") != 0 {
		t.Error("QoS 0 telemetry was queued")
	}
}

// Two replicas in one shared subscription group split the reports.
func TestSharedSubscriptionSplitsReports(t *testing.T) {
	m := startMosquitto(t)
	recA, recB := newRecorder(nil), newRecorder(nil)
	shared := func(o *mqttingest.Options) { o.Shared = true; o.Workers = 4 }
	a := startServer(t, m, serverA, recA, shared)
	b := startServer(t, m, serverB, recB, shared)
	a.waitConnected(t)
	b.waitConnected(t)

	var want []string
	var wg sync.WaitGroup
	for d := range 4 {
		id := "phone-" + strconv.Itoa(d)
		dev := device(t, m, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				tok := dev.Publish(wire.Topic(tenant, id, wire.KindEvents), 1, false, id+"-"+strconv.Itoa(i))
				if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
					t.Errorf("publishing: %v", tok.Error())
				}
			}
		}()
		for i := range 15 {
			want = append(want, id+"-"+strconv.Itoa(i))
		}
	}
	wg.Wait()
	slices.Sort(want)
	var all []string
	waitUntil(t, "all reports in either replica", nil, func() bool {
		all = append(recA.payloads(), recB.payloads()...)
		return len(all) >= len(want)
	})
	time.Sleep(100 * time.Millisecond) // duplicates would have arrived by now
	pa, pb := recA.payloads(), recB.payloads()
	all = append(slices.Clone(pa), pb...)
	slices.Sort(all)
	if !slices.Equal(all, want) {
		t.Errorf("replicas stored %d reports (%d + %d), want each of %d once", len(all), len(pa), len(pb), len(want))
	}
	if len(pa) == 0 || len(pb) == 0 {
		t.Errorf("split %d / %d: want both replicas to get some", len(pa), len(pb))
	}
	t.Logf("split: %s %d, %s %d", serverA, len(pa), serverB, len(pb))
}

// With Mosquitto 2.0.11, a replica that is away (its session persists)
// keeps its turn in the shared subscription: the broker queues that
// replica's share for it instead of giving it to the replica that is
// connected. Nothing is lost, but that share waits for the replica to come
// back (or, for a replica removed for good, until max_queued_messages
// overflows: see the report of broker.WatchMosquittoLog).
func TestSharedSubscriptionWithAReplicaAway(t *testing.T) {
	m := startMosquitto(t)
	recA, recB := newRecorder(nil), newRecorder(nil)
	shared := func(o *mqttingest.Options) { o.Shared = true }
	a := startServer(t, m, serverA, recA, shared)
	b := startServer(t, m, serverB, recB, shared)
	a.waitConnected(t)
	b.waitConnected(t)
	b.stop()

	dev := device(t, m, "phone-1")
	var want []string
	for i := range 20 {
		p := fmt.Sprintf("event-%02d", i)
		publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, p)
		want = append(want, p)
	}
	time.Sleep(300 * time.Millisecond)
	whileAway := len(recA.payloads())
	t.Logf("while %s was away, %s got %d of %d reports", serverB, serverA, whileAway, len(want))
	if whileAway == len(want) {
		t.Logf("this Mosquitto gives an away replica's share to a connected one")
	}

	b2 := startServer(t, m, serverB, recB, shared)
	b2.waitConnected(t)
	waitUntil(t, "every report in one replica or the other", nil, func() bool {
		return len(recA.payloads())+len(recB.payloads()) >= len(want)
	})
	time.Sleep(100 * time.Millisecond)
	all := append(recA.payloads(), recB.payloads()...)
	slices.Sort(all)
	if !slices.Equal(all, want) {
		t.Errorf("stored %v, want %v", all, want)
	}
	t.Logf("after %s came back it got %d", serverB, len(recB.payloads()))
}

// A broker crash (SIGKILL) keeps only what Mosquitto saved at its last
// autosave: reports queued for the absent server since then are lost,
// although their devices got a PUBACK and dropped them from their outboxes.
func TestBrokerCrashKeepsWhatWasAutosaved(t *testing.T) {
	m := startMosquitto(t, func(o *broker.MosquittoOptions) { o.AutosaveInterval = time.Second })
	rec := newRecorder(nil)
	first := startServer(t, m, serverA, rec, nil)
	first.waitConnected(t)
	first.stop()
	dev := device(t, m, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "saved")
	time.Sleep(2500 * time.Millisecond) // an autosave
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "since-autosave")
	dev.Disconnect(100)
	m.Kill()
	m.Start()
	second := startServer(t, m, serverA, rec, nil)
	if present := second.waitConnected(t); !present {
		t.Error("session lost in the crash")
	}
	rec.waitFor(t, "saved")
	time.Sleep(300 * time.Millisecond)
	t.Logf("report queued after the last autosave delivered after the crash: %v", rec.attemptsOf("since-autosave") > 0)
}
