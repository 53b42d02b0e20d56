package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Batched writes: each must leave the store as the single writes one after
// the other would, or, when one of them fails, as it was.

func addEvents(t *testing.T, s store.Store, tenant string, evs []wire.Event, received time.Time, want int) {
	t.Helper()
	got, err := s.AddEvents(context.Background(), tenant, evs, received)
	if err != nil {
		t.Fatalf("AddEvents(%s, %d events): %v", tenant, len(evs), err)
	}
	if got != want {
		t.Fatalf("AddEvents(%s, %d events) inserted %d, want %d", tenant, len(evs), got, want)
	}
}

func testUpsertStates(t *testing.T, s store.Store) {
	ctx := context.Background()
	// d4 has a newer state than the batch brings.
	upsert(t, s, "acme", state("acme", "d4", "5.0.0", at(10*time.Minute)), at(time.Minute))

	d1a := state("acme", "d1", "1.0.0", at(time.Minute))
	d1b := state("acme", "d1", "1.0.1", at(time.Minute)) // as new: replaces d1a
	d2 := state("acme", "d2", "2.0.0", at(0))
	d2old := state("acme", "d2", "1.9.0", at(-time.Minute)) // older: ignored
	d3 := state("", "d3", "3.0.0", at(0))                   // no tenant named: fine
	d4 := state("acme", "d4", "4.0.0", at(5*time.Minute))   // older than stored: ignored
	if err := s.UpsertStates(ctx, "acme", []wire.State{d1a, d2, d1b, d3, d2old, d4}, at(time.Hour)); err != nil {
		t.Fatalf("UpsertStates: %v", err)
	}
	checkDevices(t, s, "acme", map[string]seen{
		"d1": {"1.0.1", at(time.Hour)},
		"d2": {"2.0.0", at(time.Hour)},
		"d3": {"3.0.0", at(time.Hour)},
		"d4": {"5.0.0", at(time.Minute)}, // an ignored state changes nothing
	})
	wantDevice(t, device(t, s, "acme", "d1"), "acme", d1b, at(time.Hour))

	// The later of two states as new wins within a batch, either way round.
	if err := s.UpsertStates(ctx, "acme", []wire.State{d1b, d1a}, at(2*time.Hour)); err != nil {
		t.Fatalf("UpsertStates: %v", err)
	}
	wantDevice(t, device(t, s, "acme", "d1"), "acme", d1a, at(2*time.Hour))

	for _, states := range [][]wire.State{nil, {}} {
		if err := s.UpsertStates(ctx, "acme", states, at(3*time.Hour)); err != nil {
			t.Errorf("UpsertStates(%v): %v", states, err)
		}
	}
	checkDevices(t, s, "acme", map[string]seen{
		"d1": {"1.0.0", at(2 * time.Hour)},
		"d2": {"2.0.0", at(time.Hour)},
		"d3": {"3.0.0", at(time.Hour)},
		"d4": {"5.0.0", at(time.Minute)},
	})
}

func testUpsertStatesAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	upsert(t, s, "acme", state("acme", "a1", "1.0.0", at(0)), at(0))
	upsert(t, s, "evil", state("evil", "x1", "6.6.6", at(0)), at(0))
	want := func() {
		t.Helper()
		checkDevices(t, s, "acme", map[string]seen{"a1": {"1.0.0", at(0)}})
		checkDevices(t, s, "evil", map[string]seen{"x1": {"6.6.6", at(0)}})
	}

	newer := state("acme", "a1", "2.0.0", at(time.Hour))
	fresh := state("acme", "a2", "1.0.0", at(0))
	for name, tc := range map[string]struct {
		states []wire.State
		err    error
	}{
		"device of another tenant": {[]wire.State{newer, fresh, state("acme", "x1", "1.0.0", at(time.Hour))}, store.ErrConflict},
		"state naming another":     {[]wire.State{newer, fresh, state("evil", "a3", "1.0.0", at(0))}, store.ErrConflict},
		"no device":                {[]wire.State{newer, fresh, state("acme", "", "1.0.0", at(0))}, wire.ErrInvalid},
		"NUL in version":           {[]wire.State{newer, fresh, state("acme", "a3", "1.0\x00", at(0))}, wire.ErrInvalid},
	} {
		if err := s.UpsertStates(ctx, "acme", tc.states, at(time.Hour)); !errors.Is(err, tc.err) {
			t.Errorf("UpsertStates(%s) err = %v, want %v", name, err, tc.err)
		}
		want()
	}
}

