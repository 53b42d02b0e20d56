package broker_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
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
)

// denials collects what WatchMosquittoLog reports.
type denials struct {
	mu   sync.Mutex
	got  []broker.Denial
	more chan struct{}
}

func watchDenials(t *testing.T, path string) *denials {
	t.Helper()
	d := &denials{more: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() {
		done <- broker.WatchMosquittoLog(t.Context(), broker.MosquittoLogOptions{
			Path:         path,
			FromStart:    true,
			PollInterval: 20 * time.Millisecond,
			Logger:       testutil.Logger(t),
			OnDenial: func(x broker.Denial) {
				d.mu.Lock()
				d.got = append(d.got, x)
				d.mu.Unlock()
				select {
				case d.more <- struct{}{}:
				default:
				}
			},
		})
	}()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("WatchMosquittoLog: %v", err)
		}
	})
	return d
}

// waitFor waits until a denial matching want arrived.
func (d *denials) waitFor(t *testing.T, want broker.Denial) broker.Denial {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		d.mu.Lock()
		for _, x := range d.got {
			if x.Kind == want.Kind && x.Client == want.Client && x.Topic == want.Topic {
				d.mu.Unlock()
				return x
			}
		}
		n := len(d.got)
		d.mu.Unlock()
		select {
		case <-d.more:
		case <-deadline:
			t.Fatalf("no denial %+v among %d: %+v", want, n, d.snapshot())
		}
	}
}

func (d *denials) snapshot() []broker.Denial {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]broker.Denial(nil), d.got...)
}

func TestMosquittoConfig(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "srv.pem", "srv.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := broker.MosquittoOptions{
		CAFile:           filepath.Join(dir, "ca.pem"),
		CertFile:         filepath.Join(dir, "srv.pem"),
		KeyFile:          filepath.Join(dir, "srv.key"),
		ACLFile:          filepath.Join(dir, "acl"),
		PersistenceDir:   dir,
		LogFile:          filepath.Join(dir, "mosquitto.log"),
		ServerIdentities: []string{"srv-a", "srv-b"},
	}
	conf, acl, err := broker.MosquittoConfig(good)
	if err != nil {
		t.Fatalf("MosquittoConfig: %v", err)
	}
	for _, line := range []string{
		"allow_anonymous false",
		"acl_file " + good.ACLFile,
		"persistence true",
		"persistence_location " + dir + "/",
		"max_packet_size ",
		"log_dest file " + good.LogFile,
		"log_type information",
		"log_type subscribe",
		"listener 8883\n",
		"cafile " + good.CAFile,
		"require_certificate true",
		"use_identity_as_username true",
		"use_username_as_clientid true",
		"tls_version tlsv1.2",
	} {
		if !strings.Contains(conf, line) {
			t.Errorf("configuration lacks %q:\n%s", line, conf)
		}
	}
	if strings.Contains(conf, "log_type debug") {
		t.Error("log_type debug without LogDenials")
	}
	for _, line := range []string{
		"pattern write dialtone/v1/+/%u/state\n",
		"pattern write dialtone/v1/+/%u/events\n",
		"pattern write dialtone/v1/+/%u/telemetry\n",
		"pattern read dialtone/v1/+/%u/cmd\n",
		"user srv-a\ntopic read dialtone/v1/#\ntopic write dialtone/v1/+/+/cmd\n",
		"user srv-b\ntopic read dialtone/v1/#\ntopic write dialtone/v1/+/+/cmd\n",
	} {
		if !strings.Contains(acl, line) {
			t.Errorf("ACL lacks %q:\n%s", line, acl)
		}
	}
	if strings.Contains(acl, "%c") {
		t.Error("ACL keyed on the client ID")
	}

	for _, tc := range []struct {
		name   string
		adjust func(*broker.MosquittoOptions)
		want   string
	}{
		{"port too high", func(o *broker.MosquittoOptions) { o.Port = 65536 }, "port 65536"},
		{"negative port", func(o *broker.MosquittoOptions) { o.Port = -1 }, "port -1"},
		{"bad identity", func(o *broker.MosquittoOptions) { o.ServerIdentities = []string{"srv/#"} }, `server identity "srv/#"`},
		{"duplicate identity", func(o *broker.MosquittoOptions) { o.ServerIdentities = []string{"a", "a"} }, "given twice"},
		{"missing CA", func(o *broker.MosquittoOptions) { o.CAFile = filepath.Join(dir, "nope.pem") }, "CA file"},
		{"CA is a directory", func(o *broker.MosquittoOptions) { o.CAFile = dir }, "not a regular file"},
		{"no key", func(o *broker.MosquittoOptions) { o.KeyFile = "" }, "key file: no path"},
		{"missing CRL", func(o *broker.MosquittoOptions) { o.CRLFile = filepath.Join(dir, "crl.pem") }, "CRL file"},
		{"ACL directory missing", func(o *broker.MosquittoOptions) { o.ACLFile = filepath.Join(dir, "no", "acl") }, "ACL file"},
		{"persistence not a directory", func(o *broker.MosquittoOptions) { o.PersistenceDir = good.CAFile }, "not a directory"},
		{"log path with a newline", func(o *broker.MosquittoOptions) { o.LogFile = dir + "/x\nlistener 1883" }, "spaces or control"},
		{"path with a space", func(o *broker.MosquittoOptions) { o.LogFile = dir + "/my log" }, "spaces or control"},
		{"bad bind", func(o *broker.MosquittoOptions) { o.Bind = "0.0.0.0 1883" }, "bind address"},
		{"negative queue", func(o *broker.MosquittoOptions) { o.MaxQueuedMessages = -1 }, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.adjust(&o)
			_, _, err := broker.MosquittoConfig(o)
			if !errors.Is(err, broker.ErrMosquittoOptions) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrMosquittoOptions mentioning %q", err, tc.want)
			}
		})
	}
}

