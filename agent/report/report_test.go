package report_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/agent/report"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
)

const (
	tenant = "acme"
	dev    = "phone1"
	long   = 30 * time.Second // generous: -race and a loaded machine
)

var (
	eventsTopic = wire.Topic(tenant, dev, wire.KindEvents)
	stateTopic  = wire.Topic(tenant, dev, wire.KindState)
	cmdTopic    = wire.Topic(tenant, dev, wire.KindCmd)
)

// env is a broker under test seen from the server side.
type env struct {
	name string
	addr string // host:port
	// watch returns what the server receives on filter from now on
	// (retained messages included).
	watch func(t *testing.T, filter string) *testutil.Collector
	// command publishes a payload on the device's command topic.
	command func(t *testing.T, payload []byte)
}

func (e env) url() string { return "mqtt://" + e.addr }

var watchers atomic.Int64

func mosquittoEnv(t *testing.T, m *testutil.Mosquitto) env {
	return env{
		name: "mosquitto",
		addr: m.Addr,
		watch: func(t *testing.T, filter string) *testutil.Collector {
			c := testutil.ConnectMQTT(t, m.Addr, fmt.Sprintf("watch%d", watchers.Add(1)), nil)
			return testutil.Subscribe(t, c, filter)
		},
		command: func(t *testing.T, payload []byte) {
			c := testutil.ConnectMQTT(t, m.Addr, fmt.Sprintf("server%d", watchers.Add(1)), nil)
			if tok := c.Publish(cmdTopic, 1, false, payload); !tok.WaitTimeout(long) || tok.Error() != nil {
				t.Fatalf("publishing command: %v", tok.Error())
			}
		},
	}
}

