package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

func alert(id, tenant, device, kind string, tm time.Time) store.Alert {
	return store.Alert{ID: id, Time: tm, Tenant: tenant, Device: device, Kind: kind, Severity: store.AlertWarning,
		Source: "ingest", Message: "bad " + id}
}

func addAlert(t *testing.T, s store.Store, a store.Alert, want bool) {
	t.Helper()
	got, err := s.AddAlert(context.Background(), a)
	if err != nil {
		t.Fatalf("AddAlert(%s): %v", a.ID, err)
	}
	if got != want {
		t.Fatalf("AddAlert(%s) inserted = %v, want %v", a.ID, got, want)
	}
}

func listAlerts(t *testing.T, s store.Store, f store.AlertFilter) []store.Alert {
	t.Helper()
	as, err := s.ListAlerts(context.Background(), f)
	if err != nil {
		t.Fatalf("ListAlerts(%+v): %v", f, err)
	}
	return as
}

func alertIDs(as []store.Alert) string {
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	return strings.Join(ids, " ")
}

// testAlerts: round trip, filters, newest first.
func testAlerts(t *testing.T, s store.Store) {
	if as := listAlerts(t, s, store.AlertFilter{}); as == nil || len(as) != 0 {
		t.Fatalf("ListAlerts on an empty store = %#v, want an empty slice", as)
	}
	a1 := alert("a1", "acme", "d1", "acl-denied", at(0))
	a1.Severity = store.AlertCritical
	a1.Source = "embedded-broker"
	a1.Fields = map[string]string{"topic": "dialtone/v1/acme/d2/events", "action": "publish"}
	// Alerts name no stored device: a device the store never saw (refused
	// at connect) can have alerts.
	addAlert(t, s, a1, true)
	addAlert(t, s, alert("a2", "acme", "d2", "malformed-payload", at(time.Second)), true)
	addAlert(t, s, alert("a3", "", "", "connection-failures", at(2*time.Second)), true)
	addAlert(t, s, alert("a4", "beta", "d1", "acl-denied", at(time.Second)), true)

	all := listAlerts(t, s, store.AlertFilter{})
	if got, want := alertIDs(all), "a3 a4 a2 a1"; got != want {
		t.Fatalf("ListAlerts = %s, want %s (newest first, ties by ID descending)", got, want)
	}
	got := all[3]
	if got.Time != at(0) || got.Last != at(0) || got.Count != 1 || got.Tenant != "acme" || got.Device != "d1" ||
		got.Kind != "acl-denied" || got.Severity != store.AlertCritical || got.Source != "embedded-broker" ||
		got.Message != "bad a1" || !maps.Equal(got.Fields, a1.Fields) {
		t.Errorf("stored alert = %+v, want %+v with Last = Time and Count 1", got, a1)
	}
	if all[0].Tenant != "" || all[0].Device != "" || all[0].Fields != nil {
		t.Errorf("alert without tenant and device = %+v", all[0])
	}

	for _, tc := range []struct {
		f    store.AlertFilter
		want string
	}{
		{store.AlertFilter{Tenant: "acme"}, "a2 a1"},
		{store.AlertFilter{Device: "d1"}, "a4 a1"},
		{store.AlertFilter{Kind: "acl-denied"}, "a4 a1"},
		{store.AlertFilter{Kind: "acl-denied", Tenant: "beta"}, "a4"},
		{store.AlertFilter{Since: at(time.Second)}, "a3 a4 a2"},
		{store.AlertFilter{Since: at(time.Second + time.Microsecond)}, "a3"},
		{store.AlertFilter{Limit: 2}, "a3 a4"},
		{store.AlertFilter{Kind: "nothing-like-it"}, ""},
	} {
		if got := alertIDs(listAlerts(t, s, tc.f)); got != tc.want {
			t.Errorf("ListAlerts(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

// testAlertsRepeat: an ID is stored once; storing it again keeps the larger
// count and the later last occurrence, whatever the order.
func testAlertsRepeat(t *testing.T, s store.Store) {
	a := alert("r1", "acme", "d1", "acl-denied", at(0))
	addAlert(t, s, a, true)
	addAlert(t, s, a, false) // the same again: nothing changes
	check := func(when string, count int, last time.Time) {
		t.Helper()
		as := listAlerts(t, s, store.AlertFilter{})
		if len(as) != 1 || as[0].Count != count || as[0].Last != last || as[0].Time != at(0) || as[0].Message != "bad r1" {
			t.Fatalf("%s: alerts = %+v, want r1 with count %d, last %v", when, as, count, last)
		}
	}
	check("after a duplicate", 1, at(0))

	rep := a
	rep.Count, rep.Last, rep.Message = 5, at(30*time.Second), "changed"
	addAlert(t, s, rep, false)
	check("after a repeat", 5, at(30*time.Second))

	older := a
	older.Count, older.Last = 3, at(10*time.Second)
	addAlert(t, s, older, false)
	check("after a stale repeat", 5, at(30*time.Second))
}

// testAlertsPages: pages by cursor neither skip nor repeat alerts, ties of
// time included.
func testAlertsPages(t *testing.T, s store.Store) {
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("p%02d", i)
		addAlert(t, s, alert(id, "acme", "d1", "acl-denied", at(time.Duration(i/3)*time.Second)), true)
		want = append([]string{id}, want...)
	}
	var got []string
	f := store.AlertFilter{Tenant: "acme", Limit: 4}
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("too many pages")
		}
		as := listAlerts(t, s, f)
		for _, a := range as {
			got = append(got, a.ID)
		}
		if len(as) < f.Limit {
			break
		}
		f.After = f.Cursor(as[len(as)-1])
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pages = %v, want %v", got, want)
	}
	if _, err := s.ListAlerts(context.Background(), store.AlertFilter{After: "not a cursor!"}); !errors.Is(err, store.ErrBadFilter) {
		t.Errorf("ListAlerts(bad cursor) = %v, want ErrBadFilter", err)
	}
}

func testAlertsInvalid(t *testing.T, s store.Store) {
	ok := alert("i1", "acme", "d1", "acl-denied", at(0))
	for name, mod := range map[string]func(*store.Alert){
		"empty id":       func(a *store.Alert) { a.ID = "" },
		"long id":        func(a *store.Alert) { a.ID = strings.Repeat("x", store.MaxAlertID+1) },
		"no kind":        func(a *store.Alert) { a.Kind = "" },
		"no source":      func(a *store.Alert) { a.Source = "" },
		"bad severity":   func(a *store.Alert) { a.Severity = "info" },
		"no time":        func(a *store.Alert) { a.Time = time.Time{} },
		"NUL in message": func(a *store.Alert) { a.Message = "a\x00b" },
		"bad UTF-8":      func(a *store.Alert) { a.Device = "\xff" },
		"long message":   func(a *store.Alert) { a.Message = strings.Repeat("m", store.MaxAlertMessage+1) },
		"NUL in field":   func(a *store.Alert) { a.Fields = map[string]string{"k": "\x00"} },
		"negative count": func(a *store.Alert) { a.Count = -1 },
	} {
		a := ok
		mod(&a)
		if _, err := s.AddAlert(context.Background(), a); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("%s: AddAlert = %v, want ErrInvalid", name, err)
		}
	}
	if as := listAlerts(t, s, store.AlertFilter{}); len(as) != 0 {
		t.Errorf("invalid alerts stored: %+v", as)
	}
}