func TestMosquittoDeviceACL(t *testing.T) {
	m := brokertest.Start(t, nil)
	seen := watchDenials(t, m.Opts.LogFile)
	srv := m.Connect(t, broker.DefaultServerIdentity, "ignored", nil)
	reports := testutil.Subscribe(t, srv, wire.TopicRoot+"/#")

	a := m.Connect(t, "phone-a", "phone-a", nil)
	publish(t, a, wire.Topic(tenant, "phone-a", wire.KindState), 1, true, "a-state")
	publish(t, a, wire.Topic(tenant, "phone-a", wire.KindEvents), 1, false, "a-event")
	publish(t, a, wire.Topic(tenant, "phone-a", wire.KindTelemetry), 0, false, "a-telemetry")
	reports.WaitFor(t, waitFor, "phone-a's reports", func(ms []testutil.Message) bool {
		return hasPayload("a-state")(ms) && hasPayload("a-event")(ms) && hasPayload("a-telemetry")(ms)
	})

	// Device B, subscribed to its commands, to see what A's attempts reach.
	b := m.Connect(t, "phone-b", "phone-b", nil)
	bGot := testutil.Subscribe(t, b, wire.Topic(tenant, "phone-b", wire.KindCmd))

	// A speaks for B, and sends commands: dropped (MQTT 3.1.1 still
	// acknowledges a QoS 1 publish), and logged.
	refused := []string{
		wire.Topic(tenant, "phone-b", wire.KindEvents),
		wire.Topic(tenant, "phone-b", wire.KindState),
		wire.Topic(tenant, "phone-b", wire.KindCmd),
		wire.Topic(tenant, "phone-a", wire.KindCmd),
		"elsewhere/topic",
	}
	for i, topic := range refused {
		publish(t, a, topic, byte(i%2), false, "forbidden-"+topic)
	}
	for _, topic := range refused {
		seen.waitFor(t, broker.Denial{Kind: broker.DeniedPublish, Client: "phone-a", Topic: topic})
	}

	// A subscribes to everything and to B's commands. Mosquitto's acl_file
	// grants both SUBACKs (it cannot refuse a subscription) but delivers
	// nothing A may not read; the watcher reports both subscriptions.
	aGot := &testutil.Collector{}
	for _, filter := range []string{"#", wire.Topic(tenant, "phone-b", wire.KindCmd), wire.TopicRoot + "/+/+/events"} {
		code := testutil.SubscribeCode(t, a, filter, aGot.Handler)
		t.Logf("Mosquitto's SUBACK for phone-a subscribing to %q: %#x", filter, code)
		seen.waitFor(t, broker.Denial{Kind: broker.DeniedSubscribe, Client: "phone-a", Topic: filter})
	}
	publish(t, srv, wire.Topic(tenant, "phone-b", wire.KindCmd), 1, false, "cmd-for-b")
	publish(t, srv, wire.Topic(tenant, "phone-a", wire.KindCmd), 1, false, "cmd-for-a")
	publish(t, b, wire.Topic(tenant, "phone-b", wire.KindEvents), 1, false, "b-event")
	bGot.WaitFor(t, waitFor, "B's command", hasPayload("cmd-for-b"))
	aGot.WaitFor(t, waitFor, "A's own command", hasPayload("cmd-for-a"))
	reports.WaitFor(t, waitFor, "B's event", hasPayload("b-event"))
	time.Sleep(100 * time.Millisecond) // anything misrouted would have arrived by now
	for _, msg := range aGot.Messages() {
		if msg.Topic != wire.Topic(tenant, "phone-a", wire.KindCmd) {
			t.Errorf("phone-a received %q on %s", msg.Payload, msg.Topic)
		}
	}
	for _, topic := range refused {
		mustNotContain(t, reports, "forbidden-"+topic)
		mustNotContain(t, bGot, "forbidden-"+topic)
	}

	// The server's own subscription and B's are not reported.
	for _, d := range seen.snapshot() {
		if d.Client != "phone-a" {
			t.Errorf("unexpected denial %v", d)
		}
	}
}

