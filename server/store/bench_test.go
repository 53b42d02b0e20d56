package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/store/storetest"
)

// The fleet the list benchmarks and plan tests run over (storetest's).
const fleetSize = 100_000

var fleetNow = storetest.FleetNow

func fleetDevice(i int) (string, wire.State) { return storetest.FleetDevice(i) }

// seedFleet stores n devices of the fleet (storetest.SeedFleet) and
// refreshes the planner's statistics.
func seedFleet(tb testing.TB, s store.Store, n int) {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	if err := storetest.SeedFleet(ctx, s, n); err != nil {
		tb.Fatal(err)
	}
	if err := store.Analyze(ctx, s); err != nil {
		tb.Fatalf("seeding: analyze: %v", err)
	}
	tb.Logf("seeded %d devices into %T in %v", n, s, time.Since(start).Round(time.Millisecond))
}

// fleetViews are the operator views the benchmarks and plan tests use, each
// reading a small part of the fleet.
func fleetViews() []struct {
	name string
	f    store.DeviceFilter
} {
	page := store.DeviceFilter{Tenant: "t03", Sort: store.SortLastSeen, Desc: true, Limit: 100}
	tenant, mid := fleetDevice(fleetSize / 2)
	page.After = page.Cursor(store.Device{ID: mid.Device, Tenant: tenant, LastSeen: fleetNow.Add(-14 * 24 * time.Hour)})
	return []struct {
		name string
		f    store.DeviceFilter
	}{
		// 1,000 devices.
		{"tenant+model", store.DeviceFilter{Tenant: "t07", Model: "dt300"}},
		// 10,000 match; the first page of 100.
		{"version/page", store.DeviceFilter{Version: "1.4.0", Limit: 100}},
		// 7,600 match; the 100 seen longest ago.
		{"offline+unseen-7d/by-last-seen", store.DeviceFilter{
			Online: ptr(false), SeenBefore: fleetNow.Add(-7 * 24 * time.Hour), Sort: store.SortLastSeen, Limit: 100,
		}},
		// 500 devices.
		{"untrusted", store.DeviceFilter{Attestation: "untrusted"}},
		// A page in the middle of a tenant by LastSeen, newest first.
		{"tenant/by-last-seen-desc/cursor", page},
		// A page deep into the whole fleet by version.
		{"by-version/cursor", store.DeviceFilter{Sort: store.SortVersion, Limit: 100,
			After: store.DeviceFilter{Sort: store.SortVersion}.Cursor(store.Device{ID: "dev-050000", Tenant: "t00", Version: "1.5.0"})}},
	}
}

func ptr[T any](v T) *T { return &v }

// Seeded fleets are shared by the benchmarks and tests of one run, and
// removed by TestMain.
var (
	fleetsMu sync.Mutex
	fleets   = map[string]store.Store{} // by kind and size
	cleanups []func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	fleetsMu.Lock()
	for _, s := range fleets {
		_ = s.Close()
	}
	for _, f := range cleanups {
		f()
	}
	fleetsMu.Unlock()
	os.Exit(code)
}

// seededFleet returns a store of kind ("sqlite" or "postgres") holding the
// first n devices of the fleet, seeding it on first use.
func seededFleet(tb testing.TB, kind string, n int) store.Store {
	tb.Helper()
	fleetsMu.Lock()
	defer fleetsMu.Unlock()
	key := kind + "/" + strconv.Itoa(n)
	if s, ok := fleets[key]; ok {
		return s
	}
	var s store.Store
	switch kind {
	case "sqlite":
		dir, err := os.MkdirTemp("", "dialtone-store-fleet-")
		if err != nil {
			tb.Fatal(err)
		}
		cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) })
		if s, err = store.OpenSQLite(context.Background(), filepath.Join(dir, "fleet.db")); err != nil {
			tb.Fatal(err)
		}
	case "postgres":
		postgresAdmin(tb) // fails with directions when there is no server
		schema := "dialtone_test_fleet_" + randomHex(tb)
		cleanups = append(cleanups, func() { dropSchema(schema) })
		var err error
		if s, err = store.OpenPostgres(context.Background(), postgresDSN(), store.WithSchema(schema)); err != nil {
			tb.Fatal(err)
		}
	}
	fleets[key] = s
	seedFleet(tb, s, n)
	return s
}

