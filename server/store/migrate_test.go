package store_test

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/dialtone-dev/dialtone/server/store"
)

// TestUpgrade opens a database that an earlier build left at migration 2,
// with a device in it: opening it upgrades it, keeping the device. Then the
// newest migration goes down and up again, as an operator rolling back a
// release would.
func TestUpgrade(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			var (
				db      *sql.DB
				dialect goose.Dialect
				open    func() store.Store
				insert  string
			)
			switch kind {
			case "sqlite":
				path := filepath.Join(t.TempDir(), "fleet.db")
				var err error
				if db, err = sql.Open("sqlite", path+"?_foreign_keys=1"); err != nil {
					t.Fatal(err)
				}
				dialect = goose.DialectSQLite3
				open = func() store.Store { return openSQLite(t, path) }
				insert = `INSERT INTO devices (id, tenant, model, version, online, last_seen) VALUES ('d1', 'acme', 'dt100', '1.0.0', 1, 1764064800000000)`
			case "postgres":
				_, dsn := postgresSchema(t)
				cfg, err := pgx.ParseConfig(dsn)
				if err != nil {
					t.Fatal(err)
				}
				db = stdlib.OpenDB(*cfg)
				dialect = goose.DialectPostgres
				open = func() store.Store { return openPostgres(t, dsn) }
				insert = `INSERT INTO devices (id, tenant, model, version, online, last_seen) VALUES ('d1', 'acme', 'dt100', '1.0.0', true, '2025-11-25 10:00:00Z')`
			}
			defer db.Close()
			fsys, err := store.Migrations(kind)
			if err != nil {
				t.Fatal(err)
			}
			p, err := goose.NewProvider(dialect, db, fsys, goose.WithDisableGlobalRegistry(true), goose.WithLogger(goose.NopLogger()))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, 2); err != nil {
				t.Fatalf("migrating to 2: %v", err)
			}
			if _, err := db.ExecContext(ctx, insert); err != nil {
				t.Fatal(err)
			}

			check := func(when string) {
				t.Helper()
				s := open()
				defer s.Close()
				devs, err := s.ListDevices(ctx, store.DeviceFilter{Model: "dt100", Version: "1.0.0", Online: ptr(true)})
				if err != nil || len(devs) != 1 || devs[0].ID != "d1" || devs[0].Attestation != "" {
					t.Fatalf("%s: devices = %+v, %v; want d1 without attestation", when, devs, err)
				}
				if err := s.SetAttestation(ctx, "d1", "trusted", time.Now()); err != nil {
					t.Fatalf("%s: SetAttestation: %v", when, err)
				}
			}
			check("after the upgrade")

			if _, err := p.DownTo(ctx, 2); err != nil {
				t.Fatalf("migrating down to 2: %v", err)
			}
			check("after down and up again")
		})
	}
}
