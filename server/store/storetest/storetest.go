// Package storetest is the conformance suite every store.Store implementation
// passes: SQLite and PostgreSQL. An implementation's tests call
// RunConformance with a function that opens a fresh, empty store, and
// RunReopen with one that opens the same persistent store each time.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// t0 is a base time with microsecond precision, the precision stores keep.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// RunConformance runs the behaviour tests of store.Store, each in a subtest
// with a store of its own. open must return a new, empty store on every call;
// the suite closes it, and open registers any other cleanup with t.Cleanup.
func RunConformance(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"StateInsert", testStateInsert},
		{"StateNewerReplaces", testStateNewerReplaces},
		{"StateOlderIgnored", testStateOlderIgnored},
		{"StateSameTimeReplaces", testStateSameTimeReplaces},
		{"LastWill", testLastWill},
		{"LastSeenNeverGoesBack", testLastSeenNeverGoesBack},
		{"TenantConflict", testTenantConflict},
		{"EventRoundTrip", testEventRoundTrip},
		{"EventDuplicate", testEventDuplicate},
		{"EventIDPerDevice", testEventIDPerDevice},
		{"EventCreatesDevice", testEventCreatesDevice},
		{"EventsSeqOrder", testEventsSeqOrder},
		{"EventsLimit", testEventsLimit},
		{"EventsUnknownDevice", testEventsUnknownDevice},
		{"EventSeqOutOfRange", testEventSeqOutOfRange},
		{"EmptyIDs", testEmptyIDs},
		{"ListFilter", testListFilter},
		{"ListViews", testListViews},
		{"ListSort", testListSort},
		{"ListPages", testListPages},
		{"ListBadFilter", testListBadFilter},
		{"Attestation", testAttestation},
		{"Desired", testDesired},
		{"UpsertStates", testUpsertStates},
		{"UpsertStatesAtomic", testUpsertStatesAtomic},
		{"AddEvents", testAddEvents},
		{"AddEventsOrder", testAddEventsOrder},
		{"AddEventsAtomic", testAddEventsAtomic},
		{"CountEvents", testCountEvents},
		{"TextRejected", testTextRejected},
		{"TimesMicrosUTC", testTimesMicrosUTC},
		{"ConcurrentEvents", testConcurrentEvents},
		{"ConcurrentBatches", testConcurrentBatches},
		{"CanceledContext", testCanceledContext},
		{"Alerts", testAlerts},
		{"AlertsRepeat", testAlertsRepeat},
		{"AlertsPages", testAlertsPages},
		{"AlertsInvalid", testAlertsInvalid},
		{"TenantSets", testTenantSets},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// RunReopen checks that data survives closing and reopening the store, and
// that opening an up-to-date store again (re-running migrations) is harmless.
// Every call of reopen must open the same underlying database, empty at the
// first call; the suite closes what it returns.
func RunReopen(t *testing.T, reopen func(t *testing.T) store.Store) {
	t.Helper()
	ctx := context.Background()

	s := reopen(t)
	upsert(t, s, "acme", state("acme", "d1", "1.0.0", at(0)), at(time.Second))
	addEvent(t, s, "acme", event("d1", "e1", 1, at(0)), at(time.Second), true)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for i := range 2 {
		s := reopen(t)
		devs, err := s.ListDevices(ctx, store.DeviceFilter{})
		if err != nil {
			t.Fatalf("reopen %d: ListDevices: %v", i, err)
		}
		if len(devs) != 1 || devs[0].ID != "d1" || devs[0].Version != "1.0.0" || !devs[0].LastSeen.Equal(at(time.Second)) {
			t.Fatalf("reopen %d: devices = %+v, want d1 at 1.0.0 seen at %v", i, devs, at(time.Second))
		}
		evs, err := s.Events(ctx, "d1", 0)
		if err != nil {
			t.Fatalf("reopen %d: Events: %v", i, err)
		}
		if len(evs) != 1 || evs[0].Event.ID != "e1" {
			t.Fatalf("reopen %d: events = %+v, want e1", i, evs)
		}
		// Still idempotent across reopen, and still writable.
		addEvent(t, s, "acme", event("d1", "e1", 1, at(0)), at(time.Minute), false)
		if err := s.Close(); err != nil {
			t.Fatalf("reopen %d: Close: %v", i, err)
		}
	}
}

