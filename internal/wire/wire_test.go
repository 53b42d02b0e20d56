package wire_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

func TestTopicRoundTrip(t *testing.T) {
	topic := wire.Topic("acme", "phone-1.a_b", wire.KindEvents)
	if topic != "dialtone/v1/acme/phone-1.a_b/events" {
		t.Fatalf("Topic = %q", topic)
	}
	tenant, device, kind, err := wire.ParseTopic(topic)
	if err != nil || tenant != "acme" || device != "phone-1.a_b" || kind != wire.KindEvents {
		t.Fatalf("ParseTopic(%q) = %q, %q, %q, %v", topic, tenant, device, kind, err)
	}
}

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		topic                string
		tenant, device, kind string // empty: an error is expected
	}{
		{topic: "dialtone/v1/acme/phone1/state", tenant: "acme", device: "phone1", kind: wire.KindState},
		{topic: "dialtone/v1/acme/phone1/events", tenant: "acme", device: "phone1", kind: wire.KindEvents},
		{topic: "dialtone/v1/acme/phone1/telemetry", tenant: "acme", device: "phone1", kind: wire.KindTelemetry},
		{topic: "dialtone/v1/acme/phone1/cmd", tenant: "acme", device: "phone1", kind: wire.KindCmd},
		{topic: "dialtone/v1/" + strings.Repeat("t", 64) + "/d/state", tenant: strings.Repeat("t", 64), device: "d", kind: wire.KindState},
		{topic: ""},
		{topic: "dialtone/v1"},
		{topic: "dialtone/v1/"},
		{topic: "dialtone/v2/acme/phone1/state"},
		{topic: "/dialtone/v1/acme/phone1/state"},
		{topic: "dialtone/v1/acme/phone1"},
		{topic: "dialtone/v1/acme/phone1/state/extra"},
		{topic: "dialtone/v1/acme/phone1/status"},
		{topic: "dialtone/v1/acme/phone1/"},
		{topic: "dialtone/v1//phone1/state"},
		{topic: "dialtone/v1/acme//state"},
		{topic: "dialtone/v1/+/phone1/cmd"},
		{topic: "dialtone/v1/acme/#"},
		{topic: "dialtone/v1/acme/#/cmd"},
		{topic: "dialtone/v1/acme/-phone/state"},
		{topic: "dialtone/v1/acme/.hidden/state"},
		{topic: "dialtone/v1/ac me/phone1/state"},
		{topic: "dialtone/v1/" + strings.Repeat("t", 65) + "/d/state"},
		{topic: "dialtone/v1/acme/phøne/state"},
		{topic: "$SYS/broker/version"},
	} {
		tenant, device, kind, err := wire.ParseTopic(tc.topic)
		if tc.kind == "" {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Errorf("ParseTopic(%q) = %q, %q, %q, %v; want ErrInvalid", tc.topic, tenant, device, kind, err)
			}
			continue
		}
		if err != nil || tenant != tc.tenant || device != tc.device || kind != tc.kind {
			t.Errorf("ParseTopic(%q) = %q, %q, %q, %v; want %q, %q, %q", tc.topic, tenant, device, kind, err, tc.tenant, tc.device, tc.kind)
		}
	}
}

const (
	goodState   = `{"schema":1,"tenant":"acme","device":"phone1","model":"vx500","hardware":"rev-b","version":"1.2.3","slot":"a","update_state":"idle","online":true,"tuf":{"root":1,"timestamp":2,"snapshot":3,"targets":4},"time":"2026-01-02T03:04:05Z"}`
	goodEvent   = `{"schema":1,"id":"0123456789abcdef0123456789","device":"phone1","seq":7,"time":"2026-01-02T03:04:05Z","type":"installed","version":"1.2.3","message":"ok","fields":{"slot":"b"}}`
	goodCommand = `{"schema":1,"id":"c1","name":"check","time":"2026-01-02T03:04:05Z"}`
)

// decodeCase is a payload and whether it must be accepted.
type decodeCase struct {
	name    string
	payload string
	ok      bool
}

func checkDecode(t *testing.T, decode func([]byte) error, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		err := decode([]byte(tc.payload))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && !errors.Is(err, wire.ErrInvalid):
			t.Errorf("%s: error %v, want ErrInvalid", tc.name, err)
		}
	}
}

// common are the failures every decoder shares.
func common() []decodeCase {
	return []decodeCase{
		{"empty", ``, false},
		{"not json", `hello`, false},
		{"array", `[]`, false},
		{"null", `null`, false},
		{"truncated", `{"schema":1`, false},
		{"too large", `{"message":"` + strings.Repeat("x", wire.MaxPayload) + `"}`, false},
	}
}

