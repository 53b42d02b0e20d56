package report_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/report"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// lastState decodes the last state message.
func lastState(t *testing.T, msgs []testutil.Message) (wire.State, bool) {
	t.Helper()
	if len(msgs) == 0 {
		return wire.State{}, false
	}
	s, err := wire.DecodeState(msgs[len(msgs)-1].Payload)
	if err != nil {
		t.Errorf("invalid state: %v", err)
		return wire.State{}, false
	}
	return s, true
}

// TestSIPLineInState: the SIP line set with SetSIP goes out at once with
// the last state, rides on the states the update flow publishes later,
// is not sent again when unchanged, and is left out of the offline will.
func TestSIPLineInState(t *testing.T) {
	t.Parallel()
	bothBrokers(t, func(t *testing.T, e env) {
		proxy := testutil.StartProxy(t, e.addr)
		c := newClient(t, "mqtt://"+proxy.Addr, t.TempDir(), nil)
		base := wire.State{Model: "vx500", Hardware: "rev-b", Version: "1.2.3", Slot: "a", UpdateState: wire.UpdateIdle, Online: true}
		c.SetWill(base)
		connect(t, c)
		live := e.watch(t, stateTopic)
		if err := c.PublishState(ctxFor(t, long), base); err != nil {
			t.Fatal(err)
		}
		live.WaitFor(t, long, "first state", stateIs(t, true, "1.2.3"))

		reg := &wire.SIPState{Status: wire.SIPRunning, Profile: "config/acme/devices/phone1/sip.json",
			Registration: "registered", Proxy: "127.0.0.1:5061", Call: "idle"}
		if err := c.SetSIP(ctxFor(t, long), reg); err != nil {
			t.Fatal(err)
		}
		live.WaitFor(t, long, "state with the SIP line", func(m []testutil.Message) bool {
			s, ok := lastState(t, m)
			return ok && s.SIP != nil && s.SIP.Registration == "registered" && s.Version == "1.2.3"
		})
		n := len(live.Messages())
		if err := c.SetSIP(ctxFor(t, long), reg); err != nil {
			t.Fatal(err)
		}
		// The update flow's next state knows nothing of SIP but carries it.
		base.UpdateState = wire.UpdateDownloading
		if err := c.PublishState(ctxFor(t, long), base); err != nil {
			t.Fatal(err)
		}
		msgs := live.WaitFor(t, long, "update state", func(m []testutil.Message) bool {
			s, ok := lastState(t, m)
			return ok && s.UpdateState == wire.UpdateDownloading
		})
		if len(msgs) != n+1 {
			t.Errorf("%d state messages after an unchanged SetSIP and one state, want %d", len(msgs), n+1)
		}
		if s, _ := lastState(t, msgs); s.SIP == nil || s.SIP.Registration != "registered" {
			t.Errorf("update state without the SIP line: %+v", s.SIP)
		}

		proxy.Cut()
		live.WaitFor(t, long, "will", func(m []testutil.Message) bool {
			s, ok := lastState(t, m)
			return ok && !s.Online && s.SIP == nil
		})
	})
}

// TestTelemetry: call quality goes out on the telemetry topic, complete
// and valid; while offline it is dropped with ErrOffline.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	b := startEmbedded(t, "127.0.0.1:0")
	c := newClient(t, "mqtt://"+b.Addr().String(), t.TempDir(), nil)
	tel := wire.Telemetry{Type: wire.TelemetryCallQuality, Call: &wire.CallQuality{CallID: "abc", Direction: "in",
		Start: time.Now().UTC(), DurationMS: 1500, PacketsSent: 75, PacketsReceived: 74, PacketsLost: 1, LossPercent: 1.33, MOS: 4.3}}
	if err := c.PublishTelemetry(ctxFor(t, long), tel); !errors.Is(err, report.ErrOffline) {
		t.Fatalf("PublishTelemetry before Connect = %v, want ErrOffline", err)
	}
	connect(t, c)
	watch := inlineWatch(t, b, wire.Topic(tenant, dev, wire.KindTelemetry))
	if err := c.PublishTelemetry(ctxFor(t, long), tel); err != nil {
		t.Fatal(err)
	}
	msgs := watch.WaitFor(t, long, "telemetry", func(m []testutil.Message) bool { return len(m) > 0 })
	got, err := wire.DecodeTelemetry(msgs[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if got.Device != dev || got.ID == "" || got.Call == nil || got.Call.CallID != "abc" || got.Call.PacketsLost != 1 {
		t.Fatalf("telemetry = %+v", got)
	}
	bad := tel
	bad.Call = &wire.CallQuality{CallID: "x", Direction: "in", MOS: 7}
	if err := c.PublishTelemetry(ctxFor(t, long), bad); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("PublishTelemetry of MOS 7 = %v, want ErrInvalid", err)
	}
}