func state(tenant, device, version string, tm time.Time) wire.State {
	return wire.State{
		Schema:      wire.SchemaVersion,
		Tenant:      tenant,
		Device:      device,
		Model:       "dt100",
		Hardware:    "rev-b",
		Version:     version,
		Slot:        "a",
		UpdateState: wire.UpdateIdle,
		Online:      true,
		TUF:         wire.TUFVersions{Root: 1, Timestamp: 40, Snapshot: 30, Targets: 20},
		Time:        tm,
	}
}

func event(device, id string, seq uint64, tm time.Time) wire.Event {
	return wire.Event{
		Schema: wire.SchemaVersion,
		ID:     id,
		Device: device,
		Seq:    seq,
		Time:   tm,
		Type:   wire.EventCheck,
	}
}

func upsert(t *testing.T, s store.Store, tenant string, st wire.State, received time.Time) {
	t.Helper()
	if err := s.UpsertState(context.Background(), tenant, st, received); err != nil {
		t.Fatalf("UpsertState(%s, %s @%v): %v", tenant, st.Device, st.Time, err)
	}
}

func addEvent(t *testing.T, s store.Store, tenant string, e wire.Event, received time.Time, want bool) {
	t.Helper()
	got, err := s.AddEvent(context.Background(), tenant, e, received)
	if err != nil {
		t.Fatalf("AddEvent(%s, %s/%s): %v", tenant, e.Device, e.ID, err)
	}
	if got != want {
		t.Fatalf("AddEvent(%s, %s/%s) inserted = %v, want %v", tenant, e.Device, e.ID, got, want)
	}
}

func device(t *testing.T, s store.Store, tenant, id string) store.Device {
	t.Helper()
	devs, err := s.ListDevices(context.Background(), store.DeviceFilter{Tenant: tenant})
	if err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	for _, d := range devs {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("device %s/%s not listed (got %d devices)", tenant, id, len(devs))
	return store.Device{}
}

func events(t *testing.T, s store.Store, dev string, limit int) []store.StoredEvent {
	t.Helper()
	evs, err := s.Events(context.Background(), dev, limit)
	if err != nil {
		t.Fatalf("Events(%s, %d): %v", dev, limit, err)
	}
	return evs
}

func ids(evs []store.StoredEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Event.ID
	}
	return out
}

// wantDevice compares a stored device with the state it should reflect.
func wantDevice(t *testing.T, got store.Device, tenant string, st wire.State, lastSeen time.Time) {
	t.Helper()
	want := store.Device{
		ID: st.Device, Tenant: tenant, Model: st.Model, Hardware: st.Hardware, Version: st.Version,
		Slot: st.Slot, UpdateState: st.UpdateState, Online: st.Online, TUF: st.TUF,
	}
	gotNoTime := got
	gotNoTime.LastSeen = time.Time{}
	if gotNoTime != want {
		t.Errorf("device = %+v\nwant     %+v", gotNoTime, want)
	}
	if !got.LastSeen.Equal(lastSeen) {
		t.Errorf("device %s LastSeen = %v, want %v", got.ID, got.LastSeen, lastSeen)
	}
}

func testStateInsert(t *testing.T, s store.Store) {
	st := state("acme", "d1", "1.0.0", at(0))
	upsert(t, s, "acme", st, at(time.Second))
	wantDevice(t, device(t, s, "acme", "d1"), "acme", st, at(time.Second))
}

