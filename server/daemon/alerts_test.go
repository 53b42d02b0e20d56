package daemon_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/alert"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/dialtone-dev/dialtone/server/store"
)

const waitFor = 20 * time.Second

// hook is a webhook receiver that keeps the alerts whose signature holds.
type hook struct {
	secret []byte
	mu     sync.Mutex
	got    []store.Alert
	bad    int
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	h.mu.Lock()
	defer h.mu.Unlock()
	if !alert.Verify(h.secret, body, r.Header.Get(alert.SignatureHeader)) {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var a store.Alert
	if err := json.Unmarshal(body, &a); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.got = append(h.got, a)
}

func (h *hook) kinds() map[string]store.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]store.Alert{}
	for _, a := range h.got {
		out[a.Kind+"/"+a.Fields["action"]] = a
	}
	return out
}

// TestAlertsEndToEnd runs the server (embedded broker, SQLite): a device
// publishing a malformed report, publishing to another device's topic and
// subscribing to "#", and reporting a security event of its own ends up in
// GET /v1/alerts and at the webhook.
func TestAlertsEndToEnd(t *testing.T) {
	h := &hook{secret: []byte("webhook-secret-0123456789")}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)

	dir := t.TempDir()
	addrs := startServer(t, daemon.Options{DataDir: dir, Dev: true,
		AlertWebhook: hs.URL + "/alerts", AlertWebhookSecret: string(h.secret),
	})
	token, err := daemon.ReadAdminToken(dir)
	if err != nil {
		t.Fatal(err)
	}

	d := testutil.ConnectMQTT(t, addrs.MQTT, "phoneA", func(o *mqtt.ClientOptions) { o.SetUsername("phoneA") })
	pub := func(topic string, qos byte, payload string) {
		t.Helper()
		if tok := d.Publish(topic, qos, false, payload); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("publishing to %s: %v", topic, tok.Error())
		}
	}
	pub(wire.Topic("acme", "phoneA", wire.KindEvents), 1, `{"schema":1,"id":`)              // malformed
	pub(wire.Topic("acme", "phoneB", wire.KindEvents), 0, `{"schema":1,"device":"phoneB"}`) // another device's topic
	sec, err := wire.EncodeEvent(wire.Event{Schema: wire.SchemaVersion, ID: "ev-sec-1", Device: "phoneA", Seq: 1, Time: time.Now(),
		Type: wire.EventSecurity, Message: "SIP scanning seen", Fields: map[string]string{"kind": "sip-scan"}})
	if err != nil {
		t.Fatal(err)
	}
	pub(wire.Topic("acme", "phoneA", wire.KindEvents), 1, string(sec)) // the agent's own security event
	if code := testutil.SubscribeCode(t, d, "#", (&testutil.Collector{}).Handler); code != 0x80 {
		t.Errorf("subscribing to #: code %#x, want 0x80", code)
	}

	want := []string{alert.KindMalformedPayload + "/", alert.KindACLDenied + "/publish", alert.KindACLDenied + "/subscribe", alert.KindAgentSecurity + "/"}
	var listed api.AlertList
	deadline := time.Now().Add(waitFor)
	for {
		req, _ := http.NewRequest("GET", addrs.URL+"/v1/alerts?device=phoneA", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := devClient(t, addrs).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		listed = api.AlertList{}
		err = json.NewDecoder(resp.Body).Decode(&listed)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("GET /v1/alerts: %s, %v", resp.Status, err)
		}
		have := map[string]bool{}
		for _, a := range listed.Alerts {
			have[a.Kind+"/"+a.Fields["action"]] = true
		}
		hooked := h.kinds()
		complete := true
		for _, k := range want {
			if !have[k] {
				complete = false
			}
			if _, ok := hooked[k]; !ok {
				complete = false
			}
		}
		if complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want alerts %v; listed %+v; webhook got %+v", want, listed.Alerts, hooked)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, a := range listed.Alerts {
		switch a.Kind {
		case alert.KindMalformedPayload:
			if a.Source != alert.SourceIngest || a.Tenant != "acme" || a.Fields["topic"] != wire.Topic("acme", "phoneA", wire.KindEvents) {
				t.Errorf("malformed-payload alert %+v", a)
			}
		case alert.KindAgentSecurity:
			if a.Source != alert.SourceAgent || a.Tenant != "acme" || a.Fields["kind"] != "sip-scan" || a.Fields["event"] != "ev-sec-1" {
				t.Errorf("agent-security alert %+v", a)
			}
		case alert.KindACLDenied:
			if a.Source != alert.SourceEmbeddedBroker || a.Severity != alert.SeverityCritical {
				t.Errorf("acl-denied alert %+v", a)
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad != 0 {
		t.Errorf("%d webhook deliveries with a bad signature", h.bad)
	}
}
