package storetest

import (
	"context"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// The synthetic fleet of the list benchmarks and the plan tests (server/store
// and hack/bench): tenants, models and versions spread independently, one
// device in ten offline, one in 200 untrusted, LastSeen spanning four weeks.
const (
	FleetTenants = 20
	FleetModels  = 5
	fleetChunk   = 100 // states per UpsertStates; each chunk is seen at its own time
)

// FleetNow is the fleet's "now".
var FleetNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// FleetDevice describes device i of the fleet: its tenant and state.
func FleetDevice(i int) (tenant string, st wire.State) {
	tenant = fmt.Sprintf("t%02d", i%FleetTenants)
	st = wire.State{
		Schema:      wire.SchemaVersion,
		Tenant:      tenant,
		Device:      fmt.Sprintf("dev-%06d", i),
		Model:       fmt.Sprintf("dt%d00", 1+(i/FleetTenants)%FleetModels),
		Hardware:    "rev-b",
		Version:     fmt.Sprintf("1.%d.0", (i*7)%10),
		Slot:        "a",
		UpdateState: wire.UpdateIdle,
		Online:      i%10 != 3,
		TUF:         wire.TUFVersions{Root: 1, Timestamp: 40, Snapshot: 30, Targets: 20},
		Time:        FleetNow.Add(-time.Hour),
	}
	return tenant, st
}

// FleetUntrusted reports whether device i's attestation is untrusted.
func FleetUntrusted(i int) bool { return i%200 == 7 }

// SeedFleet stores n devices of the fleet through the batch path. Each
// chunk of a tenant's devices is seen 14 hours before the previous one.
func SeedFleet(ctx context.Context, s store.Store, n int) error {
	byTenant := map[string][]wire.State{}
	var tenants []string
	for i := range n {
		tenant, st := FleetDevice(i)
		if _, ok := byTenant[tenant]; !ok {
			tenants = append(tenants, tenant)
		}
		byTenant[tenant] = append(byTenant[tenant], st)
	}
	for _, tenant := range tenants {
		sts := byTenant[tenant]
		for c := 0; c*fleetChunk < len(sts); c++ {
			part := sts[c*fleetChunk : min((c+1)*fleetChunk, len(sts))]
			if err := s.UpsertStates(ctx, tenant, part, FleetNow.Add(-time.Duration(c)*14*time.Hour)); err != nil {
				return fmt.Errorf("seeding: %w", err)
			}
		}
	}
	for i := range n {
		if FleetUntrusted(i) {
			_, st := FleetDevice(i)
			if err := s.SetAttestation(ctx, st.Device, "untrusted", FleetNow); err != nil {
				return fmt.Errorf("seeding: %w", err)
			}
		}
	}
	return nil
}
