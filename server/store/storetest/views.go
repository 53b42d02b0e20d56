package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// The operator views: filters, orders and pages of ListDevices, and the
// attestation column they filter on.

func deviceKeys(devs []store.Device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.Tenant + "/" + d.ID
	}
	return out
}

func list(t *testing.T, s store.Store, f store.DeviceFilter) []store.Device {
	t.Helper()
	devs, err := s.ListDevices(context.Background(), f)
	if err != nil {
		t.Fatalf("ListDevices(%+v): %v", f, err)
	}
	return devs
}

func setAttestation(t *testing.T, s store.Store, device, state string, tm time.Time) {
	t.Helper()
	if err := s.SetAttestation(context.Background(), device, state, tm); err != nil {
		t.Fatalf("SetAttestation(%s, %q, %v): %v", device, state, tm, err)
	}
}

func ptr[T any](v T) *T { return &v }

// viewFleet stores a small fleet with every attribute the views filter and
// sort on, including ties on LastSeen.
func viewFleet(t *testing.T, s store.Store) {
	t.Helper()
	for _, d := range []struct {
		tenant, id, model, version string
		online                     bool
		seen                       time.Duration
		attestation                string
	}{
		{"acme", "a1", "dt100", "1.0.0", true, time.Hour, "trusted"},
		{"acme", "a2", "dt100", "1.1.0", false, 2 * time.Hour, "untrusted"},
		{"acme", "a3", "dt200", "1.1.0", true, 3 * time.Hour, ""},
		{"acme", "a4", "dt200", "1.0.0", false, 4 * time.Hour, "trusted"},
		{"beta", "b1", "dt100", "1.1.0", true, 2 * time.Hour, "trusted"},
		{"beta", "b2", "dt200", "1.10.0", false, 5 * time.Hour, ""},
		// Sorts before acme's devices by ID, after them by tenant.
		{"beta", "a0", "dt200", "1.1.0", false, 3 * time.Hour, ""},
		{"zeta", "z1", "dt100", "1.9.0", true, 0, "stale"},
	} {
		st := state(d.tenant, d.id, d.version, at(0))
		st.Model, st.Online = d.model, d.online
		upsert(t, s, d.tenant, st, at(d.seen))
		if d.attestation != "" {
			setAttestation(t, s, d.id, d.attestation, at(time.Minute))
		}
	}
}

