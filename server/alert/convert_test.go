package alert_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/alert"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/broker/brokertest"
	"github.com/dialtone-dev/dialtone/server/fleet"
	"github.com/dialtone-dev/dialtone/server/store"
)

// TestBadReportsBecomeAlerts runs the real ingester over a real store: each
// bad payload of issue 6 is rejected, counted and not stored, and its
// rejection becomes an alert of the right kind.
func TestBadReportsBecomeAlerts(t *testing.T) {
	st := openStore(t)
	s := newService(t, st)
	ctx := t.Context()
	ing := fleet.New(ctx, st, fleet.Options{Logger: testutil.Logger(t), MaxBatch: 1,
		OnReject: func(topic string, err error) {
			if err := s.Raise(ctx, alert.FromIngestError(topic, err)); err != nil {
				t.Errorf("Raise: %v", err)
			}
		}})
	now := time.Now().UTC().Format(time.RFC3339)
	good := func(device string) string {
		return `{"schema":1,"id":"e-` + device + `","device":"` + device + `","seq":1,"time":"` + now + `","type":"boot"}`
	}
	// phone9 belongs to acme.
	if err := ing.Handle(ctx, wire.Topic("acme", "phone9", wire.KindEvents), []byte(good("phone9"))); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, device, payload, tenant, kind string
	}{
		{"malformed JSON", "phone1", `{"schema":1,`, "acme", alert.KindMalformedPayload},
		{"unknown schema", "phone2", strings.Replace(good("phone2"), `"schema":1`, `"schema":99`, 1), "acme", alert.KindMalformedPayload},
		{"oversized", "phone3", `{"schema":1,"message":"` + strings.Repeat("x", wire.MaxPayload) + `"}`, "acme", alert.KindMalformedPayload},
		{"wrong types", "phone4", strings.Replace(good("phone4"), `"seq":1`, `"seq":"one"`, 1), "acme", alert.KindMalformedPayload},
		{"device mismatch", "phone5", good("phone6"), "acme", alert.KindDeviceMismatch},
		{"tenant conflict", "phone9", strings.Replace(good("phone9"), "e-phone9", "e-2", 1), "other", alert.KindDeviceMismatch},
	}
	for _, tc := range cases {
		err := ing.Handle(ctx, wire.Topic(tc.tenant, tc.device, wire.KindEvents), []byte(tc.payload))
		if err == nil || fleet.Retryable(err) {
			t.Errorf("%s: Handle = %v, want a rejection", tc.name, err)
		}
	}
	if got := ing.Stats().Rejected; got != uint64(len(cases)) {
		t.Errorf("rejected = %d, want %d", got, len(cases))
	}
	devs, err := st.ListDevices(ctx, store.DeviceFilter{})
	if err != nil || len(devs) != 1 || devs[0].ID != "phone9" {
		t.Errorf("devices = %+v, %v; want only phone9", devs, err)
	}
	if n, err := st.CountEvents(ctx, "phone9"); err != nil || n != 1 {
		t.Errorf("phone9 has %d events (%v), want 1", n, err)
	}
	for _, tc := range cases {
		as, err := st.ListAlerts(ctx, store.AlertFilter{Device: tc.device, Kind: tc.kind})
		if err != nil || len(as) != 1 {
			t.Errorf("%s: alerts of %s = %+v, %v; want one %s", tc.name, tc.device, as, err, tc.kind)
			continue
		}
		a := as[0]
		if a.Source != alert.SourceIngest || a.Tenant != tc.tenant || a.Fields["error"] == "" ||
			a.Fields["topic"] != wire.Topic(tc.tenant, tc.device, wire.KindEvents) || len(a.Message) > store.MaxAlertMessage {
			t.Errorf("%s: alert %+v", tc.name, a)
		}
	}
	if as, _ := st.ListAlerts(ctx, store.AlertFilter{Kind: alert.KindDeviceMismatch}); len(as) != 2 || as[0].Severity != alert.SeverityCritical {
		t.Errorf("mismatch alerts = %+v", as)
	}
}

