package fleet

import (
	"errors"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// FuzzHandle feeds arbitrary topics and payloads to the Ingester. It must not
// panic; an accepted message is counted once and, when stored, is about the
// device and tenant its topic names; a rejected one is counted, wraps
// wire.ErrInvalid or ErrMismatch, and stores nothing.
func FuzzHandle(f *testing.F) {
	f.Add(stateTopic, stateJSON(f, nil))
	f.Add(eventsTopic, eventJSON(f, nil))
	f.Add(telemTopic, []byte(`{"mos":4.1}`))
	f.Add(stateTopic, stateJSON(f, func(s *wire.State) { s.Device = "phone-2" }))
	f.Add(eventsTopic, eventJSON(f, func(e *wire.Event) { e.Seq = 1<<64 - 1 }))
	f.Add("dialtone/v1/acme/phone-1/cmd", []byte(`{"schema":1,"id":"c","name":"check","time":"2026-11-25T10:00:00Z"}`))
	f.Add("dialtone/v1/a/b/state/extra", []byte(`{}`))
	f.Add(eventsTopic, []byte(`{"schema":1,"id":"x","device":"phone-1","seq":1,"time":"2026-11-25T10:00:00Z","type":"boot","fields":{"a":"b"}} `))

	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		ms := newMemStore()
		ing := NewIngester(ms, nil)
		err := ing.Handle(t.Context(), topic, payload)
		s := ing.Stats()
		if s.Failed != 0 {
			t.Fatalf("Failed = %d with a store that cannot fail: %v", s.Failed, err)
		}
		if err != nil {
			if !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, ErrMismatch) {
				t.Fatalf("error wraps neither wire.ErrInvalid nor ErrMismatch: %v", err)
			}
			if s != (Stats{Rejected: 1}) {
				t.Fatalf("rejected message: Stats = %+v", s)
			}
			if n := ms.writes(); n != 0 {
				t.Fatalf("rejected message caused %d store writes", n)
			}
			return
		}
		if s.Rejected != 0 || s.Stored+s.Duplicates+s.Telemetry != 1 {
			t.Fatalf("accepted message: Stats = %+v", s)
		}
		tenant, device, _, perr := wire.ParseTopic(topic)
		if perr != nil {
			t.Fatalf("accepted a message on a bad topic %q: %v", topic, perr)
		}
		for _, st := range ms.states {
			if st.Tenant != tenant || st.Device != device {
				t.Fatalf("stored state for %s/%s from topic %q", st.Tenant, st.Device, topic)
			}
		}
		for _, e := range ms.events {
			if e.Device != device {
				t.Fatalf("stored event for %s from topic %q", e.Device, topic)
			}
		}
	})
}