func dropSchema(schema string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, postgresDSN())
	if err != nil {
		fmt.Fprintf(os.Stderr, "dropping schema %s: %v\n", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
		fmt.Fprintf(os.Stderr, "dropping schema %s: %v\n", schema, err)
	}
}

var storeKinds = []string{"sqlite", "postgres"}

// BenchmarkListDevicesFiltered lists operator views over the fleet; compare
// with BenchmarkExportAll, which reads all of it.
func BenchmarkListDevicesFiltered(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			s := seededFleet(b, kind, fleetSize)
			for _, v := range fleetViews() {
				b.Run(v.name, func(b *testing.B) {
					var n int
					for b.Loop() {
						devs, err := s.ListDevices(b.Context(), v.f)
						if err != nil {
							b.Fatal(err)
						}
						n = len(devs)
					}
					b.ReportMetric(float64(n), "devices/op")
				})
			}
		})
	}
}

// BenchmarkExportAll lists the whole fleet: a full scan.
func BenchmarkExportAll(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			s := seededFleet(b, kind, fleetSize)
			for b.Loop() {
				devs, err := s.ListDevices(b.Context(), store.DeviceFilter{})
				if err != nil {
					b.Fatal(err)
				}
				if len(devs) != fleetSize {
					b.Fatalf("exported %d devices, want %d", len(devs), fleetSize)
				}
			}
		})
	}
}

// BenchmarkAddEvents stores new events one at a time and in batches of 100,
// over 10 devices; the events/s metric compares them.
func BenchmarkAddEvents(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			for _, size := range []int{1, 100} {
				b.Run("batch-"+strconv.Itoa(size), func(b *testing.B) {
					s := openBenchStore(b, kind)
					now := time.Now()
					var seq uint64
					batch := make([]wire.Event, size)
					for b.Loop() {
						for i := range batch {
							seq++
							batch[i] = wire.Event{
								Schema: wire.SchemaVersion, ID: "e" + strconv.FormatUint(seq, 10),
								Device: "d" + strconv.FormatUint(seq%10, 10), Seq: seq, Type: wire.EventCheck, Time: now,
							}
						}
						n, err := s.AddEvents(b.Context(), "acme", batch, now)
						if err != nil {
							b.Fatal(err)
						}
						if n != size {
							b.Fatalf("inserted %d, want %d", n, size)
						}
					}
					b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
				})
			}
		})
	}
}

// openBenchStore opens an empty store of kind for one benchmark.
func openBenchStore(b *testing.B, kind string) store.Store {
	b.Helper()
	var (
		s   store.Store
		err error
	)
	switch kind {
	case "sqlite":
		s, err = store.OpenSQLite(b.Context(), filepath.Join(b.TempDir(), "fleet.db"))
	case "postgres":
		_, dsn := postgresSchema(b)
		s, err = store.OpenPostgres(b.Context(), dsn)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// TestListPlans checks that the operator views over the fleet read through
// indexes, never the whole table: the plans are what keeps a filtered list
// far below the cost of an export (see BenchmarkListDevicesFiltered).
func TestListPlans(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			n := fleetSize
			if kind == "sqlite" && raceEnabled {
				// SQLite runs without statistics: its plans do not depend
				// on the table's size, and seeding under the race detector
				// takes a minute.
				n = fleetSize / 10
			}
			s := seededFleet(t, kind, n)
			for _, v := range fleetViews() {
				plan, err := store.ExplainList(t.Context(), s, v.f)
				if err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				for line := range strings.Lines(plan) {
					line = strings.TrimSpace(line)
					// SQLite: SCAN reads a whole table or index, SEARCH a
					// range. PostgreSQL: a Seq Scan reads the whole table.
					if strings.HasPrefix(line, "SCAN ") || strings.Contains(line, "Seq Scan") {
						t.Errorf("%s reads the whole table:\n%s", v.name, plan)
						break
					}
				}
			}
		})
	}
}