// TestMosquittoDenialsBecomeAlerts: the external broker's half. A real
// Mosquitto refuses device A's publish to B's topic and reports its
// subscription to "#"; the log watcher's denials become alerts.
func TestMosquittoDenialsBecomeAlerts(t *testing.T) {
	testutil.RequireBinary(t, "mosquitto", "apt-get install mosquitto")
	m := brokertest.Start(t, nil)
	st := openStore(t)
	// The server's own connection publishes the alerts, as the daemon's
	// external-broker client does: the generated ACL must let it.
	srv := m.Connect(t, broker.DefaultServerIdentity, "ignored", nil)
	published := testutil.Subscribe(t, srv, wire.TopicRoot+"/+/"+alert.TopicSuffix)
	s := newService(t, st, alert.WithPublisher(pahoPublisher{srv}))
	var (
		mu         sync.Mutex
		serverDeny []broker.Denial
	)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := broker.WatchMosquittoLog(ctx, broker.MosquittoLogOptions{
			Path: m.Opts.LogFile, FromStart: true, PollInterval: 20 * time.Millisecond, Logger: testutil.Logger(t),
			OnDenial: func(d broker.Denial) {
				if d.Client == broker.DefaultServerIdentity {
					mu.Lock()
					serverDeny = append(serverDeny, d)
					mu.Unlock()
				}
				if err := s.Raise(ctx, alert.FromDenial(alert.SourceMosquitto, d)); err != nil && ctx.Err() == nil {
					t.Errorf("Raise: %v", err)
				}
			},
		})
		if err != nil {
			t.Errorf("WatchMosquittoLog: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })

	a := m.Connect(t, "phone-a", "phone-a", nil)
	if tok := a.Publish(wire.Topic("acme", "phone-b", wire.KindEvents), 1, false, "spoof"); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	testutil.SubscribeCode(t, a, "#", (&testutil.Collector{}).Handler)

	deadline := time.Now().Add(waitFor)
	for {
		as, err := st.ListAlerts(t.Context(), store.AlertFilter{Device: "phone-a", Kind: alert.KindACLDenied})
		if err != nil {
			t.Fatal(err)
		}
		actions := map[string]bool{}
		for _, a := range as {
			if a.Source == alert.SourceMosquitto {
				actions[a.Fields["action"]] = true
			}
		}
		if actions["publish"] && actions["subscribe"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts = %+v; want Mosquitto publish and subscribe denials of phone-a", as)
		}
		time.Sleep(20 * time.Millisecond)
	}
	published.WaitFor(t, waitFor, "both alerts over MQTT", func(ms []testutil.Message) bool { return len(ms) >= 2 })
	for _, msg := range published.Messages() {
		if msg.Topic != alert.Topic("") {
			t.Errorf("alert published on %s, want %s (phone-a named no tenant of its own)", msg.Topic, alert.Topic(""))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(serverDeny) != 0 {
		t.Errorf("Mosquitto refused the server: %v", serverDeny)
	}
}

// pahoPublisher publishes through a paho client.
type pahoPublisher struct{ c mqtt.Client }

func (p pahoPublisher) Publish(topic string, payload []byte, retain bool, qos byte) error {
	tok := p.c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitFor) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

func TestFromEvent(t *testing.T) {
	base := wire.Event{Schema: 1, ID: "e1", Device: "phone1", Seq: 3, Time: time.Now(), Version: "1.2.3"}
	for _, tc := range []struct {
		typ    string
		fields map[string]string
		kind   string
		sev    string
		key    string
	}{
		{wire.EventSecurity, map[string]string{"kind": "below-floor"}, alert.KindAgentSecurity, alert.SeverityCritical, "below-floor"},
		{wire.EventRefused, map[string]string{"reason": "bad signature"}, alert.KindUpdateRefused, alert.SeverityWarning, "1.2.3"},
	} {
		e := base
		e.Type, e.Fields, e.Message = tc.typ, tc.fields, "why"
		a, ok := alert.FromEvent("acme", e)
		if !ok || a.Kind != tc.kind || a.Severity != tc.sev || a.Key != tc.key || a.Occurrence != "e1" ||
			a.Tenant != "acme" || a.Device != "phone1" || a.Source != alert.SourceAgent || a.Fields["version"] != "1.2.3" ||
			a.Fields["event"] != "e1" || !strings.Contains(a.Message, "why") {
			t.Errorf("FromEvent(%s) = %+v, %v", tc.typ, a, ok)
		}
	}
	for _, typ := range []string{wire.EventBoot, wire.EventCommitted, wire.EventFailed, wire.EventAttestation} {
		e := base
		e.Type = typ
		if a, ok := alert.FromEvent("acme", e); ok {
			t.Errorf("FromEvent(%s) = %+v, want none", typ, a)
		}
	}
}

func TestFromIngestError(t *testing.T) {
	long := fmt.Errorf("%w: %s", wire.ErrInvalid, strings.Repeat("é", 1000))
	a := alert.FromIngestError("not/a/dialtone/topic", long)
	if a.Kind != alert.KindMalformedPayload || a.Tenant != "" || a.Device != "" || len(a.Fields["error"]) > 300 ||
		!utf8.ValidString(a.Fields["error"]) || !strings.HasSuffix(a.Fields["error"], "…") {
		t.Errorf("FromIngestError = %+v", a)
	}
	a = alert.FromIngestError(wire.Topic("acme", "p1", wire.KindState), fmt.Errorf("x: %w", fleet.ErrMismatch))
	if a.Kind != alert.KindDeviceMismatch || a.Tenant != "acme" || a.Device != "p1" || a.Key != wire.KindState {
		t.Errorf("mismatch = %+v", a)
	}
	a = alert.FromIngestError(wire.Topic("acme", "p1", wire.KindState), fmt.Errorf("x: %w", store.ErrConflict))
	if a.Kind != alert.KindDeviceMismatch {
		t.Errorf("conflict = %+v", a)
	}
}

func TestFromDenialAndAuthFailures(t *testing.T) {
	own := broker.Denial{Client: "phone1", Kind: broker.DeniedPublish, Topic: wire.Topic("acme", "phone1", wire.KindEvents), Truncated: true}
	a := alert.FromDenial(alert.SourceMosquitto, own)
	if a.Tenant != "acme" || a.Device != "phone1" || a.Kind != alert.KindACLDenied || a.Key != "publish" || a.Fields["truncated"] != "true" {
		t.Errorf("FromDenial(own topic) = %+v", a)
	}
	dropped := alert.FromDenial(alert.SourceMosquitto, broker.Denial{Client: "dialtone-server", Kind: broker.DroppedQueued})
	if dropped.Kind != alert.KindQueueOverflow || dropped.Severity != alert.SeverityWarning || dropped.Fields["topic"] != "" {
		t.Errorf("FromDenial(dropped) = %+v", dropped)
	}
	odd := alert.FromDenial(alert.SourceMosquitto, broker.Denial{Client: "CN=weird/\x00", Kind: broker.DeniedSubscribe, Topic: "#"})
	if odd.Device != "" || odd.Fields["client"] != "CN=weird/\x00" {
		t.Errorf("FromDenial(odd client) = %+v", odd)
	}
	for remote, host := range map[string]string{"10.1.2.3:555": "10.1.2.3", "[::1]:80": "::1", "pipe": "pipe"} {
		if a := alert.FromAuthFailures(alert.SourceEmbeddedBroker, "phone1", remote, 5); a.Key != host || a.Kind != alert.KindConnectionFailures || a.Fields["failures"] != "5" {
			t.Errorf("FromAuthFailures(%s) = %+v", remote, a)
		}
	}
}

// FuzzRaiseOutsideText: whatever clients put in client IDs, topics and
// error texts, the alert made of it is one the store takes.
func FuzzRaiseOutsideText(f *testing.F) {
	f.Add("phone1", "dialtone/v1/acme/phone2/events", "bad JSON", uint8(0))
	f.Add("\x00\xff", "#", strings.Repeat("é", 400), uint8(1))
	f.Add("a", "", "", uint8(2))
	st, err := store.OpenSQLite(context.Background(), ":memory:")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	s, err := alert.New(st)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, client, topic, text string, which uint8) {
		var a alert.Alert
		switch which % 4 {
		case 0:
			a = alert.FromIngestError(topic, errors.New(text))
		case 1:
			a = alert.FromDenial(alert.SourceMosquitto, broker.Denial{Client: client, Kind: broker.DeniedPublish, Topic: topic})
		case 2:
			a = alert.FromAuthFailures(alert.SourceEmbeddedBroker, client, topic, len(text))
		case 3:
			var ok bool
			a, ok = alert.FromEvent(topic, wire.Event{ID: client, Device: client, Type: wire.EventSecurity, Message: text,
				Fields: map[string]string{text: topic, "kind": client}})
			if !ok {
				t.Fatal("no alert")
			}
		}
		if err := s.Raise(context.Background(), a); err != nil {
			t.Fatalf("Raise(%+v): %v", a, err)
		}
		if a.Message == "" {
			t.Fatal("empty message")
		}
	})
}
