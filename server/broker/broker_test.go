package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
)

const (
	tenant  = "acme"
	waitFor = 10 * time.Second
)

func startBroker(t *testing.T, opts broker.Options) *broker.Broker {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = testutil.Logger(t)
	}
	b, err := broker.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func devBroker(t *testing.T) *broker.Broker {
	t.Helper()
	return startBroker(t, broker.Options{Dev: true})
}

// device connects a paho client as device id (client ID = username = id).
func device(t *testing.T, b *broker.Broker, id string, configure func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	return testutil.ConnectMQTT(t, b.Addr().String(), id, func(o *mqtt.ClientOptions) {
		o.SetUsername(id)
		if configure != nil {
			configure(o)
		}
	})
}

// serverSide collects what the server sees through an inline subscription.
func serverSide(t *testing.T, b *broker.Broker, filter string) *testutil.Collector {
	t.Helper()
	col := &testutil.Collector{}
	if err := b.Subscribe(filter, func(topic string, payload []byte) {
		col.Add(testutil.Message{Topic: topic, Payload: payload})
	}); err != nil {
		t.Fatalf("Subscribe(%q): %v", filter, err)
	}
	return col
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

func hasPayload(want string) func([]testutil.Message) bool {
	return func(ms []testutil.Message) bool {
		for _, m := range ms {
			if string(m.Payload) == want {
				return true
			}
		}
		return false
	}
}

// mustNotContain fails if any message recorded so far has one of the
// payloads.
func mustNotContain(t *testing.T, col *testutil.Collector, payloads ...string) {
	t.Helper()
	for _, m := range col.Messages() {
		for _, p := range payloads {
			if string(m.Payload) == p {
				t.Errorf("refused message %q on %s reached the subscriber", p, m.Topic)
			}
		}
	}
}

func TestNewRequiresAuthenticatorOutsideDevMode(t *testing.T) {
	if _, err := broker.New(broker.Options{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("New without Authenticator and without Dev succeeded")
	}
	if _, err := broker.New(broker.Options{Dev: true}); err == nil {
		t.Fatal("New without address succeeded")
	}
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Auth: passwords{}})
	if err != nil {
		t.Fatalf("New with Authenticator: %v", err)
	}
	if b.Addr() != nil {
		t.Errorf("Addr before Start = %v, want nil", b.Addr())
	}
	_ = b.Close()
	if err := b.Start(t.Context()); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestDeviceReportsReachServer(t *testing.T) {
	b := devBroker(t)
	seen := serverSide(t, b, wire.TopicRoot+"/#")
	d := device(t, b, "phone1", nil)

	publish(t, d, wire.Topic(tenant, "phone1", wire.KindState), 1, true, "state-1")
	publish(t, d, wire.Topic(tenant, "phone1", wire.KindEvents), 1, false, "event-1")
	publish(t, d, wire.Topic(tenant, "phone1", wire.KindTelemetry), 0, false, "telemetry-1")

	msgs := seen.WaitFor(t, waitFor, "three reports", func(ms []testutil.Message) bool { return len(ms) >= 3 })
	want := []testutil.Message{
		{Topic: wire.Topic(tenant, "phone1", wire.KindState), Payload: []byte("state-1")},
		{Topic: wire.Topic(tenant, "phone1", wire.KindEvents), Payload: []byte("event-1")},
		{Topic: wire.Topic(tenant, "phone1", wire.KindTelemetry), Payload: []byte("telemetry-1")},
	}
	for i, w := range want {
		if msgs[i].Topic != w.Topic || string(msgs[i].Payload) != string(w.Payload) {
			t.Errorf("message %d = %s %q, want %s %q", i, msgs[i].Topic, msgs[i].Payload, w.Topic, w.Payload)
		}
	}
	// The retained state reaches a server subscription made later.
	late := serverSide(t, b, wire.Topic("+", "+", wire.KindState))
	late.WaitFor(t, waitFor, "retained state", hasPayload("state-1"))
	if n := b.Refusals(); n != 0 {
		t.Errorf("Refusals = %d, want 0", n)
	}
}

func TestDeviceCannotPublishOutsideItsSubtree(t *testing.T) {
	b := devBroker(t)
	seen := serverSide(t, b, "#")
	d := device(t, b, "phone1", nil)

	forbidden := []string{
		wire.Topic(tenant, "phone2", wire.KindEvents), // another device
		wire.Topic(tenant, "phone2", wire.KindState),
		wire.Topic(tenant, "phone1", wire.KindCmd), // its own commands
		wire.TopicRoot + "/" + tenant + "/phone1",  // not a Dialtone topic
		"elsewhere/phone1/events",
	}
	var payloads []string
	for i, topic := range forbidden {
		p := fmt.Sprintf("forbidden-%d", i)
		payloads = append(payloads, p)
		publish(t, d, topic, 0, false, p) // QoS 0: dropped silently
	}
	// Retained is for state only.
	publish(t, d, wire.Topic(tenant, "phone1", wire.KindEvents), 0, true, "retained-event")
	payloads = append(payloads, "retained-event")

	// Packets of one connection are handled in order: once this marker
	// arrived, every refused message would have arrived before it.
	publish(t, d, wire.Topic(tenant, "phone1", wire.KindEvents), 1, false, "marker")
	seen.WaitFor(t, waitFor, "marker", hasPayload("marker"))
	mustNotContain(t, seen, payloads...)
	if got, want := b.Refusals(), uint64(len(payloads)); got != want {
		t.Errorf("Refusals = %d, want %d", got, want)
	}

	// MQTT 3.1.1 cannot refuse a QoS 1 publish: the broker disconnects.
	lost := make(chan error, 1)
	d2 := device(t, b, "phone3", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	before := b.Refusals()
	d2.Publish(wire.Topic(tenant, "phone2", wire.KindEvents), 1, false, "forbidden-qos1")
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("device publishing QoS 1 to another device's topic was not disconnected")
	}
	if b.Refusals() <= before {
		t.Error("QoS 1 refusal not counted")
	}
	mustNotContain(t, seen, "forbidden-qos1")
}

func TestDeviceCannotSubscribeOutsideItsCommands(t *testing.T) {
	b := devBroker(t)
	d := device(t, b, "phone1", nil)
	got := &testutil.Collector{}
	for _, filter := range []string{
		"#",
		wire.TopicRoot + "/#",
		wire.Topic(tenant, "phone2", wire.KindCmd),
		wire.Topic("+", "phone1", wire.KindCmd), // wildcards are not spelt-out tenants
		wire.Topic(tenant, "phone1", wire.KindState),
		"$SYS/#",
	} {
		if code := testutil.SubscribeCode(t, d, filter, got.Handler); code != 0x80 {
			t.Errorf("subscribing to %q: code %#x, want 0x80 (failure)", filter, code)
		}
	}
	if n := b.Refusals(); n != 6 {
		t.Errorf("Refusals = %d, want 6", n)
	}
	own := wire.Topic(tenant, "phone1", wire.KindCmd)
	if code := testutil.SubscribeCode(t, d, own, got.Handler); code != 1 {
		t.Fatalf("subscribing to own commands: code %#x, want 1", code)
	}
	// The server's commands reach the device, another device's do not.
	if err := b.Publish(wire.Topic(tenant, "phone2", wire.KindCmd), []byte("for-phone2"), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(own, []byte("for-phone1"), false, 1); err != nil {
		t.Fatal(err)
	}
	got.WaitFor(t, waitFor, "own command", hasPayload("for-phone1"))
	mustNotContain(t, got, "for-phone2")

	for _, topic := range []string{"", "dialtone/v1/+/phone1/cmd", "dialtone/#"} {
		if err := b.Publish(topic, []byte("x"), false, 1); err == nil {
			t.Errorf("Publish(%q) succeeded", topic)
		}
	}
}

func TestConnectionRefusals(t *testing.T) {
	b := devBroker(t)
	addr := b.Addr().String()
	for _, tc := range []struct {
		name      string
		clientID  string
		configure func(*mqtt.ClientOptions)
		code      byte
	}{
		{"client id differs from username", "phone1", func(o *mqtt.ClientOptions) { o.SetUsername("phone2") }, packets.ErrRefusedIDRejected},
		{"no username", "phone1", nil, packets.ErrRefusedNotAuthorised},
		{"username not a device id", "a/b", func(o *mqtt.ClientOptions) { o.SetUsername("a/b") }, packets.ErrRefusedNotAuthorised},
		{"reserved inline id", "inline", func(o *mqtt.ClientOptions) { o.SetUsername("inline") }, packets.ErrRefusedIDRejected},
		{"will on another device", "phone1", func(o *mqtt.ClientOptions) {
			o.SetUsername("phone1")
			o.SetWill(wire.Topic(tenant, "phone2", wire.KindState), "offline", 1, true)
		}, packets.ErrRefusedNotAuthorised},
		{"retained will on events", "phone1", func(o *mqtt.ClientOptions) {
			o.SetUsername("phone1")
			o.SetWill(wire.Topic(tenant, "phone1", wire.KindEvents), "offline", 1, true)
		}, packets.ErrRefusedNotAuthorised},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Refusals()
			c, err := testutil.TryConnectMQTT(addr, tc.clientID, tc.configure)
			if err == nil {
				c.Disconnect(0)
				t.Fatal("connection accepted")
			}
			if want := packets.ConnErrors[tc.code]; !errors.Is(err, want) {
				t.Errorf("error = %v, want %v", err, want)
			}
			if b.Refusals() != before+1 {
				t.Errorf("Refusals went from %d to %d, want +1", before, b.Refusals())
			}
		})
	}
}