func TestMosquittoClientIDIsTheCertificateCN(t *testing.T) {
	m := brokertest.Start(t, nil)
	// The server's persistent session, offline with reports queued.
	srv := m.Connect(t, broker.DefaultServerIdentity, broker.DefaultServerIdentity, func(o *mqtt.ClientOptions) { o.SetCleanSession(false) })
	testutil.Subscribe(t, srv, wire.TopicRoot+"/#")
	srv.Disconnect(100)
	dev := m.Connect(t, "phone-a", "phone-a", nil)
	publish(t, dev, wire.Topic(tenant, "phone-a", wire.KindEvents), 1, false, "queued-1")

	// A device claiming the server's client ID gets its own CN instead:
	// it neither takes over nor discards the server's session.
	thief := m.Connect(t, "phone-b", broker.DefaultServerIdentity, func(o *mqtt.ClientOptions) { o.SetCleanSession(false) })
	stolen := testutil.Subscribe(t, thief, wire.Topic(tenant, "phone-b", wire.KindCmd))
	publish(t, dev, wire.Topic(tenant, "phone-a", wire.KindEvents), 1, false, "queued-2")
	thief.Disconnect(100)

	back := &testutil.Collector{}
	m.Connect(t, broker.DefaultServerIdentity, broker.DefaultServerIdentity, func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false)
		o.SetDefaultPublishHandler(back.Handler)
	})
	back.WaitFor(t, waitFor, "the reports queued while away", func(ms []testutil.Message) bool {
		return hasPayload("queued-1")(ms) && hasPayload("queued-2")(ms)
	})
	if n := len(stolen.Messages()); n != 0 {
		t.Errorf("the device claiming the server's client ID received %d messages", n)
	}
}

func TestMosquittoRefusesClientsWithoutAValidCertificate(t *testing.T) {
	m := brokertest.Start(t, nil)
	other := testutil.NewPKI(t, t.TempDir(), "another-ca")
	_, _, foreign := other.Issue(t, "phone-a", false)
	_, _, valid := m.PKI.Issue(t, "phone-a", false)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no client certificate", &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.PKI.Pool}},
		{"certificate from another CA", &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.PKI.Pool, Certificates: []tls.Certificate{foreign}}},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, RootCAs: m.PKI.Pool, Certificates: []tls.Certificate{valid}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := m.TryConnect(tc.cfg, "phone-a", func(o *mqtt.ClientOptions) { o.SetConnectTimeout(3 * time.Second) })
			if err == nil {
				c.Disconnect(0)
				t.Fatal("connected")
			}
			t.Logf("refused: %v", err)
		})
	}
	// testutil's plain listener: no password file, no anonymous access.
	c, err := testutil.TryConnectMQTT(m.Addr, "phone-a", func(o *mqtt.ClientOptions) {
		o.SetUsername(broker.DefaultServerIdentity)
		o.SetPassword("anything")
	})
	if err == nil {
		c.Disconnect(0)
		t.Fatal("plain connection with a username accepted")
	}
	// A valid device certificate works.
	m.Connect(t, "phone-a", "phone-a", nil)
}

func TestMosquittoLongTopicDenialIsReportedCut(t *testing.T) {
	m := brokertest.Start(t, nil)
	seen := watchDenials(t, m.Opts.LogFile)
	a := m.Connect(t, "phone-a", "phone-a", nil)
	long := wire.Topic(tenant, "phone-b", wire.KindEvents) + "/" + strings.Repeat("x", 3000)
	publish(t, a, long, 1, false, "long")
	deadline := time.Now().Add(waitFor)
	for {
		for _, d := range seen.snapshot() {
			if d.Kind == broker.DeniedPublish && d.Client == "phone-a" {
				if !strings.HasPrefix(long, d.Topic) || !d.Truncated || len(d.Topic) < 100 {
					t.Fatalf("denial %+v (topic of %d bytes): want a cut prefix of the topic", d, len(d.Topic))
				}
				t.Logf("Mosquitto logged %d of the topic's %d bytes", len(d.Topic), len(long))
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no denial: %+v", seen.snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMosquittoQueueOverflowIsReported(t *testing.T) {
	m := brokertest.Start(t, func(o *broker.MosquittoOptions) { o.MaxQueuedMessages = 2 })
	seen := watchDenials(t, m.Opts.LogFile)
	srv := m.Connect(t, broker.DefaultServerIdentity, "x", func(o *mqtt.ClientOptions) { o.SetCleanSession(false) })
	testutil.Subscribe(t, srv, wire.TopicRoot+"/#")
	srv.Disconnect(100)
	dev := m.Connect(t, "phone-a", "phone-a", nil)
	for i := range 5 {
		publish(t, dev, wire.Topic(tenant, "phone-a", wire.KindEvents), 1, false, "e"+strconv.Itoa(i))
	}
	seen.waitFor(t, broker.Denial{Kind: broker.DroppedQueued, Client: broker.DefaultServerIdentity})
}
