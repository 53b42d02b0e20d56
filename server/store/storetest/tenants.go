package storetest

import (
	"context"
	"slices"
	"testing"

	"github.com/dialtone-dev/dialtone/server/store"
)

// testTenantSets: the Tenants field of the device, alert and summary
// filters keeps the rows of the tenants it names (what an operator may
// see), an empty set keeps none, and nil does not filter. It combines with
// Tenant (an intersection).
func testTenantSets(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, d := range []struct{ tenant, id string }{{"acme", "a1"}, {"acme", "a2"}, {"beta", "b1"}, {"zeta", "z1"}} {
		upsert(t, s, d.tenant, state(d.tenant, d.id, "1.0.0", at(0)), at(0))
	}
	addAlert(t, s, alert("x1", "acme", "a1", "acl-denied", at(0)), true)
	addAlert(t, s, alert("x2", "beta", "b1", "acl-denied", at(1)), true)
	addAlert(t, s, alert("x3", "zeta", "z1", "acl-denied", at(2)), true)
	addAlert(t, s, alert("x4", "", "", "acl-denied", at(3)), true) // a client refused before it named a tenant

	for _, tc := range []struct {
		name    string
		tenant  string
		tenants []string
		devices []string
		alerts  string
		summary []string
	}{
		{"nil", "", nil, []string{"acme/a1", "acme/a2", "beta/b1", "zeta/z1"}, "x4 x3 x2 x1", []string{"acme", "beta", "zeta"}},
		{"empty", "", []string{}, []string{}, "", []string{}},
		{"one", "", []string{"beta"}, []string{"beta/b1"}, "x2", []string{"beta"}},
		{"two", "", []string{"acme", "zeta"}, []string{"acme/a1", "acme/a2", "zeta/z1"}, "x3 x1", []string{"acme", "zeta"}},
		{"unknown", "", []string{"nobody", "ACME"}, []string{}, "", []string{}},
		{"with tenant inside", "acme", []string{"acme", "beta"}, []string{"acme/a1", "acme/a2"}, "x1", []string{"acme"}},
		{"with tenant outside", "zeta", []string{"acme", "beta"}, []string{}, "", []string{}},
		{"no empty tenant", "", []string{""}, []string{}, "x4", []string{}},
	} {
		devs, err := s.ListDevices(ctx, store.DeviceFilter{Tenant: tc.tenant, Tenants: tc.tenants})
		if err != nil {
			t.Fatalf("%s: ListDevices: %v", tc.name, err)
		}
		if got := deviceKeys(devs); !slices.Equal(got, tc.devices) {
			t.Errorf("%s: devices %v, want %v", tc.name, got, tc.devices)
		}
		// With a sort order and a page, as the API lists them.
		if len(tc.devices) > 1 {
			f := store.DeviceFilter{Tenant: tc.tenant, Tenants: tc.tenants, Sort: store.SortLastSeen, Desc: true, Limit: 1}
			page := list(t, s, f)
			f.After, f.Limit = f.Cursor(page[0]), 0
			rest := list(t, s, f)
			if len(page)+len(rest) != len(tc.devices) {
				t.Errorf("%s: pages of %d and %d devices, want %d in all", tc.name, len(page), len(rest), len(tc.devices))
			}
		}
		if got := alertIDs(listAlerts(t, s, store.AlertFilter{Tenant: tc.tenant, Tenants: tc.tenants})); got != tc.alerts {
			t.Errorf("%s: alerts %q, want %q", tc.name, got, tc.alerts)
		}
		rows, err := s.FleetSummary(ctx, store.SummaryFilter{Tenant: tc.tenant, Tenants: tc.tenants, TUFTimestampBelow: 3})
		if err != nil {
			t.Fatalf("%s: FleetSummary: %v", tc.name, err)
		}
		tenants := []string{}
		for _, r := range rows {
			if !slices.Contains(tenants, r.Tenant) {
				tenants = append(tenants, r.Tenant)
			}
		}
		if !slices.Equal(tenants, tc.summary) {
			t.Errorf("%s: summary tenants %v, want %v", tc.name, tenants, tc.summary)
		}
	}
}