func startEmbedded(t *testing.T, addr string) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Options{Addr: addr, Dev: true, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func inlineWatch(t *testing.T, b *broker.Broker, filter string) *testutil.Collector {
	t.Helper()
	col := &testutil.Collector{}
	if err := b.Subscribe(filter, func(topic string, payload []byte) {
		col.Add(testutil.Message{Topic: topic, Payload: payload})
	}); err != nil {
		t.Fatal(err)
	}
	return col
}

func embeddedEnv(t *testing.T, b *broker.Broker) env {
	return env{
		name:  "embedded",
		addr:  b.Addr().String(),
		watch: func(t *testing.T, filter string) *testutil.Collector { return inlineWatch(t, b, filter) },
		command: func(t *testing.T, payload []byte) {
			if err := b.Publish(cmdTopic, payload, false, 1); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// bothBrokers runs f against Mosquitto and against the embedded broker.
func bothBrokers(t *testing.T, f func(t *testing.T, e env)) {
	t.Run("mosquitto", func(t *testing.T) {
		t.Parallel()
		f(t, mosquittoEnv(t, testutil.NewMosquitto(t, "")))
	})
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		f(t, embeddedEnv(t, startEmbedded(t, "127.0.0.1:0")))
	})
}

func newClient(t *testing.T, brokerURL, dir string, configure func(*report.Options)) *report.Client {
	t.Helper()
	opts := report.Options{
		Broker:    brokerURL,
		Tenant:    tenant,
		Device:    dev,
		OutboxDir: dir,
		Logger:    testutil.Logger(t),
	}
	if configure != nil {
		configure(&opts)
	}
	c, err := report.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, c *report.Client) {
	t.Helper()
	if err := c.Connect(ctxFor(t, long)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

func sendEvents(t *testing.T, c *report.Client, n int, msg string) []wire.Event {
	t.Helper()
	var evs []wire.Event
	for i := range n {
		e, err := c.Event(t.Context(), wire.Event{Type: wire.EventCheck, Message: fmt.Sprintf("%s %d", msg, i)})
		if err != nil {
			t.Fatalf("Event %d: %v", i, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func decodeEvents(t *testing.T, msgs []testutil.Message) []wire.Event {
	t.Helper()
	var evs []wire.Event
	for _, m := range msgs {
		e, err := wire.DecodeEvent(m.Payload)
		if err != nil {
			t.Fatalf("subscriber got an invalid event: %v", err)
		}
		evs = append(evs, e)
	}
	return evs
}

// allIDs is a WaitFor condition: every event of want arrived at least once.
func allIDs(t *testing.T, want []wire.Event) func([]testutil.Message) bool {
	return func(msgs []testutil.Message) bool {
		seen := map[string]bool{}
		for _, m := range msgs {
			if e, err := wire.DecodeEvent(m.Payload); err == nil {
				seen[e.ID] = true
			}
		}
		for _, e := range want {
			if !seen[e.ID] {
				return false
			}
		}
		return true
	}
}

// checkExactly checks that got is want: same events, same order, no
// duplicates.
func checkExactly(t *testing.T, got, want []wire.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("subscriber got %d events, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i].ID != want[i].ID || got[i].Seq != want[i].Seq || got[i].Message != want[i].Message {
			t.Errorf("event %d = {id %s seq %d %q}, want {id %s seq %d %q}",
				i, got[i].ID, got[i].Seq, got[i].Message, want[i].ID, want[i].Seq, want[i].Message)
		}
	}
}

func TestEventsReachSubscriber(t *testing.T) {
	t.Parallel()
	bothBrokers(t, func(t *testing.T, e env) {
		events := e.watch(t, eventsTopic)
		c := newClient(t, e.url(), t.TempDir(), nil)
		connect(t, c)
		want := sendEvents(t, c, 100, "live")
		if err := c.Flush(ctxFor(t, long)); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if n := c.Pending(); n != 0 {
			t.Errorf("Pending after Flush = %d", n)
		}
		msgs := events.WaitFor(t, long, "every event", allIDs(t, want))
		checkExactly(t, decodeEvents(t, msgs), want)
		for i, ev := range want {
			if ev.Seq != uint64(i+1) || len(ev.ID) != 26 || !wire.ValidID(ev.ID) || ev.Device != dev ||
				ev.Schema != wire.SchemaVersion || ev.Time.IsZero() {
				t.Fatalf("event %d not completed: %+v", i, ev)
			}
		}
	})
}

// TestOutboxSurvivesRestart queues events while the broker is down, closes
// the client, and expects a new client on the same outbox to deliver them
// all, in order, once the broker is up.
func TestOutboxSurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"mosquitto", "embedded"} {
		t.Run(name, func(t *testing.T) {
			var addr string
			var startBroker func() env
			if name == "mosquitto" {
				m := testutil.NewMosquitto(t, "")
				m.Stop()
				addr = m.Addr
				startBroker = func() env { m.Start(); return mosquittoEnv(t, m) }
			} else {
				addr = testutil.FreeAddr(t)
				startBroker = func() env { return embeddedEnv(t, startEmbedded(t, addr)) }
			}
			dir := t.TempDir()

			c1 := newClient(t, "mqtt://"+addr, dir, nil)
			err := c1.Connect(ctxFor(t, 300*time.Millisecond))
			if err == nil || errors.Is(err, report.ErrRefused) {
				t.Fatalf("Connect with the broker down = %v, want a timeout", err)
			}
			want := sendEvents(t, c1, 25, "queued")
			if n := c1.Pending(); n != len(want) {
				t.Fatalf("Pending = %d, want %d", n, len(want))
			}
			if err := c1.Close(ctxFor(t, 2*time.Second)); err != nil {
				t.Fatalf("Close while offline: %v", err)
			}
			if _, err := c1.Event(t.Context(), wire.Event{Type: wire.EventBoot}); !errors.Is(err, report.ErrClosed) {
				t.Errorf("Event after Close = %v, want ErrClosed", err)
			}

			c2 := newClient(t, "mqtt://"+addr, dir, nil)
			if n := c2.Pending(); n != len(want) {
				t.Fatalf("new client: Pending = %d, want %d", n, len(want))
			}
			e := startBroker()
			events := e.watch(t, eventsTopic)
			connect(t, c2)
			if err := c2.Flush(ctxFor(t, long)); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			msgs := events.WaitFor(t, long, "queued events", allIDs(t, want))
			checkExactly(t, decodeEvents(t, msgs), want)

			next, err := c2.Event(t.Context(), wire.Event{Type: wire.EventBoot})
			if err != nil {
				t.Fatal(err)
			}
			if next.Seq != uint64(len(want)+1) {
				t.Errorf("Seq after restart = %d, want %d", next.Seq, len(want)+1)
			}
		})
	}
}

// TestBrokerRestartMidStream restarts the broker while events flow and
// expects every event to arrive (duplicates allowed).
func TestBrokerRestartMidStream(t *testing.T) {
	t.Parallel()
	t.Run("mosquitto-sigterm", func(t *testing.T) {
		// The subscriber (the server's ingestion) has a persistent session
		// that survives the restart, as in production; Stop is SIGTERM, so
		// Mosquitto saves it.
		m := testutil.NewMosquitto(t, "persistence true\npersistence_location "+t.TempDir()+"/\n")
		sub := testutil.ConnectMQTT(t, m.Addr, "ingest", func(o *mqtt.ClientOptions) {
			o.SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond)
		})
		events := testutil.Subscribe(t, sub, eventsTopic)
		restartMidStream(t, m.Addr, events, func() {
			m.Stop()
			time.Sleep(500 * time.Millisecond)
			m.Start()
		})
	})
	t.Run("mosquitto-sigkill", func(t *testing.T) {
		// SIGKILL loses whatever Mosquitto acknowledged but had not yet
		// forwarded or saved, which no client can help. So: save the
		// subscriber's session with a graceful restart first, and kill the
		// broker only when all it acknowledged has been delivered; the
		// events sent while it is dead, and any publish cut by the kill,
		// must come through.
		m := testutil.NewMosquitto(t, "persistence true\npersistence_location "+t.TempDir()+"/\n")
		sub := testutil.ConnectMQTT(t, m.Addr, "ingest", func(o *mqtt.ClientOptions) {
			o.SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond)
		})
		events := testutil.Subscribe(t, sub, eventsTopic)
		m.Stop()
		m.Start()
		c := newClient(t, "mqtt://"+m.Addr, t.TempDir(), nil)
		connect(t, c)
		before := sendEvents(t, c, 50, "before")
		if err := c.Flush(ctxFor(t, long)); err != nil {
			t.Fatal(err)
		}
		events.WaitFor(t, long, "events before the kill", allIDs(t, before))
		m.Kill()
		during := sendEvents(t, c, 50, "during")
		time.Sleep(300 * time.Millisecond)
		m.Start()
		if err := c.Flush(ctxFor(t, long)); err != nil {
			t.Fatalf("Flush after restart: %v", err)
		}
		events.WaitFor(t, long, "every event", allIDs(t, append(before, during...)))
	})
	t.Run("embedded", func(t *testing.T) {
		addr := testutil.FreeAddr(t)
		b := startEmbedded(t, addr)
		events := inlineWatch(t, b, eventsTopic)
		restartMidStream(t, addr, events, func() {
			_ = b.Close()
			time.Sleep(500 * time.Millisecond)
			b2, err := broker.New(broker.Options{Addr: addr, Dev: true, Logger: testutil.Logger(t)})
			if err != nil {
				t.Error(err)
				return
			}
			// Subscribe before Start, so nothing can arrive unseen.
			if err := b2.Subscribe(eventsTopic, func(topic string, payload []byte) {
				events.Add(testutil.Message{Topic: topic, Payload: payload})
			}); err != nil {
				t.Error(err)
			}
			if err := b2.Start(t.Context()); err != nil {
				t.Error(err)
			}
			t.Cleanup(func() { _ = b2.Close() })
		})
	})
}

func restartMidStream(t *testing.T, addr string, events *testutil.Collector, restart func()) {
	c := newClient(t, "mqtt://"+addr, t.TempDir(), nil)
	connect(t, c)
	const n = 200
	produced := make(chan []wire.Event, 1)
	go func() {
		var evs []wire.Event
		defer func() { produced <- evs }()
		for i := range n {
			e, err := c.Event(t.Context(), wire.Event{Type: wire.EventDownload, Message: fmt.Sprint(i)})
			if err != nil {
				t.Errorf("Event %d: %v", i, err)
				return
			}
			evs = append(evs, e)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	time.Sleep(250 * time.Millisecond)
	restart()
	want := <-produced
	if len(want) != n {
		t.FailNow()
	}
	if err := c.Flush(ctxFor(t, long)); err != nil {
		t.Fatalf("Flush after restart: %v", err)
	}
	msgs := events.WaitFor(t, long, "every event", allIDs(t, want))
	got := decodeEvents(t, msgs)
	t.Logf("%d events sent, %d received (%d duplicates)", n, len(got), len(got)-n)
}

func TestRetainedStateAndLastWill(t *testing.T) {
	t.Parallel()
	bothBrokers(t, func(t *testing.T, e env) {
		proxy := testutil.StartProxy(t, e.addr)
		c := newClient(t, "mqtt://"+proxy.Addr, t.TempDir(), nil)
		online := wire.State{Model: "vx500", Hardware: "rev-b", Version: "1.2.3", Slot: "a",
			UpdateState: wire.UpdateIdle, Online: true}
		// MQTT fixes the will at CONNECT: give it the model and version now.
		c.SetWill(online)
		connect(t, c)
		live := e.watch(t, stateTopic)
		if err := c.PublishState(ctxFor(t, long), online); err != nil {
			t.Fatalf("PublishState: %v", err)
		}
		e.watch(t, stateTopic).WaitFor(t, long, "retained online state", stateIs(t, true, "1.2.3"))

		proxy.Cut() // no DISCONNECT: the broker publishes the will
		live.WaitFor(t, long, "last will", stateIs(t, false, "1.2.3"))
		// A subscriber arriving now gets the offline state, retained; the
		// client cannot reconnect through the cut proxy.
		msgs := e.watch(t, stateTopic).WaitFor(t, long, "retained will", stateIs(t, false, "1.2.3"))
		st, _ := wire.DecodeState(msgs[len(msgs)-1].Payload)
		if st.Model != "vx500" || st.Hardware != "rev-b" || st.Tenant != tenant || st.Device != dev {
			t.Errorf("will = %+v, want the last state's model and hardware", st)
		}
		if e.name == "mosquitto" && !msgs[len(msgs)-1].Retained {
			t.Error("will not retained")
		}
		if err := c.Close(ctxFor(t, 2*time.Second)); err != nil {
			t.Errorf("Close while offline: %v", err)
		}
	})
}

// stateIs matches when the last state message has the given Online and
// Version.
func stateIs(t *testing.T, online bool, version string) func([]testutil.Message) bool {
	return func(msgs []testutil.Message) bool {
		if len(msgs) == 0 {
			return false
		}
		s, err := wire.DecodeState(msgs[len(msgs)-1].Payload)
		if err != nil {
			t.Errorf("invalid state: %v", err)
			return false
		}
		return s.Online == online && s.Version == version
	}
}

func TestSetWillBeforeConnect(t *testing.T) {
	t.Parallel()
	b := startEmbedded(t, "127.0.0.1:0")
	proxy := testutil.StartProxy(t, b.Addr().String())
	c := newClient(t, "mqtt://"+proxy.Addr, t.TempDir(), nil)
	c.SetWill(wire.State{Model: "vx500", Version: "0.9.0", Online: true})
	connect(t, c)
	live := inlineWatch(t, b, stateTopic)
	proxy.Cut()
	live.WaitFor(t, long, "will from SetWill", stateIs(t, false, "0.9.0"))
}

func TestCloseLeavesOfflineState(t *testing.T) {
	t.Parallel()
	bothBrokers(t, func(t *testing.T, e env) {
		c := newClient(t, e.url(), t.TempDir(), nil)
		connect(t, c)
		if err := c.PublishState(ctxFor(t, long), wire.State{Model: "vx500", Version: "2.0.0", Online: true}); err != nil {
			t.Fatal(err)
		}
		sendEvents(t, c, 10, "before close")
		if err := c.Close(ctxFor(t, long)); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if n := c.Pending(); n != 0 {
			t.Errorf("Close left %d events in the outbox", n)
		}
		e.watch(t, stateTopic).WaitFor(t, long, "retained offline state", stateIs(t, false, "2.0.0"))
	})
}

// TestReconnectRepublishesState restarts a broker that forgets everything:
// the client must publish its state again.
func TestReconnectRepublishesState(t *testing.T) {
	t.Parallel()
	m := testutil.NewMosquitto(t, "")
	e := mosquittoEnv(t, m)
	c := newClient(t, e.url(), t.TempDir(), nil)
	connect(t, c)
	if err := c.PublishState(ctxFor(t, long), wire.State{Version: "3.0.0", Online: true}); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	m.Start()
	e.watch(t, stateTopic).WaitFor(t, long, "state republished", stateIs(t, true, "3.0.0"))
}

func TestOutboxFull(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t) // nothing listens there yet
	dir := t.TempDir()
	c := newClient(t, "mqtt://"+addr, dir, func(o *report.Options) { o.MaxOutbox = 5 })
	sendEvents(t, c, 5, "fill")
	_, err := c.Event(t.Context(), wire.Event{Type: wire.EventCheck})
	if !errors.Is(err, report.ErrOutboxFull) {
		t.Fatalf("Event on a full outbox = %v, want ErrOutboxFull", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ev-*.json"))
	if len(files) != 5 || c.Pending() != 5 {
		t.Errorf("outbox holds %d files, Pending %d; want 5", len(files), c.Pending())
	}
	// Once the broker takes the events, there is room again.
	b := startEmbedded(t, addr)
	events := inlineWatch(t, b, eventsTopic)
	connect(t, c)
	if err := c.Flush(ctxFor(t, long)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Event(t.Context(), wire.Event{Type: wire.EventCheck}); err != nil {
		t.Fatalf("Event after draining: %v", err)
	}
	events.WaitFor(t, long, "six events", func(ms []testutil.Message) bool { return len(ms) == 6 })
}

func TestCommands(t *testing.T) {
	t.Parallel()
	bothBrokers(t, func(t *testing.T, e env) {
		c := newClient(t, e.url(), t.TempDir(), nil)
		connect(t, c)
		valid := func(id, name string) []byte {
			b, err := wire.EncodeCommand(wire.Command{Schema: wire.SchemaVersion, ID: id, Name: name, Time: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		e.command(t, []byte("not json"))
		e.command(t, []byte(`{"schema":1,"id":"x","name":"format-disk","time":"2026-01-01T00:00:00Z"}`))
		e.command(t, []byte(`{"schema":2,"id":"x","name":"check","time":"2026-01-01T00:00:00Z"}`))
		e.command(t, []byte(`{"schema":1,"id":"x","name":"check","time":"2026-01-01T00:00:00Z","extra":1}`))
		e.command(t, valid("c1", "check"))
		e.command(t, valid("c2", "reboot"))
		for _, want := range []string{"c1", "c2"} {
			select {
			case cmd := <-c.Commands():
				if cmd.ID != want {
					t.Fatalf("command %s received, want %s (invalid commands must be dropped)", cmd.ID, want)
				}
			case <-time.After(long):
				t.Fatalf("command %s not received", want)
			}
		}
		if err := c.Close(ctxFor(t, long)); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-c.Commands(); ok {
			t.Error("Commands not closed by Close")
		}
	})
}

func TestEventValidation(t *testing.T) {
	t.Parallel()
	c := newClient(t, "mqtt://127.0.0.1:1", t.TempDir(), nil)
	for name, ev := range map[string]wire.Event{
		"unknown type":     {Type: "party"},
		"other device":     {Type: wire.EventBoot, Device: "phone2"},
		"bad id":           {Type: wire.EventBoot, ID: "a/b"},
		"future schema":    {Type: wire.EventBoot, Schema: 2},
		"message too long": {Type: wire.EventBoot, Message: strings.Repeat("x", 5000)},
	} {
		if _, err := c.Event(t.Context(), ev); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("%s: Event = %v, want ErrInvalid", name, err)
		}
	}
	if n := c.Pending(); n != 0 {
		t.Errorf("Pending = %d after refused events", n)
	}
	e, err := c.Event(t.Context(), wire.Event{Type: wire.EventBoot, ID: "caller-chosen-id"})
	if err != nil || e.ID != "caller-chosen-id" || e.Seq != 1 {
		t.Errorf("Event with caller ID = %+v, %v; want that ID and Seq 1", e, err)
	}
	if err := c.PublishState(t.Context(), wire.State{Model: "bad model"}); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("PublishState with a bad model = %v, want ErrInvalid", err)
	}
}

func TestOutboxRecoversFromDebris(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("seq", "7\n")
	write("ev-00000000000000000003.json", "{torn")
	write(".ev-00000000000000000008.json.tmp123", "partial")
	c := newClient(t, "mqtt://127.0.0.1:1", dir, nil)
	if n := c.Pending(); n != 0 {
		t.Errorf("Pending = %d, want 0", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad-ev-00000000000000000003.json")); err != nil {
		t.Errorf("unreadable event not set aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".ev-00000000000000000008.json.tmp123")); !os.IsNotExist(err) {
		t.Errorf("temporary file not removed: %v", err)
	}
	e, err := c.Event(t.Context(), wire.Event{Type: wire.EventBoot})
	if err != nil || e.Seq != 8 {
		t.Errorf("Event = seq %d, %v; want seq 8", e.Seq, err)
	}
}

func TestMQTTS(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := testutil.TLSConfigs(t)
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Dev: true, TLS: serverTLS, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	events := inlineWatch(t, b, eventsTopic)
	url := "mqtts://" + b.Addr().String()

	c := newClient(t, url, t.TempDir(), func(o *report.Options) { o.TLS = clientTLS })
	connect(t, c)
	want := sendEvents(t, c, 3, "tls")
	events.WaitFor(t, long, "events over TLS", allIDs(t, want))

	untrusting := newClient(t, url, t.TempDir(), func(o *report.Options) { o.Device = "phone2" })
	if err := untrusting.Connect(ctxFor(t, time.Second)); err == nil {
		t.Error("connected to a broker whose certificate is not trusted")
	}
}

type onePassword string

func (p onePassword) Authenticate(_ context.Context, _ string, password []byte) bool {
	return string(password) == string(p)
}

func TestConnectRefused(t *testing.T) {
	t.Parallel()
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Auth: onePassword("right"), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	url := "mqtt://" + b.Addr().String()
	bad := newClient(t, url, t.TempDir(), func(o *report.Options) { o.Password = "wrong" })
	if err := bad.Connect(ctxFor(t, long)); !errors.Is(err, report.ErrRefused) {
		t.Errorf("Connect with a wrong password = %v, want ErrRefused", err)
	}
	good := newClient(t, url, t.TempDir(), func(o *report.Options) { o.Password = "right"; o.Device = "phone2" })
	connect(t, good)
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, o := range map[string]report.Options{
		"bad scheme":   {Broker: "http://127.0.0.1:1883", Tenant: tenant, Device: dev, OutboxDir: dir},
		"no host":      {Broker: "mqtt://", Tenant: tenant, Device: dev, OutboxDir: dir},
		"no outbox":    {Broker: "mqtt://127.0.0.1:1883", Tenant: tenant, Device: dev},
		"bad device":   {Broker: "mqtt://127.0.0.1:1883", Tenant: tenant, Device: "a/#", OutboxDir: dir},
		"bad tenant":   {Broker: "mqtt://127.0.0.1:1883", Tenant: "", Device: dev, OutboxDir: dir},
		"negative max": {Broker: "mqtt://127.0.0.1:1883", Tenant: tenant, Device: dev, OutboxDir: dir, MaxOutbox: -1},
	} {
		if _, err := report.New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