func testListViews(t *testing.T, s store.Store) {
	viewFleet(t, s)
	for _, tc := range []struct {
		f    store.DeviceFilter
		want []string
	}{
		{store.DeviceFilter{Version: "1.1.0"}, []string{"acme/a2", "acme/a3", "beta/a0", "beta/b1"}},
		{store.DeviceFilter{Version: "1.1"}, []string{}},
		{store.DeviceFilter{Online: ptr(true)}, []string{"acme/a1", "acme/a3", "beta/b1", "zeta/z1"}},
		{store.DeviceFilter{Online: ptr(false)}, []string{"acme/a2", "acme/a4", "beta/a0", "beta/b2"}},
		{store.DeviceFilter{SeenSince: at(3 * time.Hour)}, []string{"acme/a3", "acme/a4", "beta/a0", "beta/b2"}},
		{store.DeviceFilter{SeenBefore: at(2 * time.Hour)}, []string{"acme/a1", "zeta/z1"}},
		{store.DeviceFilter{SeenSince: at(2 * time.Hour), SeenBefore: at(4 * time.Hour)}, []string{"acme/a2", "acme/a3", "beta/a0", "beta/b1"}},
		{store.DeviceFilter{Model: "dt200", Tenant: "beta"}, []string{"beta/a0", "beta/b2"}},
		{store.DeviceFilter{Attestation: "trusted"}, []string{"acme/a1", "acme/a4", "beta/b1"}},
		{store.DeviceFilter{Attestation: "stale", Tenant: "zeta"}, []string{"zeta/z1"}},
		{store.DeviceFilter{Tenant: "acme", Online: ptr(false), Model: "dt200"}, []string{"acme/a4"}},
		{store.DeviceFilter{Tenant: "acme", Version: "1.0.0", Attestation: "trusted"}, []string{"acme/a1", "acme/a4"}},
		{store.DeviceFilter{Online: ptr(true), SeenSince: at(time.Hour), Limit: 2}, []string{"acme/a1", "acme/a3"}},
	} {
		if got := deviceKeys(list(t, s, tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("ListDevices(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	// The views of one device and of the whole fleet, on the same fleet.
	t.Run("Device", func(t *testing.T) { testDeviceView(t, s) })
	t.Run("FleetSummary", func(t *testing.T) { testFleetSummary(t, s) })
}

// testDeviceView: Store.Device is ListDevices' device plus its desired
// version.
func testDeviceView(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, id := range []string{"a1", "a2", "b2", "z1"} {
		got, err := s.Device(ctx, id)
		if err != nil {
			t.Fatalf("Device(%s): %v", id, err)
		}
		var want store.Device
		for _, d := range list(t, s, store.DeviceFilter{}) {
			if d.ID == id {
				want = d
			}
		}
		// Every device of the fleet reported a state at t0.
		if !got.StateTime.Equal(at(0)) || got.StateTime.Location() != time.UTC {
			t.Errorf("Device(%s).StateTime = %v, want %v UTC", id, got.StateTime, at(0))
		}
		got.StateTime = time.Time{}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("Device(%s) = %+v\nwant %+v", id, got, want)
		}
	}
	// A device known from an event only has no state time.
	addEvent(t, s, "acme", event("e0", "ev0", 1, at(0)), at(0), true)
	if d, err := s.Device(ctx, "e0"); err != nil || !d.StateTime.IsZero() || d.Tenant != "acme" {
		t.Errorf("Device(e0) = %+v, %v; want acme's, with no state time", d, err)
	}
	for _, step := range []struct {
		version string
		at      time.Time
	}{{"1.2.0", at(10 * time.Minute)}, {"", at(20 * time.Minute)}} {
		if _, err := s.SetDesired(ctx, "a2", step.version, step.at); err != nil {
			t.Fatal(err)
		}
		d, err := s.Device(ctx, "a2")
		if err != nil || d.DesiredVersion != step.version || !d.DesiredTime.Equal(step.at) || d.DesiredTime.Location() != time.UTC {
			t.Errorf("Device(a2) after SetDesired(%q) = desired %q at %v, %v; want %q at %v UTC",
				step.version, d.DesiredVersion, d.DesiredTime, err, step.version, step.at)
		}
	}
	for _, id := range []string{"nope", "", "A1"} {
		if d, err := s.Device(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Device(%q) = %+v, %v; want ErrNotFound", id, d, err)
		}
	}
}

// testFleetSummary: the GROUP BY of the fleet, per tenant, with the devices
// behind on TUF counted, and the ListDevices filter that lists them.
func testFleetSummary(t *testing.T, s store.Store) {
	ctx := context.Background()
	// a5 joins a1's group, trusting an old timestamp; e0 has sent an event
	// but never a state, so it has no TUF versions to be behind with (the
	// Device subtest may have added it already).
	st := state("acme", "a5", "1.0.0", at(0))
	st.TUF.Timestamp = 5
	upsert(t, s, "acme", st, at(0))
	setAttestation(t, s, "a5", "trusted", at(time.Minute))
	if _, err := s.AddEvent(ctx, "acme", event("e0", "ev0", 1, at(0)), at(0)); err != nil {
		t.Fatal(err)
	}

	row := func(tenant, model, version, upd, att string, online bool, n, behind int64) store.SummaryRow {
		return store.SummaryRow{Tenant: tenant, Model: model, Version: version, UpdateState: upd, Attestation: att,
			Online: online, Devices: n, TUFBehind: behind}
	}
	const idle = wire.UpdateIdle
	acme := []store.SummaryRow{
		row("acme", "", "", "", "", false, 1, 0),
		row("acme", "dt100", "1.0.0", idle, "trusted", true, 2, 1),
		row("acme", "dt100", "1.1.0", idle, "untrusted", false, 1, 0),
		row("acme", "dt200", "1.0.0", idle, "trusted", false, 1, 0),
		row("acme", "dt200", "1.1.0", idle, "", true, 1, 0),
	}
	beta := []store.SummaryRow{
		row("beta", "dt100", "1.1.0", idle, "trusted", true, 1, 0),
		row("beta", "dt200", "1.1.0", idle, "", false, 1, 0),
		row("beta", "dt200", "1.10.0", idle, "", false, 1, 0),
	}
	zeta := []store.SummaryRow{row("zeta", "dt100", "1.9.0", idle, "stale", true, 1, 0)}
	noneBehind := func(rows []store.SummaryRow) []store.SummaryRow {
		out := slices.Clone(rows)
		for i := range out {
			out[i].TUFBehind = 0
		}
		return out
	}
	allBehind := func(rows []store.SummaryRow) []store.SummaryRow {
		out := slices.Clone(rows)
		for i := range out {
			if out[i].Model != "" { // every device with a state
				out[i].TUFBehind = out[i].Devices
			}
		}
		return out
	}
	for _, tc := range []struct {
		f    store.SummaryFilter
		want []store.SummaryRow
	}{
		{store.SummaryFilter{TUFTimestampBelow: 39}, slices.Concat(acme, beta, zeta)},
		{store.SummaryFilter{}, noneBehind(slices.Concat(acme, beta, zeta))},
		{store.SummaryFilter{TUFTimestampBelow: 5}, noneBehind(slices.Concat(acme, beta, zeta))},
		{store.SummaryFilter{TUFTimestampBelow: 41}, allBehind(slices.Concat(acme, beta, zeta))},
		{store.SummaryFilter{Tenant: "beta", TUFTimestampBelow: 39}, beta},
		{store.SummaryFilter{Tenant: "acme", TUFTimestampBelow: 39}, acme},
		{store.SummaryFilter{Tenant: "nobody"}, []store.SummaryRow{}},
	} {
		got, err := s.FleetSummary(ctx, tc.f)
		if err != nil {
			t.Fatalf("FleetSummary(%+v): %v", tc.f, err)
		}
		if got == nil || !slices.Equal(got, tc.want) {
			t.Errorf("FleetSummary(%+v) =\n%+v\nwant\n%+v", tc.f, got, tc.want)
		}
	}

	for _, tc := range []struct {
		f    store.DeviceFilter
		want []string
	}{
		{store.DeviceFilter{TUFTimestampBelow: 39}, []string{"acme/a5"}},
		{store.DeviceFilter{TUFTimestampBelow: 5}, []string{}},
		{store.DeviceFilter{TUFTimestampBelow: 41, Tenant: "beta"}, []string{"beta/a0", "beta/b1", "beta/b2"}},
		{store.DeviceFilter{TUFTimestampBelow: 41, Sort: store.SortModel, Limit: 3},
			[]string{"acme/a1", "acme/a2", "acme/a5"}},
	} {
		if got := deviceKeys(list(t, s, tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("ListDevices(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

func testListSort(t *testing.T, s store.Store) {
	viewFleet(t, s)
	for _, tc := range []struct {
		sort string
		desc bool
		want []string
	}{
		{"", false, []string{"acme/a1", "acme/a2", "acme/a3", "acme/a4", "beta/a0", "beta/b1", "beta/b2", "zeta/z1"}},
		{store.SortID, true, []string{"zeta/z1", "beta/b2", "beta/b1", "beta/a0", "acme/a4", "acme/a3", "acme/a2", "acme/a1"}},
		// Ties on the key are ordered by tenant, then ID: a2 and b1 were
		// last seen at the same time, and a3 and a0.
		{store.SortLastSeen, false, []string{"zeta/z1", "acme/a1", "acme/a2", "beta/b1", "acme/a3", "beta/a0", "acme/a4", "beta/b2"}},
		{store.SortLastSeen, true, []string{"beta/b2", "acme/a4", "beta/a0", "acme/a3", "beta/b1", "acme/a2", "acme/a1", "zeta/z1"}},
		// Versions sort by their bytes, not as semver.
		{store.SortVersion, false, []string{"acme/a1", "acme/a4", "acme/a2", "acme/a3", "beta/a0", "beta/b1", "beta/b2", "zeta/z1"}},
		{store.SortVersion, true, []string{"zeta/z1", "beta/b2", "beta/b1", "beta/a0", "acme/a3", "acme/a2", "acme/a4", "acme/a1"}},
		{store.SortModel, false, []string{"acme/a1", "acme/a2", "beta/b1", "zeta/z1", "acme/a3", "acme/a4", "beta/a0", "beta/b2"}},
		{store.SortModel, true, []string{"beta/b2", "beta/a0", "acme/a4", "acme/a3", "zeta/z1", "beta/b1", "acme/a2", "acme/a1"}},
	} {
		f := store.DeviceFilter{Sort: tc.sort, Desc: tc.desc}
		if got := deviceKeys(list(t, s, f)); !slices.Equal(got, tc.want) {
			t.Errorf("ListDevices(sort %q, desc %v) = %v, want %v", tc.sort, tc.desc, got, tc.want)
		}
	}
}

// testListPages walks every order, with and without filters, a page at a
// time by cursor and by offset: the pages add up to the whole listing.
func testListPages(t *testing.T, s store.Store) {
	viewFleet(t, s)
	for _, sort := range []string{"", store.SortID, store.SortLastSeen, store.SortVersion, store.SortModel} {
		for _, desc := range []bool{false, true} {
			for _, base := range []store.DeviceFilter{{}, {Tenant: "acme"}, {Online: ptr(false)}, {Model: "dt100", SeenSince: at(time.Hour)}} {
				base.Sort, base.Desc = sort, desc
				all := deviceKeys(list(t, s, base))

				var byCursor []string
				f := base
				f.Limit = 2
				for range len(all) + 2 {
					page := list(t, s, f)
					byCursor = append(byCursor, deviceKeys(page)...)
					if len(page) < f.Limit {
						break
					}
					f.After = f.Cursor(page[len(page)-1])
				}
				if !slices.Equal(byCursor, all) {
					t.Errorf("pages by cursor of %+v = %v, want %v", base, byCursor, all)
				}

				var byOffset []string
				f = base
				f.Limit = 3
				for f.Offset = 0; f.Offset < len(all)+3; f.Offset += f.Limit {
					byOffset = append(byOffset, deviceKeys(list(t, s, f))...)
				}
				if !slices.Equal(byOffset, all) {
					t.Errorf("pages by offset of %+v = %v, want %v", base, byOffset, all)
				}

				// Offset alone, and after a cursor.
				f = base
				f.Offset = 2
				if got, want := deviceKeys(list(t, s, f)), all[min(2, len(all)):]; !slices.Equal(got, want) {
					t.Errorf("offset 2 of %+v = %v, want %v", base, got, want)
				}
				if len(all) > 0 {
					f = base
					f.Limit = 1
					first := list(t, s, f)
					f.Limit = 0
					f.After, f.Offset = f.Cursor(first[0]), 1
					if got, want := deviceKeys(list(t, s, f)), all[min(2, len(all)):]; !slices.Equal(got, want) {
						t.Errorf("offset 1 after the first of %+v = %v, want %v", base, got, want)
					}
				}
			}
		}
	}

	// A cursor stays put when devices are added before it.
	f := store.DeviceFilter{Tenant: "acme", Limit: 2}
	page := list(t, s, f)
	upsert(t, s, "acme", state("acme", "a00", "1.0.0", at(0)), at(0))
	f.After = f.Cursor(page[len(page)-1])
	if got, want := deviceKeys(list(t, s, f)), []string{"acme/a3", "acme/a4"}; !slices.Equal(got, want) {
		t.Errorf("second page after an insert before it = %v, want %v", got, want)
	}
}

func testListBadFilter(t *testing.T, s store.Store) {
	viewFleet(t, s)
	lastSeen := store.DeviceFilter{Sort: store.SortLastSeen}
	for name, f := range map[string]store.DeviceFilter{
		"unknown sort":        {Sort: "name"},
		"sort in capitals":    {Sort: "ID"},
		"cursor not base64":   {After: "!!"},
		"cursor not JSON":     {After: base64.RawURLEncoding.EncodeToString([]byte("a1"))},
		"cursor without id":   {After: base64.RawURLEncoding.EncodeToString([]byte(`{"s":"id","t":"acme"}`))},
		"cursor of last_seen": {Sort: store.SortVersion, After: lastSeen.Cursor(store.Device{ID: "a1", Tenant: "acme", LastSeen: at(0)})},
		"cursor of id":        {Sort: store.SortLastSeen, After: store.DeviceFilter{}.Cursor(store.Device{ID: "a1", Tenant: "acme"})},
	} {
		if devs, err := s.ListDevices(context.Background(), f); !errors.Is(err, store.ErrBadFilter) {
			t.Errorf("ListDevices(%s) = %v, %v; want ErrBadFilter", name, deviceKeys(devs), err)
		}
	}
}

func testAttestation(t *testing.T, s store.Store) {
	ctx := context.Background()
	st := state("acme", "d1", "1.0.0", at(0))
	upsert(t, s, "acme", st, at(time.Minute))

	setAttestation(t, s, "d1", "trusted", at(time.Hour))
	d := device(t, s, "acme", "d1")
	if d.Attestation != "trusted" || !d.Attested.Equal(at(time.Hour)) || d.Attested.Location() != time.UTC {
		t.Errorf("after SetAttestation: %q at %v, want trusted at %v UTC", d.Attestation, d.Attested, at(time.Hour))
	}
	// Attesting is not a report: LastSeen stays.
	if !d.LastSeen.Equal(at(time.Minute)) {
		t.Errorf("LastSeen after SetAttestation = %v, want %v", d.LastSeen, at(time.Minute))
	}

	// An older outcome arriving late is ignored; one as new replaces.
	setAttestation(t, s, "d1", "untrusted", at(30*time.Minute))
	if d := device(t, s, "acme", "d1"); d.Attestation != "trusted" || !d.Attested.Equal(at(time.Hour)) {
		t.Errorf("after an older outcome: %q at %v, want trusted at %v", d.Attestation, d.Attested, at(time.Hour))
	}
	setAttestation(t, s, "d1", "untrusted", at(time.Hour))
	if d := device(t, s, "acme", "d1"); d.Attestation != "untrusted" {
		t.Errorf("after an outcome as new: %q, want untrusted", d.Attestation)
	}

	// A new state keeps the attestation, and the device lists under it.
	upsert(t, s, "acme", state("acme", "d1", "1.1.0", at(time.Hour)), at(2*time.Hour))
	devs := list(t, s, store.DeviceFilter{Attestation: "untrusted"})
	if len(devs) != 1 || devs[0].ID != "d1" || devs[0].Version != "1.1.0" || !devs[0].Attested.Equal(at(time.Hour)) {
		t.Errorf("untrusted devices = %+v, want d1 at 1.1.0, attested at %v", devs, at(time.Hour))
	}
	// Back to no outcome recorded is a state like any other.
	setAttestation(t, s, "d1", "", at(3*time.Hour))
	if d := device(t, s, "acme", "d1"); d.Attestation != "" || !d.Attested.Equal(at(3*time.Hour)) {
		t.Errorf("after clearing: %q at %v, want \"\" at %v", d.Attestation, d.Attested, at(3*time.Hour))
	}

	if err := s.SetAttestation(ctx, "nope", "trusted", at(0)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetAttestation(unknown) err = %v, want ErrNotFound", err)
	}
	if err := s.SetAttestation(ctx, "", "trusted", at(0)); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("SetAttestation(no device) err = %v, want wire.ErrInvalid", err)
	}
	// A device created by an event has no attestation yet.
	addEvent(t, s, "acme", event("d2", "e1", 1, at(0)), at(0), true)
	if d := device(t, s, "acme", "d2"); d.Attestation != "" || !d.Attested.IsZero() {
		t.Errorf("new device attestation = %q at %v, want none", d.Attestation, d.Attested)
	}
}

// seen is a device's version and LastSeen, for checkDevices.
type seen struct {
	version string
	seen    time.Time
}

// checkDevices compares the devices of tenant with want, by ID, version and
// LastSeen.
func checkDevices(t *testing.T, s store.Store, tenant string, want map[string]seen) {
	t.Helper()
	devs := list(t, s, store.DeviceFilter{Tenant: tenant})
	got := map[string]string{}
	for _, d := range devs {
		got[d.ID] = fmt.Sprintf("%s seen %v", d.Version, d.LastSeen)
	}
	w := map[string]string{}
	for id, v := range want {
		w[id] = fmt.Sprintf("%s seen %v", v.version, v.seen)
	}
	if fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("devices of %s = %v\nwant %v", tenant, got, w)
	}
}
