package mqttingest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
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
	"github.com/dialtone-dev/dialtone/server/mqttingest"
)

const (
	tenant  = "acme"
	waitFor = 15 * time.Second
	// servers are the identities the broker's ACL knows.
	serverA = "dialtone-server-a"
	serverB = "dialtone-server-b"
)

// --- a CA, and Mosquitto configured by broker.MosquittoConfig ---

type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
	pool   *x509.CertPool
	mu     sync.Mutex
	serial int64
}

func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	key := genKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dialtone test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating CA: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, ca: ca, caKey: key, caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool(), serial: 1}
	p.pool.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", der)
	return p
}

// issue makes a client certificate for cn, or a server one for 127.0.0.1,
// and writes both halves to dir.
func (p *testPKI) issue(t *testing.T, cn string, server bool) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key := genKey(t)
	p.mu.Lock()
	p.serial++
	serial := p.serial
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("issuing %s: %v", cn, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, cn+".pem"), filepath.Join(p.dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *testPKI) clientTLS(t *testing.T, cn string) *tls.Config {
	t.Helper()
	_, _, cert := p.issue(t, cn, false)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool, Certificates: []tls.Certificate{cert}}
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

type extMosquitto struct {
	*testutil.Mosquitto
	pki     *testPKI
	tls     string // TLS listener
	logFile string
}

func startMosquitto(t *testing.T, adjust ...func(*broker.MosquittoOptions)) *extMosquitto {
	t.Helper()
	dir := t.TempDir()
	p := newTestPKI(t, dir)
	certFile, keyFile, _ := p.issue(t, "mosquitto", true)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	opts := broker.MosquittoOptions{
		Port:             n,
		Bind:             "127.0.0.1",
		CAFile:           p.caFile,
		CertFile:         certFile,
		KeyFile:          keyFile,
		ACLFile:          filepath.Join(dir, "acl"),
		PersistenceDir:   filepath.Join(dir, "db"),
		LogFile:          filepath.Join(dir, "mosquitto.log"),
		ServerIdentities: []string{serverA, serverB},
		LogDenials:       true,
	}
	if err := os.Mkdir(opts.PersistenceDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range adjust {
		f(&opts)
	}
	conf, acl, err := broker.MosquittoConfig(opts)
	if err != nil {
		t.Fatalf("MosquittoConfig: %v", err)
	}
	if err := os.WriteFile(opts.ACLFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	m := testutil.NewMosquitto(t, conf)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(opts.LogFile)
			t.Logf("mosquitto log file:\n%s", b)
		}
	})
	return &extMosquitto{Mosquitto: m, pki: p, tls: addr, logFile: opts.LogFile}
}

// device connects a phone with its certificate.
func (m *extMosquitto) device(t *testing.T, id string) mqtt.Client {
	t.Helper()
	cfg := m.pki.clientTLS(t, id)
	c, err := testutil.TryConnectMQTT(m.tls, id, func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + m.tls)
		o.SetTLSConfig(cfg)
	})
	if err != nil {
		t.Fatalf("connecting %s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
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

func (m *extMosquitto) startServer(t *testing.T, identity string, h mqttingest.Handler, adjust func(*mqttingest.Options)) *server {
	t.Helper()
	s := &server{done: make(chan error, 1), connected: make(chan bool, 100)}
	opts := mqttingest.Options{
		Broker:     m.tls,
		TLS:        m.pki.clientTLS(t, identity),
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
	srv := m.startServer(t, serverA, rec, nil)
	srv.waitConnected(t)

	dev := m.device(t, "phone-1")
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
	srv := m.startServer(t, serverA, rec, nil)
	srv.waitConnected(t)
	dev := m.device(t, "phone-1")
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
	first := m.startServer(t, serverA, failing, nil)
	first.waitConnected(t)
	dev := m.device(t, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "event-1")
	waitUntil(t, "a failed delivery", nil, func() bool { return failing.attemptsOf("event-1") >= 2 })
	first.stop()

	rec := newRecorder(nil)
	second := m.startServer(t, serverA, rec, nil)
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
	first := m.startServer(t, serverA, rec, nil)
	first.waitConnected(t)
	first.stop()

	dev := m.device(t, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindState), 1, true, "state-1")
	for i := 1; i <= 5; i++ {
		publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "before-restart-"+strconv.Itoa(i))
	}
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindTelemetry), 0, false, "telemetry-lost")
	dev.Disconnect(100)
	m.Stop() // SIGTERM: Mosquitto saves its database
	m.Start()
	dev = m.device(t, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "after-restart")

	second := m.startServer(t, serverA, rec, nil)
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
	a := m.startServer(t, serverA, recA, shared)
	b := m.startServer(t, serverB, recB, shared)
	a.waitConnected(t)
	b.waitConnected(t)

	var want []string
	var wg sync.WaitGroup
	for d := range 4 {
		id := "phone-" + strconv.Itoa(d)
		dev := m.device(t, id)
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
	a := m.startServer(t, serverA, recA, shared)
	b := m.startServer(t, serverB, recB, shared)
	a.waitConnected(t)
	b.waitConnected(t)
	b.stop()

	dev := m.device(t, "phone-1")
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

	b2 := m.startServer(t, serverB, recB, shared)
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
	first := m.startServer(t, serverA, rec, nil)
	first.waitConnected(t)
	first.stop()
	dev := m.device(t, "phone-1")
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "saved")
	time.Sleep(2500 * time.Millisecond) // an autosave
	publish(t, dev, wire.Topic(tenant, "phone-1", wire.KindEvents), 1, false, "since-autosave")
	dev.Disconnect(100)
	m.Kill()
	m.Start()
	second := m.startServer(t, serverA, rec, nil)
	if present := second.waitConnected(t); !present {
		t.Error("session lost in the crash")
	}
	rec.waitFor(t, "saved")
	time.Sleep(300 * time.Millisecond)
	t.Logf("report queued after the last autosave delivered after the crash: %v", rec.attemptsOf("since-autosave") > 0)
}