type passwords map[string]string

func (p passwords) Authenticate(ctx context.Context, username string, password []byte) bool {
	if ctx == nil || ctx.Err() != nil {
		return false
	}
	want, ok := p[username]
	return ok && want == string(password)
}

func TestAuthenticator(t *testing.T) {
	b := startBroker(t, broker.Options{Auth: passwords{"phone1": "s3cret"}})
	addr := b.Addr().String()
	withPassword := func(user, pw string) func(*mqtt.ClientOptions) {
		return func(o *mqtt.ClientOptions) { o.SetUsername(user); o.SetPassword(pw) }
	}
	if _, err := testutil.TryConnectMQTT(addr, "phone1", withPassword("phone1", "wrong")); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("wrong password: %v, want not authorised", err)
	}
	if _, err := testutil.TryConnectMQTT(addr, "phone2", withPassword("phone2", "s3cret")); err == nil {
		t.Error("unknown device accepted")
	}
	if n := b.Refusals(); n != 2 {
		t.Errorf("Refusals = %d, want 2", n)
	}
	testutil.ConnectMQTT(t, addr, "phone1", withPassword("phone1", "s3cret"))
}

// TestLastWill cuts a device's connection and expects its will, retained.
func TestLastWill(t *testing.T) {
	b := devBroker(t)
	stateTopic := wire.Topic(tenant, "phone1", wire.KindState)
	proxy := testutil.StartProxy(t, b.Addr().String())
	testutil.ConnectMQTT(t, proxy.Addr, "phone1", func(o *mqtt.ClientOptions) {
		o.SetUsername("phone1")
		o.SetWill(stateTopic, "offline", 1, true)
	})
	live := serverSide(t, b, stateTopic)
	proxy.Cut()
	live.WaitFor(t, waitFor, "will", hasPayload("offline"))
	serverSide(t, b, stateTopic).WaitFor(t, waitFor, "retained will", hasPayload("offline"))
	if n := b.Refusals(); n != 0 {
		t.Errorf("Refusals = %d, want 0", n)
	}
}