func testStateNewerReplaces(t *testing.T, s store.Store) {
	upsert(t, s, "acme", state("acme", "d1", "1.0.0", at(0)), at(time.Second))
	st := state("acme", "d1", "1.1.0", at(time.Minute))
	st.Slot, st.UpdateState, st.Online, st.Model, st.Hardware = "b", wire.UpdateTrial, false, "dt200", "rev-c"
	st.TUF = wire.TUFVersions{Root: 2, Timestamp: 41, Snapshot: 31, Targets: 21}
	upsert(t, s, "acme", st, at(time.Minute+time.Second))
	wantDevice(t, device(t, s, "acme", "d1"), "acme", st, at(time.Minute+time.Second))
}

func testStateOlderIgnored(t *testing.T, s store.Store) {
	newer := state("acme", "d1", "1.1.0", at(time.Minute))
	upsert(t, s, "acme", newer, at(time.Minute))
	older := state("acme", "d1", "1.0.0", at(0))
	older.Online = false
	// Received later (a late retained message), but older by its own time.
	upsert(t, s, "acme", older, at(time.Hour))
	wantDevice(t, device(t, s, "acme", "d1"), "acme", newer, at(time.Minute))
}

func testStateSameTimeReplaces(t *testing.T, s store.Store) {
	upsert(t, s, "acme", state("acme", "d1", "1.0.0", at(0)), at(time.Second))
	st := state("acme", "d1", "1.0.1", at(0))
	upsert(t, s, "acme", st, at(2*time.Second))
	wantDevice(t, device(t, s, "acme", "d1"), "acme", st, at(2*time.Second))
}

func testLastSeenNeverGoesBack(t *testing.T, s store.Store) {
	upsert(t, s, "acme", state("acme", "d1", "1.0.0", at(0)), at(time.Hour))
	addEvent(t, s, "acme", event("d1", "e1", 1, at(0)), at(time.Minute), true)
	st := state("acme", "d1", "1.0.1", at(time.Second))
	upsert(t, s, "acme", st, at(2*time.Minute))
	wantDevice(t, device(t, s, "acme", "d1"), "acme", st, at(time.Hour))
}