func testAddEvents(t *testing.T, s store.Store) {
	first := event("d1", "e1", 1, at(0))
	first.Message = "first"
	again := first
	again.Message = "again, in the same batch"
	addEvents(t, s, "acme", []wire.Event{
		first, event("d1", "e2", 2, at(0)), event("d2", "e1", 1, at(0)), again,
	}, at(time.Minute), 3)

	// Across batches: duplicates skipped, the rest stored; LastSeen rises
	// only for devices with a new event.
	addEvents(t, s, "acme", []wire.Event{
		event("d1", "e2", 2, at(0)), event("d1", "e3", 3, at(0)), event("d3", "e1", 1, at(0)),
	}, at(2*time.Minute), 2)
	addEvents(t, s, "acme", []wire.Event{event("d1", "e1", 1, at(0)), event("d3", "e1", 1, at(0))}, at(3*time.Minute), 0)
	checkDevices(t, s, "acme", map[string]seen{
		"d1": {"", at(2 * time.Minute)},
		"d2": {"", at(time.Minute)},
		"d3": {"", at(2 * time.Minute)},
	})

	evs := events(t, s, "d1", 0)
	if got, want := ids(evs), []string{"e1", "e2", "e3"}; !slices.Equal(got, want) {
		t.Fatalf("events of d1 = %v, want %v", got, want)
	}
	if evs[0].Event.Message != "first" || !evs[0].Received.Equal(at(time.Minute)) || evs[0].Tenant != "acme" {
		t.Errorf("e1 = %+v, want the first delivery, received at %v", evs[0], at(time.Minute))
	}
	if !evs[2].Received.Equal(at(2 * time.Minute)) {
		t.Errorf("e3 received = %v, want %v", evs[2].Received, at(2*time.Minute))
	}

	// AddEvent and AddEvents see each other's events.
	addEvent(t, s, "acme", event("d1", "e3", 3, at(0)), at(time.Hour), false)
	addEvent(t, s, "acme", event("d1", "e4", 4, at(0)), at(time.Hour), true)
	addEvents(t, s, "acme", []wire.Event{event("d1", "e4", 4, at(0)), event("d1", "e5", 5, at(0))}, at(time.Hour), 1)

	for _, evs := range [][]wire.Event{nil, {}} {
		addEvents(t, s, "acme", evs, at(2*time.Hour), 0)
	}
	if n, err := s.CountEvents(context.Background(), "d1"); err != nil || n != 5 {
		t.Errorf("CountEvents(d1) = %d, %v; want 5", n, err)
	}
}

func testAddEventsOrder(t *testing.T, s store.Store) {
	// Events sharing a Seq (a counter that restarted) keep the order they
	// came in, which is not the order of their IDs.
	addEvents(t, s, "acme", []wire.Event{
		event("d1", "c", 3, at(0)),
		event("d1", "tz", 2, at(0)),
		event("d1", "ta", 2, at(0)),
		event("d2", "x", 1, at(0)),
		event("d1", "tm", 2, at(0)),
		event("d1", "a", 1, at(0)),
	}, at(time.Minute), 6)
	addEvents(t, s, "acme", []wire.Event{event("d1", "late", 2, at(0)), event("d1", "b0", 2, at(0))}, at(2*time.Minute), 2)
	if got, want := ids(events(t, s, "d1", 0)), []string{"a", "tz", "ta", "tm", "late", "b0", "c"}; !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	if got, want := ids(events(t, s, "d1", 3)), []string{"late", "b0", "c"}; !slices.Equal(got, want) {
		t.Errorf("last 3 events = %v, want %v", got, want)
	}
}

func testAddEventsAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	addEvent(t, s, "acme", event("a1", "e1", 1, at(0)), at(0), true)
	addEvent(t, s, "evil", event("x1", "e1", 1, at(0)), at(0), true)
	for name, tc := range map[string]struct {
		evs []wire.Event
		err error
	}{
		"device of another tenant": {[]wire.Event{event("a1", "e2", 2, at(0)), event("a2", "e1", 1, at(0)), event("x1", "e2", 2, at(0))}, store.ErrConflict},
		"no id":                    {[]wire.Event{event("a1", "e2", 2, at(0)), event("a2", "e1", 1, at(0)), event("a2", "", 2, at(0))}, wire.ErrInvalid},
		"no device":                {[]wire.Event{event("a1", "e2", 2, at(0)), event("", "e1", 1, at(0))}, wire.ErrInvalid},
		"seq out of range":         {[]wire.Event{event("a1", "e2", 2, at(0)), event("a2", "e1", 1<<63, at(0))}, wire.ErrInvalid},
	} {
		n, err := s.AddEvents(ctx, "acme", tc.evs, at(time.Hour))
		if !errors.Is(err, tc.err) || n != 0 {
			t.Errorf("AddEvents(%s) = %d, %v; want 0, %v", name, n, err, tc.err)
		}
	}
	checkDevices(t, s, "acme", map[string]seen{"a1": {"", at(0)}})
	checkDevices(t, s, "evil", map[string]seen{"x1": {"", at(0)}})
	for _, d := range []string{"a1", "x1"} {
		if got := ids(events(t, s, d, 0)); !slices.Equal(got, []string{"e1"}) {
			t.Errorf("events of %s = %v, want [e1]", d, got)
		}
	}
}

func testCountEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.CountEvents(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CountEvents(unknown) err = %v, want ErrNotFound", err)
	}
	upsert(t, s, "acme", state("acme", "quiet", "1.0.0", at(0)), at(0))
	if n, err := s.CountEvents(ctx, "quiet"); err != nil || n != 0 {
		t.Errorf("CountEvents(no events) = %d, %v; want 0, nil", n, err)
	}
	addEvents(t, s, "acme", []wire.Event{event("d1", "e1", 1, at(0)), event("d1", "e2", 2, at(0)), event("d2", "e1", 1, at(0))}, at(0), 3)
	if n, err := s.CountEvents(ctx, "d1"); err != nil || n != 2 {
		t.Errorf("CountEvents(d1) = %d, %v; want 2, nil", n, err)
	}
}

