package wire_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// FuzzDecodeEvent checks that DecodeEvent never panics, fails only with
// ErrInvalid, and that what it accepts survives a round trip.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		goodEvent,
		`{"schema":1,"id":"a","device":"d","seq":0,"time":"0001-01-01T00:00:00Z","type":"boot"}`,
		`{"schema":1,"id":"a","device":"d","type":"security","fields":{"k":"v"}}`,
		`{"schema":1}`,
		`{}`,
		`null`,
		``,
		`{"schema":1,"id":"a","device":"d","type":"boot"}{}`,
		`{"schema":1e0,"id":"a","device":"d","type":"boot"}`,
		strings.Replace(goodEvent, `"ok"`, `"\u0000\ud800"`, 1),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := wire.DecodeEvent(b)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(b) > wire.MaxPayload/6 {
			return // re-encoding may grow it past MaxPayload (invalid UTF-8 becomes \ufffd)
		}
		re, err := wire.EncodeEvent(e)
		if err != nil {
			t.Fatalf("accepted event does not encode: %v", err)
		}
		e2, err := wire.DecodeEvent(re)
		if err != nil {
			t.Fatalf("re-encoded event refused: %v", err)
		}
		if e2.ID != e.ID || e2.Seq != e.Seq || e2.Type != e.Type || e2.Device != e.Device || !e2.Time.Equal(e.Time) {
			t.Fatalf("round trip changed the event: %+v -> %+v", e, e2)
		}
	})
}

// FuzzDecodeState is FuzzDecodeEvent for states.
func FuzzDecodeState(f *testing.F) {
	for _, s := range []string{
		goodState,
		`{"schema":1,"tenant":"t","device":"d"}`,
		`{"schema":1,"tenant":"t","device":"d","model":""}`,
		`{"schema":1,"tenant":"t","device":"d","tuf":{"root":-1}}`,
		`{"schema":1,"tenant":"t","device":"d","online":null}`,
		`{}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := wire.DecodeState(b)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(b) > wire.MaxPayload/6 {
			return // re-encoding may grow it past MaxPayload
		}
		re, err := wire.EncodeState(s)
		if err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		s2, err := wire.DecodeState(re)
		if err != nil {
			t.Fatalf("re-encoded state refused: %v", err)
		}
		s.Time, s2.Time = s.Time.UTC(), s2.Time.UTC()
		if !s.Time.Equal(s2.Time) {
			t.Fatalf("round trip changed the time: %v -> %v", s.Time, s2.Time)
		}
		s2.Time = s.Time
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the state: %+v -> %+v", s, s2)
		}
	})
}

// FuzzDecodeCommand: what arrives on a phone's cmd topic is decoded only
// into a known command, or refused with ErrInvalid.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"schema":1,"id":"c1","name":"check","time":"2026-01-01T00:00:00Z"}`,
		`{"schema":1,"name":"reboot"}`,
		`{"schema":2,"name":"check"}`,
		`{"schema":1,"name":"rm -rf /"}`,
		`{"schema":1,"name":"check","extra":1}`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := wire.DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		switch c.Name {
		case "check", "attest", "reboot":
		default:
			t.Fatalf("accepted unknown command %q", c.Name)
		}
	})
}