func TestDecodeState(t *testing.T) {
	checkDecode(t, func(b []byte) error { _, err := wire.DecodeState(b); return err }, append(common(),
		decodeCase{"good", goodState, true},
		decodeCase{"minimal", `{"schema":1,"tenant":"acme","device":"phone1"}`, true},
		decodeCase{"trailing data", goodState + `{}`, false},
		decodeCase{"unknown field", strings.Replace(goodState, `"online"`, `"extra":1,"online"`, 1), false},
		decodeCase{"schema 0", strings.Replace(goodState, `"schema":1`, `"schema":0`, 1), false},
		decodeCase{"schema 2", strings.Replace(goodState, `"schema":1`, `"schema":2`, 1), false},
		decodeCase{"bad device", strings.Replace(goodState, `"device":"phone1"`, `"device":"a/b"`, 1), false},
		decodeCase{"no tenant", strings.Replace(goodState, `"tenant":"acme"`, `"tenant":""`, 1), false},
		decodeCase{"bad model", strings.Replace(goodState, `"model":"vx500"`, `"model":"vx 500"`, 1), false},
		decodeCase{"long version", strings.Replace(goodState, `"version":"1.2.3"`, `"version":"`+strings.Repeat("9", 65)+`"`, 1), false},
		decodeCase{"long slot", strings.Replace(goodState, `"slot":"a"`, `"slot":"`+strings.Repeat("a", 17)+`"`, 1), false},
		decodeCase{"wrong type", strings.Replace(goodState, `"online":true`, `"online":"yes"`, 1), false},
		decodeCase{"bad time", strings.Replace(goodState, `"2026-01-02T03:04:05Z"`, `"yesterday"`, 1), false},
	))
	s, err := wire.DecodeState([]byte(goodState))
	if err != nil {
		t.Fatal(err)
	}
	want := wire.State{Schema: 1, Tenant: "acme", Device: "phone1", Model: "vx500", Hardware: "rev-b",
		Version: "1.2.3", Slot: "a", UpdateState: wire.UpdateIdle, Online: true,
		TUF: wire.TUFVersions{Root: 1, Timestamp: 2, Snapshot: 3, Targets: 4}, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if !s.Time.Equal(want.Time) {
		t.Errorf("time = %v", s.Time)
	}
	s.Time = want.Time
	if !reflect.DeepEqual(s, want) {
		t.Errorf("DecodeState = %+v, want %+v", s, want)
	}
}

func TestDecodeEvent(t *testing.T) {
	checkDecode(t, func(b []byte) error { _, err := wire.DecodeEvent(b); return err }, append(common(),
		decodeCase{"good", goodEvent, true},
		decodeCase{"trailing data", goodEvent + ` 1`, false},
		decodeCase{"unknown field", strings.Replace(goodEvent, `"seq"`, `"extra":1,"seq"`, 1), false},
		decodeCase{"schema 2", strings.Replace(goodEvent, `"schema":1`, `"schema":2`, 1), false},
		decodeCase{"no id", strings.Replace(goodEvent, `"id":"0123456789abcdef0123456789"`, `"id":""`, 1), false},
		decodeCase{"bad id", strings.Replace(goodEvent, `"id":"0123456789abcdef0123456789"`, `"id":"a/b"`, 1), false},
		decodeCase{"bad device", strings.Replace(goodEvent, `"device":"phone1"`, `"device":"+"`, 1), false},
		decodeCase{"unknown type", strings.Replace(goodEvent, `"type":"installed"`, `"type":"party"`, 1), false},
		decodeCase{"negative seq", strings.Replace(goodEvent, `"seq":7`, `"seq":-7`, 1), false},
		decodeCase{"long message", strings.Replace(goodEvent, `"message":"ok"`, `"message":"`+strings.Repeat("x", 4097)+`"`, 1), false},
		decodeCase{"long version", strings.Replace(goodEvent, `"version":"1.2.3"`, `"version":"`+strings.Repeat("1", 65)+`"`, 1), false},
	))
}

func TestDecodeCommand(t *testing.T) {
	checkDecode(t, func(b []byte) error { _, err := wire.DecodeCommand(b); return err }, append(common(),
		decodeCase{"good", goodCommand, true},
		decodeCase{"attest", strings.Replace(goodCommand, `"check"`, `"attest"`, 1), true},
		decodeCase{"reboot", strings.Replace(goodCommand, `"check"`, `"reboot"`, 1), true},
		decodeCase{"unknown name", strings.Replace(goodCommand, `"check"`, `"format"`, 1), false},
		decodeCase{"schema 2", strings.Replace(goodCommand, `"schema":1`, `"schema":2`, 1), false},
		decodeCase{"unknown field", strings.Replace(goodCommand, `"name"`, `"x":1,"name"`, 1), false},
	))
}

func TestEncodeRefusesWhatDecodeRefuses(t *testing.T) {
	if _, err := wire.EncodeEvent(wire.Event{Schema: 1, ID: "x", Device: "d", Type: "party"}); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("EncodeEvent(unknown type) = %v, want ErrInvalid", err)
	}
	if _, err := wire.EncodeState(wire.State{Schema: 1, Tenant: "t"}); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("EncodeState(no device) = %v, want ErrInvalid", err)
	}
	if _, err := wire.EncodeCommand(wire.Command{Schema: 1, Name: "format"}); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("EncodeCommand(unknown name) = %v, want ErrInvalid", err)
	}
	e := wire.Event{Schema: 1, ID: "id1", Device: "d", Seq: 3, Type: wire.EventBoot, Time: time.Unix(0, 0).UTC()}
	b, err := wire.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.DecodeEvent(b)
	if err != nil || got.ID != e.ID || got.Seq != e.Seq || !got.Time.Equal(e.Time) {
		t.Errorf("round trip = %+v, %v", got, err)
	}
}
