package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/store/storetest"
)

func openSQLite(t *testing.T, path string) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite(%s): %v", path, err)
	}
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.RunConformance(t, func(t *testing.T) store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "fleet.db"))
	})
}

func TestSQLiteMemoryConformance(t *testing.T) {
	storetest.RunConformance(t, func(t *testing.T) store.Store {
		return openSQLite(t, ":memory:")
	})
}

func TestSQLiteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	storetest.RunReopen(t, func(t *testing.T) store.Store {
		return openSQLite(t, path)
	})
}

// TestSQLiteMigrationsIdempotent opens the same file several times and checks
// that goose recorded each migration once and the schema is usable.
func TestSQLiteMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	for range 3 {
		s := openSQLite(t, path)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(),
		`SELECT version_id, count(*) FROM goose_db_version WHERE is_applied GROUP BY version_id ORDER BY version_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var versions []int64
	for rows.Next() {
		var v, n int64
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("migration %d recorded %d times, want once", v, n)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// goose's own version 0 plus ours.
	if len(versions) < 2 || versions[0] != 0 || versions[1] != 1 {
		t.Errorf("applied versions = %v, want 0, 1, …", versions)
	}

	var mode string
	if err := db.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func TestOpenSQLiteBadPath(t *testing.T) {
	for _, p := range []string{"", "file:x.db", "x.db?mode=ro", filepath.Join(t.TempDir(), "missing", "dir", "x.db")} {
		if s, err := store.OpenSQLite(t.Context(), p); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) succeeded", p)
		}
	}
}

// TestSQLiteForeignKeys checks that foreign keys are enforced: events cannot
// outlive their device.
func TestSQLiteForeignKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	s := openSQLite(t, path)
	defer s.Close()
	e := wire.Event{Schema: wire.SchemaVersion, ID: "e1", Device: "d1", Seq: 1, Type: wire.EventBoot, Time: time.Now()}
	if _, err := s.AddEvent(t.Context(), "acme", e, time.Now()); err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", path+"?_foreign_keys=1&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(),
		`INSERT INTO events (device, id, tenant, schema, seq, time, type, received) VALUES ('ghost', 'x', 'acme', 1, 1, 0, 'boot', 0)`); err == nil {
		t.Error("inserted an event for a device that does not exist")
	}
}

func BenchmarkSQLiteAddEvent(b *testing.B) {
	s, err := store.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "fleet.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	var seq uint64
	for b.Loop() {
		seq++
		e := wire.Event{Schema: wire.SchemaVersion, ID: "e" + strconv.FormatUint(seq, 10), Device: "d1", Seq: seq, Type: wire.EventCheck, Time: now}
		if _, err := s.AddEvent(context.Background(), "acme", e, now); err != nil {
			b.Fatal(err)
		}
	}
}