func testTenantConflict(t *testing.T, s store.Store) {
	ctx := context.Background()
	st := state("acme", "d1", "1.0.0", at(0))
	upsert(t, s, "acme", st, at(0))

	other := state("evil", "d1", "6.6.6", at(time.Minute))
	if err := s.UpsertState(ctx, "evil", other, at(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpsertState under another tenant: err = %v, want ErrConflict", err)
	}
	if err := s.UpsertState(ctx, "acme", other, at(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpsertState naming another tenant: err = %v, want ErrConflict", err)
	}
	if _, err := s.AddEvent(ctx, "evil", event("d1", "e1", 1, at(0)), at(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("AddEvent under another tenant: err = %v, want ErrConflict", err)
	}
	wantDevice(t, device(t, s, "acme", "d1"), "acme", st, at(0))
	if evs := events(t, s, "d1", 0); len(evs) != 0 {
		t.Errorf("events after conflicts = %v, want none", ids(evs))
	}
	devs, err := s.ListDevices(ctx, store.DeviceFilter{Tenant: "evil"})
	if err != nil || len(devs) != 0 {
		t.Errorf("ListDevices(evil) = %+v, %v; want none", devs, err)
	}
}

func testEventRoundTrip(t *testing.T, s store.Store) {
	e := wire.Event{
		Schema:  wire.SchemaVersion,
		ID:      "01JDX7Q3ZP-install",
		Device:  "d1",
		Seq:     42,
		Time:    time.Date(2026, 11, 25, 11, 0, 0, 999999000, time.FixedZone("CET", 3600)),
		Type:    wire.EventInstalled,
		Version: "1.2.3",
		Message: "installed into slot b ✓",
		Fields:  map[string]string{"slot": "b", "sha256": "abcd", "": "empty key"},
	}
	addEvent(t, s, "acme", e, at(time.Second), true)
	evs := events(t, s, "d1", 0)
	if len(evs) != 1 {
		t.Fatalf("events = %v, want one", ids(evs))
	}
	got := evs[0]
	if got.Tenant != "acme" || !got.Received.Equal(at(time.Second)) {
		t.Errorf("stored tenant, received = %q, %v; want acme, %v", got.Tenant, got.Received, at(time.Second))
	}
	if !got.Event.Time.Equal(e.Time) {
		t.Errorf("event time = %v, want %v", got.Event.Time, e.Time)
	}
	if !maps.Equal(got.Event.Fields, e.Fields) {
		t.Errorf("event fields = %v, want %v", got.Event.Fields, e.Fields)
	}
	g, w := got.Event, e
	g.Time, w.Time, g.Fields, w.Fields = time.Time{}, time.Time{}, nil, nil
	if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
		t.Errorf("event = %+v\nwant    %+v", g, w)
	}

	// No fields at all comes back as no fields.
	addEvent(t, s, "acme", event("d1", "bare", 43, at(0)), at(time.Second), true)
	if evs := events(t, s, "d1", 0); len(evs) != 2 || len(evs[1].Event.Fields) != 0 {
		t.Errorf("bare event = %+v, want no fields", evs)
	}
}

func testEventDuplicate(t *testing.T, s store.Store) {
	first := event("d1", "e1", 1, at(0))
	first.Message = "first"
	addEvent(t, s, "acme", first, at(time.Second), true)
	again := first
	again.Message = "redelivered with a different body"
	addEvent(t, s, "acme", again, at(time.Hour), false)
	evs := events(t, s, "d1", 0)
	if len(evs) != 1 || evs[0].Event.Message != "first" || !evs[0].Received.Equal(at(time.Second)) {
		t.Fatalf("events after duplicate = %+v, want only the first delivery", evs)
	}
	// A duplicate is not a sign of life: LastSeen stays.
	if d := device(t, s, "acme", "d1"); !d.LastSeen.Equal(at(time.Second)) {
		t.Errorf("LastSeen after duplicate = %v, want %v", d.LastSeen, at(time.Second))
	}
	// A new event raises LastSeen.
	addEvent(t, s, "acme", event("d1", "e2", 2, at(time.Minute)), at(time.Minute), true)
	if d := device(t, s, "acme", "d1"); !d.LastSeen.Equal(at(time.Minute)) {
		t.Errorf("LastSeen after new event = %v, want %v", d.LastSeen, at(time.Minute))
	}
}

func testEventIDPerDevice(t *testing.T, s store.Store) {
	// One device cannot suppress another's event by reusing its ID.
	addEvent(t, s, "acme", event("d1", "same", 1, at(0)), at(0), true)
	addEvent(t, s, "acme", event("d2", "same", 1, at(0)), at(0), true)
	addEvent(t, s, "other", event("d3", "same", 1, at(0)), at(0), true)
	for _, d := range []string{"d1", "d2", "d3"} {
		if evs := events(t, s, d, 0); len(evs) != 1 {
			t.Errorf("events of %s = %v, want one", d, ids(evs))
		}
	}
}

func testEventCreatesDevice(t *testing.T, s store.Store) {
	addEvent(t, s, "acme", event("d1", "boot-1", 1, at(0)), at(time.Second), true)
	d := device(t, s, "acme", "d1")
	want := store.Device{ID: "d1", Tenant: "acme", LastSeen: d.LastSeen}
	if d != want || !d.LastSeen.Equal(at(time.Second)) {
		t.Errorf("device created by event = %+v, want %+v seen at %v", d, want, at(time.Second))
	}
	// A state after that fills it in, even if its time is old.
	st := state("acme", "d1", "1.0.0", time.Time{})
	upsert(t, s, "acme", st, at(2*time.Second))
	wantDevice(t, device(t, s, "acme", "d1"), "acme", st, at(2*time.Second))
}

func testEventsSeqOrder(t *testing.T, s store.Store) {
	for _, e := range []struct {
		id  string
		seq uint64
	}{{"c", 3}, {"a", 1}, {"e", 5}, {"b", 2}, {"d", 4}} {
		addEvent(t, s, "acme", event("d1", e.id, e.seq, at(time.Duration(e.seq)*time.Second)), at(time.Hour), true)
	}
	if got, want := ids(events(t, s, "d1", 0)), []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	// Equal seq (a device whose counter restarted): receive order.
	addEvent(t, s, "acme", event("d1", "a2", 1, at(0)), at(2*time.Hour), true)
	if got, want := ids(events(t, s, "d1", 0)), []string{"a", "a2", "b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("events with a repeated seq = %v, want %v", got, want)
	}
	// Seq uses the full range a store keeps.
	addEvent(t, s, "acme", event("d1", "max", 1<<63-1, at(0)), at(time.Hour), true)
	if got := ids(events(t, s, "d1", 0)); got[len(got)-1] != "max" {
		t.Errorf("events = %v, want max last", got)
	}
}

func testEventsLimit(t *testing.T, s store.Store) {
	for i := uint64(1); i <= 5; i++ {
		addEvent(t, s, "acme", event("d1", fmt.Sprintf("e%d", i), i, at(0)), at(time.Second), true)
	}
	for _, tc := range []struct {
		limit int
		want  []string
	}{
		{0, []string{"e1", "e2", "e3", "e4", "e5"}},
		{-1, []string{"e1", "e2", "e3", "e4", "e5"}},
		{2, []string{"e4", "e5"}},
		{5, []string{"e1", "e2", "e3", "e4", "e5"}},
		{50, []string{"e1", "e2", "e3", "e4", "e5"}},
	} {
		if got := ids(events(t, s, "d1", tc.limit)); !slices.Equal(got, tc.want) {
			t.Errorf("Events(limit %d) = %v, want %v", tc.limit, got, tc.want)
		}
	}
}

func testEventsUnknownDevice(t *testing.T, s store.Store) {
	if _, err := s.Events(context.Background(), "nope", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Events(unknown) err = %v, want ErrNotFound", err)
	}
	upsert(t, s, "acme", state("acme", "quiet", "1.0.0", at(0)), at(0))
	evs, err := s.Events(context.Background(), "quiet", 0)
	if err != nil || len(evs) != 0 {
		t.Errorf("Events(no events) = %v, %v; want empty, nil", evs, err)
	}
}

func testEventSeqOutOfRange(t *testing.T, s store.Store) {
	_, err := s.AddEvent(context.Background(), "acme", event("d1", "huge", 1<<63, at(0)), at(0))
	if !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("AddEvent(seq 2^63) err = %v, want wire.ErrInvalid", err)
	}
}

func testEmptyIDs(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.UpsertState(ctx, "", state("", "d1", "1", at(0)), at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("UpsertState(no tenant) err = %v, want wire.ErrInvalid", err)
	}
	if err := s.UpsertState(ctx, "acme", state("acme", "", "1", at(0)), at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("UpsertState(no device) err = %v, want wire.ErrInvalid", err)
	}
	if _, err := s.AddEvent(ctx, "acme", event("d1", "", 1, at(0)), at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("AddEvent(no id) err = %v, want wire.ErrInvalid", err)
	}
	if _, err := s.AddEvent(ctx, "", event("d1", "e1", 1, at(0)), at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("AddEvent(no tenant) err = %v, want wire.ErrInvalid", err)
	}
	if devs, err := s.ListDevices(ctx, store.DeviceFilter{}); err != nil || len(devs) != 0 {
		t.Errorf("ListDevices after rejected writes = %+v, %v; want none", devs, err)
	}
}

func testListFilter(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, d := range []struct{ tenant, id, model string }{
		{"zeta", "a1", "dt100"},
		{"acme", "p2", "dt200"},
		{"acme", "p1", "dt100"},
		{"acme", "p10", "dt100"},
		{"beta", "b1", "dt200"},
	} {
		st := state(d.tenant, d.id, "1.0.0", at(0))
		st.Model = d.model
		upsert(t, s, d.tenant, st, at(0))
	}
	key := func(devs []store.Device) []string {
		out := make([]string, len(devs))
		for i, d := range devs {
			out[i] = d.Tenant + "/" + d.ID
		}
		return out
	}
	for _, tc := range []struct {
		f    store.DeviceFilter
		want []string
	}{
		{store.DeviceFilter{}, []string{"acme/p1", "acme/p10", "acme/p2", "beta/b1", "zeta/a1"}},
		{store.DeviceFilter{Tenant: "acme"}, []string{"acme/p1", "acme/p10", "acme/p2"}},
		{store.DeviceFilter{Model: "dt200"}, []string{"acme/p2", "beta/b1"}},
		{store.DeviceFilter{Tenant: "acme", Model: "dt100"}, []string{"acme/p1", "acme/p10"}},
		{store.DeviceFilter{Limit: 2}, []string{"acme/p1", "acme/p10"}},
		{store.DeviceFilter{Model: "dt100", Limit: 1}, []string{"acme/p1"}},
		{store.DeviceFilter{Limit: -1}, []string{"acme/p1", "acme/p10", "acme/p2", "beta/b1", "zeta/a1"}},
		{store.DeviceFilter{Tenant: "nobody"}, []string{}},
		{store.DeviceFilter{Tenant: "ACME"}, []string{}},
	} {
		devs, err := s.ListDevices(ctx, tc.f)
		if err != nil {
			t.Fatalf("ListDevices(%+v): %v", tc.f, err)
		}
		if got := key(devs); !slices.Equal(got, tc.want) {
			t.Errorf("ListDevices(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

func testConcurrentEvents(t *testing.T, s store.Store) {
	// Redelivery racing the first delivery still stores each event once.
	const devices, perDevice, copies = 4, 25, 3
	var inserted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, devices*copies)
	for d := range devices {
		for range copies {
			wg.Go(func() {
				dev := fmt.Sprintf("d%d", d)
				for i := range perDevice {
					ok, err := s.AddEvent(context.Background(), "acme",
						event(dev, fmt.Sprintf("e%d", i), uint64(i), at(0)), at(time.Second))
					if err != nil {
						errs <- err
						return
					}
					if ok {
						inserted.Add(1)
					}
				}
				if err := s.UpsertState(context.Background(), "acme", state("acme", dev, "1.0.0", at(0)), at(0)); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent write: %v", err)
	}
	if got := inserted.Load(); got != devices*perDevice {
		t.Errorf("inserted %d events, want %d", got, devices*perDevice)
	}
	for d := range devices {
		if evs := events(t, s, fmt.Sprintf("d%d", d), 0); len(evs) != perDevice {
			t.Errorf("device d%d has %d events, want %d", d, len(evs), perDevice)
		}
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.UpsertState(ctx, "acme", state("acme", "d1", "1", at(0)), at(0)); err == nil {
		t.Error("UpsertState with a canceled context succeeded")
	}
	if _, err := s.AddEvent(ctx, "acme", event("d1", "e1", 1, at(0)), at(0)); err == nil {
		t.Error("AddEvent with a canceled context succeeded")
	}
	if err := s.UpsertStates(ctx, "acme", []wire.State{state("acme", "d1", "1", at(0))}, at(0)); err == nil {
		t.Error("UpsertStates with a canceled context succeeded")
	}
	if _, err := s.AddEvents(ctx, "acme", []wire.Event{event("d1", "e1", 1, at(0))}, at(0)); err == nil {
		t.Error("AddEvents with a canceled context succeeded")
	}
	if _, err := s.ListDevices(ctx, store.DeviceFilter{}); err == nil {
		t.Error("ListDevices with a canceled context succeeded")
	}
	if devs, err := s.ListDevices(context.Background(), store.DeviceFilter{}); err != nil || len(devs) != 0 {
		t.Errorf("ListDevices after canceled writes = %+v, %v; want none", devs, err)
	}
}
