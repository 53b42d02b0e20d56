package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// memStore is a Store in memory that records what it was asked to store.
type memStore struct {
	mu     sync.Mutex
	states []wire.State
	events map[string]wire.Event // by device/id
	order  []string
	err    error // returned by every call when set
}

func newMemStore() *memStore { return &memStore{events: map[string]wire.Event{}} }

func (m *memStore) UpsertState(_ context.Context, tenant string, st wire.State, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if st.Tenant != tenant {
		return fmt.Errorf("memStore: state for %s under %s", st.Tenant, tenant)
	}
	m.states = append(m.states, st)
	return nil
}

func (m *memStore) AddEvent(_ context.Context, _ string, e wire.Event, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return false, m.err
	}
	k := e.Device + "/" + e.ID
	if _, ok := m.events[k]; ok {
		return false, nil
	}
	m.events[k] = e
	m.order = append(m.order, k)
	return true, nil
}

// UpsertStates and AddEvents write one by one: the memStore cannot fail
// part way through (its only failure is err, checked first).
func (m *memStore) UpsertStates(ctx context.Context, tenant string, sts []wire.State, received time.Time) error {
	for _, st := range sts {
		if err := m.UpsertState(ctx, tenant, st, received); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) AddEvents(ctx context.Context, tenant string, es []wire.Event, received time.Time) (int, error) {
	n := 0
	for _, e := range es {
		ok, err := m.AddEvent(ctx, tenant, e, received)
		if err != nil {
			return 0, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

func (m *memStore) writes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.states) + len(m.events)
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func stateJSON(t testing.TB, mod func(*wire.State)) []byte {
	t.Helper()
	st := wire.State{
		Schema: wire.SchemaVersion, Tenant: "acme", Device: "phone-1", Model: "dt100",
		Hardware: "rev-b", Version: "1.2.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true,
		TUF: wire.TUFVersions{Root: 1, Timestamp: 10, Snapshot: 9, Targets: 8}, Time: t0,
	}
	if mod != nil {
		mod(&st)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eventJSON(t testing.TB, mod func(*wire.Event)) []byte {
	t.Helper()
	e := wire.Event{
		Schema: wire.SchemaVersion, ID: "evt-0001", Device: "phone-1", Seq: 1, Time: t0,
		Type: wire.EventInstalled, Version: "1.2.0", Fields: map[string]string{"slot": "b"},
	}
	if mod != nil {
		mod(&e)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	stateTopic  = "dialtone/v1/acme/phone-1/state"
	eventsTopic = "dialtone/v1/acme/phone-1/events"
	telemTopic  = "dialtone/v1/acme/phone-1/telemetry"
)

func TestHandle(t *testing.T) {
	huge := append([]byte(`{"schema":1,"pad":"`), bytes.Repeat([]byte("x"), wire.MaxPayload)...)
	huge = append(huge, `"}`...)

	tests := []struct {
		name    string
		topic   string
		payload []byte
		wantErr error // nil: accepted
		stored  int   // writes the store should see
	}{
		{"state", stateTopic, stateJSON(t, nil), nil, 1},
		{"event", eventsTopic, eventJSON(t, nil), nil, 1},
		{"event without fields", eventsTopic, eventJSON(t, func(e *wire.Event) { e.Fields = nil }), nil, 1},
		{"telemetry", telemTopic, []byte(`{"mos":4.2,"loss":0.01}`), nil, 0},

		{"state for another device", stateTopic, stateJSON(t, func(s *wire.State) { s.Device = "phone-2" }), ErrMismatch, 0},
		{"state for another tenant", stateTopic, stateJSON(t, func(s *wire.State) { s.Tenant = "globex" }), ErrMismatch, 0},
		{"event for another device", eventsTopic, eventJSON(t, func(e *wire.Event) { e.Device = "phone-2" }), ErrMismatch, 0},

		{"malformed state", stateTopic, []byte(`{"schema":1,"tenant":"acme"`), wire.ErrInvalid, 0},
		{"malformed event", eventsTopic, []byte(`not json`), wire.ErrInvalid, 0},
		{"empty payload", eventsTopic, nil, wire.ErrInvalid, 0},
		{"trailing data", stateTopic, append(stateJSON(t, nil), `{}`...), wire.ErrInvalid, 0},
		{"unknown field", stateTopic, []byte(strings.Replace(string(stateJSON(t, nil)), `{`, `{"extra":1,`, 1)), wire.ErrInvalid, 0},
		{"unknown state schema", stateTopic, stateJSON(t, func(s *wire.State) { s.Schema = 2 }), wire.ErrInvalid, 0},
		{"unknown event schema", eventsTopic, eventJSON(t, func(e *wire.Event) { e.Schema = 0 }), wire.ErrInvalid, 0},
		{"unknown event type", eventsTopic, eventJSON(t, func(e *wire.Event) { e.Type = "pwned" }), wire.ErrInvalid, 0},
		{"bad event id", eventsTopic, eventJSON(t, func(e *wire.Event) { e.ID = "../x" }), wire.ErrInvalid, 0},
		{"oversized state", stateTopic, huge, wire.ErrInvalid, 0},
		{"oversized event", eventsTopic, huge, wire.ErrInvalid, 0},
		{"oversized telemetry", telemTopic, huge, wire.ErrInvalid, 0},
		{"telemetry not an object", telemTopic, []byte(`[1,2]`), wire.ErrInvalid, 0},
		{"telemetry null", telemTopic, []byte(`null`), wire.ErrInvalid, 0},
		{"telemetry malformed", telemTopic, []byte(`{"mos":`), wire.ErrInvalid, 0},

		{"topic outside root", "other/v1/acme/phone-1/state", stateJSON(t, nil), wire.ErrInvalid, 0},
		{"topic wrong version", "dialtone/v2/acme/phone-1/state", stateJSON(t, nil), wire.ErrInvalid, 0},
		{"topic unknown kind", "dialtone/v1/acme/phone-1/logs", stateJSON(t, nil), wire.ErrInvalid, 0},
		{"topic too deep", "dialtone/v1/acme/phone-1/state/x", stateJSON(t, nil), wire.ErrInvalid, 0},
		{"topic wildcard device", "dialtone/v1/acme/+/state", stateJSON(t, nil), wire.ErrInvalid, 0},
		{"topic empty tenant", "dialtone/v1//phone-1/state", stateJSON(t, nil), wire.ErrInvalid, 0},
		{"cmd is not a report", "dialtone/v1/acme/phone-1/cmd", []byte(`{"schema":1,"id":"c1","name":"reboot","time":"2026-11-25T10:00:00Z"}`), wire.ErrInvalid, 0},
	}
	for _, mode := range modes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				ms := newMemStore()
				ing := mode.new(t, ms)
				err := ing.Handle(t.Context(), tc.topic, tc.payload)
				if tc.wantErr == nil && err != nil {
					t.Fatalf("Handle: %v", err)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Fatalf("Handle err = %v, want %v", err, tc.wantErr)
				}
				if got := ms.writes(); got != tc.stored {
					t.Errorf("store writes = %d, want %d", got, tc.stored)
				}
				s := ing.Stats()
				s.Batches = 0 // TestBatch* count them
				want := Stats{}
				switch {
				case tc.wantErr != nil:
					want.Rejected = 1
				case tc.topic == telemTopic:
					want.Telemetry = 1
				default:
					want.Stored = 1
				}
				if s != want {
					t.Errorf("Stats = %+v, want %+v", s, want)
				}
			})
		}
	}
}

// modes are the two ways an Ingester writes: directly, or batching.
var modes = []struct {
	name string
	new  func(t *testing.T, st Store) *Ingester
}{
	{"direct", func(t *testing.T, st Store) *Ingester {
		return NewIngester(st, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	}},
	{"batching", func(t *testing.T, st Store) *Ingester {
		return newBatching(t, st, Options{Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	}},
}

func TestHandleDuplicateEvent(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) { testHandleDuplicateEvent(t, mode.new(t, newMemStore())) })
	}
}

func testHandleDuplicateEvent(t *testing.T, ing *Ingester) {
	ms := ing.st.(*memStore)
	for range 3 {
		if err := ing.Handle(t.Context(), eventsTopic, eventJSON(t, nil)); err != nil {
			t.Fatal(err)
		}
	}
	got := ing.Stats()
	got.Batches = 0
	if want := (Stats{Stored: 1, Duplicates: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if len(ms.events) != 1 {
		t.Errorf("stored %d events, want 1", len(ms.events))
	}
}

func TestHandleStoreFailure(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ms := newMemStore()
			testHandleStoreFailure(t, mode.new(t, ms), ms)
		})
	}
}

func testHandleStoreFailure(t *testing.T, ing *Ingester, ms *memStore) {
	boom := errors.New("disk on fire")
	ms.err = boom
	for _, m := range []struct {
		topic   string
		payload []byte
	}{{stateTopic, stateJSON(t, nil)}, {eventsTopic, eventJSON(t, nil)}} {
		err := ing.Handle(t.Context(), m.topic, m.payload)
		if !errors.Is(err, boom) || errors.Is(err, wire.ErrInvalid) || errors.Is(err, ErrMismatch) {
			t.Errorf("Handle(%s) err = %v, want the store's error only", m.topic, err)
		}
	}
	got := ing.Stats()
	got.Batches = 0
	if want := (Stats{Failed: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestHandleSQLite runs ingestion against the real store: redelivery does not
// double-count, an older retained state does not roll back, and a device
// reporting under a second tenant is refused.
func TestHandleSQLite(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "fleet.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			testHandleSQLite(t, mode.new(t, st), st)
		})
	}
}

func testHandleSQLite(t *testing.T, ing *Ingester, st *store.SQLite) {
	ctx := t.Context()
	clock := t0.Add(time.Hour)
	ing.now = func() time.Time { clock = clock.Add(time.Second); return clock }

	newer := stateJSON(t, func(s *wire.State) { s.Version = "1.3.0"; s.Time = t0.Add(time.Minute) })
	older := stateJSON(t, func(s *wire.State) { s.Version = "1.2.0" })
	for _, m := range []struct {
		topic   string
		payload []byte
	}{
		{stateTopic, newer},
		{stateTopic, older}, // late retained message
		{eventsTopic, eventJSON(t, func(e *wire.Event) { e.ID, e.Seq = "b", 2 })},
		{eventsTopic, eventJSON(t, func(e *wire.Event) { e.ID, e.Seq = "a", 1 })},
		{eventsTopic, eventJSON(t, func(e *wire.Event) { e.ID, e.Seq = "b", 2 })}, // redelivery
	} {
		if err := ing.Handle(ctx, m.topic, m.payload); err != nil {
			t.Fatalf("Handle(%s): %v", m.topic, err)
		}
	}
	// phone-1 again, under another tenant's topic.
	err := ing.Handle(ctx, "dialtone/v1/globex/phone-1/state",
		stateJSON(t, func(s *wire.State) { s.Tenant = "globex"; s.Time = t0.Add(time.Hour) }))
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("state under a second tenant: err = %v, want store.ErrConflict", err)
	}

	got := ing.Stats()
	got.Batches = 0
	if want := (Stats{Stored: 4, Duplicates: 1, Rejected: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	devs, err := st.ListDevices(ctx, store.DeviceFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].Tenant != "acme" || devs[0].Version != "1.3.0" {
		t.Errorf("devices = %+v, want acme/phone-1 at 1.3.0", devs)
	}
	evs, err := st.Events(ctx, "phone-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Event.ID != "a" || evs[1].Event.ID != "b" {
		t.Errorf("events = %+v, want a, b", evs)
	}
}

func TestHandleConcurrent(t *testing.T) {
	ms := newMemStore()
	ing := NewIngester(ms, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprintf("e-%d", i)
				_ = ing.Handle(t.Context(), eventsTopic, eventJSON(t, func(e *wire.Event) { e.ID = id }))
				_ = ing.Handle(t.Context(), telemTopic, []byte(`{"g":`+fmt.Sprint(g)+`}`))
				_ = ing.Handle(t.Context(), stateTopic, []byte(`{`))
			}
		})
	}
	wg.Wait()
	if got, want := ing.Stats(), (Stats{Stored: 50, Duplicates: 150, Telemetry: 200, Rejected: 200}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// tWriter routes log output to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