// testTextRejected: text a store cannot keep (a NUL byte, invalid UTF-8) is
// refused as invalid by every store, rather than stored by one and failing
// as a database error, over and over, on another.
func testTextRejected(t *testing.T, s store.Store) {
	ctx := context.Background()
	upsert(t, s, "acme", state("acme", "d1", "1.0.0", at(0)), at(0))
	badState := func(f func(*wire.State)) wire.State {
		st := state("acme", "d2", "1.0.0", at(0))
		f(&st)
		return st
	}
	badEvent := func(f func(*wire.Event)) wire.Event {
		e := event("d2", "e1", 1, at(0))
		f(&e)
		return e
	}
	for name, st := range map[string]wire.State{
		"NUL in version":        badState(func(st *wire.State) { st.Version = "1.0\x00" }),
		"invalid UTF-8 model":   badState(func(st *wire.State) { st.Model = "dt\xff" }),
		"NUL in hardware":       badState(func(st *wire.State) { st.Hardware = "\x00" }),
		"NUL in device":         badState(func(st *wire.State) { st.Device = "d\x002" }),
		"NUL in update state":   badState(func(st *wire.State) { st.UpdateState = "idle\x00" }),
		"invalid UTF-8 in slot": badState(func(st *wire.State) { st.Slot = "\xc3" }),
	} {
		if err := s.UpsertState(ctx, "acme", st, at(0)); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("UpsertState(%s) err = %v, want wire.ErrInvalid", name, err)
		}
	}
	if err := s.UpsertState(ctx, "ac\x00me", state("", "d2", "1", at(0)), at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("UpsertState(NUL in tenant) err = %v, want wire.ErrInvalid", err)
	}
	for name, e := range map[string]wire.Event{
		"NUL in message":       badEvent(func(e *wire.Event) { e.Message = "bad\x00" }),
		"NUL in id":            badEvent(func(e *wire.Event) { e.ID = "e\x001" }),
		"invalid UTF-8 type":   badEvent(func(e *wire.Event) { e.Type = "\xfe" }),
		"NUL in a field value": badEvent(func(e *wire.Event) { e.Fields = map[string]string{"k": "\x00"} }),
		"invalid UTF-8 key":    badEvent(func(e *wire.Event) { e.Fields = map[string]string{"\xff": "v"} }),
	} {
		if _, err := s.AddEvent(ctx, "acme", e, at(0)); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("AddEvent(%s) err = %v, want wire.ErrInvalid", name, err)
		}
		if _, err := s.AddEvents(ctx, "acme", []wire.Event{event("d1", "ok", 1, at(0)), e}, at(0)); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("AddEvents(%s) err = %v, want wire.ErrInvalid", name, err)
		}
	}
	if err := s.SetAttestation(ctx, "d1", "trusted\x00", at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("SetAttestation(NUL) err = %v, want wire.ErrInvalid", err)
	}
	wantDevice(t, device(t, s, "acme", "d1"), "acme", state("acme", "d1", "1.0.0", at(0)), at(0))
	if devs := list(t, s, store.DeviceFilter{}); len(devs) != 1 {
		t.Errorf("devices = %v, want only d1", deviceKeys(devs))
	}
	if n, err := s.CountEvents(ctx, "d1"); err != nil || n != 0 {
		t.Errorf("CountEvents(d1) = %d, %v; want 0", n, err)
	}
	// What is valid is kept exactly, whatever the script.
	e := event("d1", "e1", 1, at(0))
	e.Message, e.Fields = "héllo ✓ \t\r\n 電話", map[string]string{"ключ": "значение", "": "\u2028"}
	addEvent(t, s, "acme", e, at(0), true)
	if got := events(t, s, "d1", 0)[0].Event; got.Message != e.Message || fmt.Sprint(got.Fields) != fmt.Sprint(e.Fields) {
		t.Errorf("event = %q %v, want %q %v", got.Message, got.Fields, e.Message, e.Fields)
	}
}