func TestTLS(t *testing.T) {
	serverTLS, clientTLS := testutil.TLSConfigs(t)
	b := startBroker(t, broker.Options{Dev: true, TLS: serverTLS})
	seen := serverSide(t, b, "#")
	u := url.URL{Scheme: "ssl", Host: b.Addr().String()}
	o := mqtt.NewClientOptions().AddBroker(u.String()).SetClientID("phone1").SetUsername("phone1").
		SetTLSConfig(clientTLS).SetProtocolVersion(4).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connecting over TLS: %v", tok.Error())
	}
	defer c.Disconnect(100)
	publish(t, c, wire.Topic(tenant, "phone1", wire.KindEvents), 1, false, "over-tls")
	seen.WaitFor(t, waitFor, "event over TLS", hasPayload("over-tls"))

	// A plain-TCP client gets nowhere.
	if _, err := testutil.TryConnectMQTT(b.Addr().String(), "phone2", func(o *mqtt.ClientOptions) {
		o.SetUsername("phone2").SetConnectTimeout(time.Second)
	}); err == nil {
		t.Error("plain TCP client connected to the TLS listener")
	}
}

func TestStartContextCancelStopsBroker(t *testing.T) {
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Dev: true, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := b.Addr().String()
	lost := make(chan struct{})
	var once sync.Once
	testutil.ConnectMQTT(t, addr, "phone1", func(o *mqtt.ClientOptions) {
		o.SetUsername("phone1")
		o.SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) })
	})
	cancel()
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("client still connected after the start context was cancelled")
	}
	deadline := time.Now().Add(waitFor)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still listening after the start context was cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close after cancel: %v", err)
	}
}

