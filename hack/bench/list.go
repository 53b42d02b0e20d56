package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/store/storetest"
)

// The list benchmark: operator views (`devices list` with filters) over a
// fleet of 100,000 devices against an export of the whole fleet (the same
// ListDevices without a filter: a full scan), on SQLite and PostgreSQL. The
// fleet is storetest's, as in server/store's benchmarks.

const (
	postgresEnv        = "DIALTONE_TEST_POSTGRES"
	postgresDefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

	listFleetSize = 100_000
	// listRepeats is how many times a filtered list runs per round; the
	// round takes the median.
	listRepeats = 9
)

func postgresDSN() string {
	if dsn := os.Getenv(postgresEnv); dsn != "" {
		return dsn
	}
	return postgresDefaultDSN
}

func seedList(ctx context.Context, s store.Store, n int) error { return storetest.SeedFleet(ctx, s, n) }

// listView is one operator view and how many devices it must return.
type listView struct {
	name string
	f    store.DeviceFilter
	want int
}

func listViews() []listView {
	return []listView{
		// 2,000 match; the first page of 100.
		{"model+version, first 100", store.DeviceFilter{Model: "dt300", Version: "1.4.0", Limit: 100}, 100},
		// 500 devices.
		{"attestation untrusted (500)", store.DeviceFilter{Attestation: "untrusted"}, listFleetSize / 200},
	}
}

func benchList(cfg config) ([]row, error) {
	logf("== list: filtered ListDevices vs an export of all %d devices, %d rounds", listFleetSize, cfg.listRounds)
	ctx := context.Background()
	dir := filepath.Join(cfg.workdir, "list")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	type kind struct {
		name string
		open func() (store.Store, error)
	}
	kinds := []kind{{"sqlite", func() (store.Store, error) {
		return store.OpenSQLite(ctx, filepath.Join(dir, "fleet.db"))
	}}}
	var rows []row
	if err := pingPostgres(cfg.postgres); err != nil {
		logf("   PostgreSQL unavailable (%v): its figures are skipped; set -postgres or DIALTONE_TEST_POSTGRES", err)
		rows = append(rows, row{name: "list postgres", value: -1, ref: -1, ratio: -1, max: 0.1, failNote: "PostgreSQL unavailable"})
	} else {
		kinds = append(kinds, kind{"postgres", func() (store.Store, error) {
			schema := "dialtone_bench_list_" + randomHex()
			s, err := store.OpenPostgres(ctx, cfg.postgres, store.WithSchema(schema))
			if err != nil {
				return nil, err
			}
			return &droppingStore{Store: s, dsn: cfg.postgres, schema: schema}, nil
		}})
	}
	for _, k := range kinds {
		r, err := listOne(ctx, cfg, k.name, k.open)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", k.name, err)
		}
	}
	return rows, nil
}

// droppingStore drops its PostgreSQL schema when closed.
type droppingStore struct {
	store.Store
	dsn, schema string
}

func (s *droppingStore) Close() error {
	err := s.Store.Close()
	dropPostgresSchema(s.dsn, s.schema)
	return err
}

// analyze has PostgreSQL gather the statistics its planner uses, as its
// autovacuum does some time after a bulk load; SQLite runs without them.
func analyze(ctx context.Context, s store.Store) error {
	ds, ok := s.(*droppingStore)
	if !ok {
		return nil
	}
	conn, err := pgx.Connect(ctx, ds.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `ANALYZE `+pgx.Identifier{ds.schema, "devices"}.Sanitize())
	return err
}

func listOne(ctx context.Context, cfg config, name string, open func() (store.Store, error)) ([]row, error) {
	s, err := open()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	t0 := time.Now()
	if err := seedList(ctx, s, listFleetSize); err != nil {
		return nil, err
	}
	if err := analyze(ctx, s); err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	logf("   %s: seeded %d devices in %s", name, listFleetSize, time.Since(t0).Round(100*time.Millisecond))

	export := func() (time.Duration, error) {
		t := time.Now()
		devs, err := s.ListDevices(ctx, store.DeviceFilter{})
		d := time.Since(t)
		if err == nil && len(devs) != listFleetSize {
			err = fmt.Errorf("export: %d devices, want %d", len(devs), listFleetSize)
		}
		return d, err
	}
	filtered := func(v listView) (time.Duration, error) {
		ds := make([]float64, 0, listRepeats)
		for range listRepeats {
			t := time.Now()
			devs, err := s.ListDevices(ctx, v.f)
			ds = append(ds, float64(time.Since(t)))
			if err != nil {
				return 0, err
			}
			if len(devs) != v.want {
				return 0, fmt.Errorf("%s: %d devices, want %d", v.name, len(devs), v.want)
			}
		}
		return time.Duration(median(ds)), nil
	}
	// Warm the caches of both paths once, unmeasured.
	if _, err := export(); err != nil {
		return nil, err
	}
	views := listViews()
	var exports []float64
	lists := make([][]float64, len(views))
	ratios := make([][]float64, len(views))
	for round := range cfg.listRounds {
		var e time.Duration
		fs := make([]time.Duration, len(views))
		measureViews := func() error {
			for i, v := range views {
				if fs[i], err = filtered(v); err != nil {
					return err
				}
			}
			return nil
		}
		if round%2 == 0 {
			if e, err = export(); err == nil {
				err = measureViews()
			}
		} else {
			if err = measureViews(); err == nil {
				e, err = export()
			}
		}
		if err != nil {
			return nil, err
		}
		exports = append(exports, float64(e.Microseconds())/1000)
		line := fmt.Sprintf("   %s round %d: export %7.1f ms", name, round+1, float64(e.Microseconds())/1000)
		for i, v := range views {
			ms := float64(fs[i].Microseconds()) / 1000
			lists[i] = append(lists[i], ms)
			ratios[i] = append(ratios[i], ms/(float64(e.Microseconds())/1000))
			line += fmt.Sprintf("   %s %.2f ms", v.name, ms)
		}
		logf("%s", line)
	}
	var rows []row
	for i, v := range views {
		rows = append(rows, row{name: "list " + name + ": " + v.name, value: median(lists[i]), ref: median(exports), unit: "ms",
			refName: "export all", ratio: median(ratios[i]), max: 0.1, rounds: ratios[i]})
	}
	return rows, nil
}