// testTimesMicrosUTC: every time comes back in UTC, cut down to the
// microsecond (towards the past, before 1970 too), and states are compared at
// that precision.
func testTimesMicrosUTC(t *testing.T, s store.Store) {
	zone := time.FixedZone("UTC-7", -7*3600)
	stTime := time.Date(2026, 1, 2, 3, 4, 5, 123456789, zone)
	received := time.Date(2026, 1, 2, 3, 4, 6, 999999999, zone)
	upsert(t, s, "acme", state("acme", "d1", "1.0.0", stTime), received)
	d := device(t, s, "acme", "d1")
	if want := received.Truncate(time.Microsecond); !d.LastSeen.Equal(want) || d.LastSeen.Location() != time.UTC {
		t.Errorf("LastSeen = %v, want %v in UTC", d.LastSeen, want)
	}
	// 100 ns older, but the same microsecond: as new, so it replaces.
	upsert(t, s, "acme", state("acme", "d1", "1.0.1", stTime.Add(-100)), received)
	if d := device(t, s, "acme", "d1"); d.Version != "1.0.1" {
		t.Errorf("version = %s, want 1.0.1: a state in the same microsecond replaces", d.Version)
	}
	if err := s.UpsertStates(context.Background(), "acme", []wire.State{
		state("acme", "d1", "1.0.3", stTime.Add(-200)), state("acme", "d1", "1.0.2", stTime.Add(-300)),
	}, received); err != nil {
		t.Fatal(err)
	}
	if d := device(t, s, "acme", "d1"); d.Version != "1.0.2" {
		t.Errorf("version = %s, want 1.0.2: the later of a batch's states in one microsecond", d.Version)
	}

	setAttestation(t, s, "d1", "trusted", stTime)
	if d := device(t, s, "acme", "d1"); !d.Attested.Equal(stTime.Truncate(time.Microsecond)) || d.Attested.Location() != time.UTC {
		t.Errorf("Attested = %v, want %v in UTC", d.Attested, stTime.Truncate(time.Microsecond))
	}

	old := time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC)
	e := event("d1", "e1", 1, old)
	addEvents(t, s, "acme", []wire.Event{e}, received, 1)
	got := events(t, s, "d1", 0)[0]
	if want := time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC); !got.Event.Time.Equal(want) || got.Event.Time.Location() != time.UTC {
		t.Errorf("event time = %v, want %v in UTC", got.Event.Time, want)
	}
	if !got.Received.Equal(received.Truncate(time.Microsecond)) || got.Received.Location() != time.UTC {
		t.Errorf("received = %v, want %v in UTC", got.Received, received.Truncate(time.Microsecond))
	}
}

// testConcurrentBatches: redelivered batches racing each other, in opposite
// orders and beside state batches over the same devices, store each event
// once and fail none: writers do not deadlock.
func testConcurrentBatches(t *testing.T, s store.Store) {
	const devices, perDevice, rounds, writers = 8, 20, 6, 4
	var sts []wire.State
	for d := range devices {
		sts = append(sts, state("acme", fmt.Sprintf("d%d", d), "1.0.0", at(0)))
	}
	if err := s.UpsertStates(context.Background(), "acme", sts, at(0)); err != nil {
		t.Fatal(err)
	}
	// Every writer sends every round's events, half of them in the
	// opposite order, half of them in one batch and the others in small ones.
	batches := func(w, r int) [][]wire.Event {
		var evs []wire.Event
		for i := range perDevice {
			for d := range devices {
				evs = append(evs, event(fmt.Sprintf("d%d", d), fmt.Sprintf("r%d-e%d", r, i), uint64(r*perDevice+i), at(0)))
			}
		}
		if w%2 == 1 {
			slices.Reverse(evs)
		}
		if w < writers/2 {
			return [][]wire.Event{evs}
		}
		return slices.Collect(slices.Chunk(evs, 16))
	}
	var inserted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				for _, b := range batches(w, r) {
					n, err := s.AddEvents(context.Background(), "acme", b, at(time.Second))
					if err != nil {
						errs <- err
						return
					}
					inserted.Add(int64(n))
				}
			}
		})
		wg.Go(func() {
			sts := slices.Clone(sts)
			if w%2 == 0 {
				slices.Reverse(sts)
			}
			for i := range rounds {
				for j := range sts {
					sts[j].Time = at(time.Duration(i))
				}
				if err := s.UpsertStates(context.Background(), "acme", sts, at(0)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent batch: %v", err)
	}
	if got, want := inserted.Load(), int64(devices*perDevice*rounds); got != want {
		t.Errorf("inserted %d events, want %d", got, want)
	}
	for d := range devices {
		if n, err := s.CountEvents(context.Background(), fmt.Sprintf("d%d", d)); err != nil || n != perDevice*rounds {
			t.Errorf("device d%d has %d events (%v), want %d", d, n, err, perDevice*rounds)
		}
	}
}