func TestConcurrentDevices(t *testing.T) {
	b := devBroker(t)
	var got atomic.Int64
	if err := b.Subscribe(wire.Topic(tenant, "+", wire.KindEvents), func(string, []byte) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	const devices, each = 8, 50
	var wg sync.WaitGroup
	for i := range devices {
		id := fmt.Sprintf("phone%d", i)
		d := device(t, b, id, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				tok := d.Publish(wire.Topic(tenant, id, wire.KindEvents), 1, false, fmt.Sprint(j))
				tok.Wait()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(waitFor)
	for got.Load() < devices*each && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := got.Load(); n != devices*each {
		t.Errorf("server saw %d events, want %d", n, devices*each)
	}
}

// TestIngestBeforeAcknowledgement: a report is acknowledged only once
// Options.Ingest took it. When Ingest fails, the device gets no PUBACK and is
// disconnected, so that it sends the report again from its outbox after
// reconnecting; nothing is acknowledged that was not stored.
func TestIngestBeforeAcknowledgement(t *testing.T) {
	var (
		mu     sync.Mutex
		calls  int
		stored []string
	)
	b := startBroker(t, broker.Options{Dev: true, Ingest: func(_ context.Context, topic string, payload []byte) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return errors.New("store unavailable")
		}
		stored = append(stored, topic+" "+string(payload))
		return nil
	}})
	topic := wire.Topic(tenant, "phone-1", wire.KindEvents)
	lost := make(chan struct{})
	c := device(t, b, "phone-1", func(o *mqtt.ClientOptions) {
		o.SetAutoReconnect(false)
		o.SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	})
	tok := c.Publish(topic, 1, false, "ev-1")
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("the device was not disconnected when its report could not be stored")
	}
	if tok.WaitTimeout(time.Second) && tok.Error() == nil {
		t.Fatal("a report that was not stored was acknowledged")
	}
	// The device's outbox sends it again on a new connection.
	c = device(t, b, "phone-1", nil)
	publish(t, c, topic, 1, false, "ev-1")
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 || len(stored) != 1 || stored[0] != topic+" ev-1" {
		t.Fatalf("ingest calls %d, stored %v; want the failed attempt, then one stored copy", calls, stored)
	}
}
