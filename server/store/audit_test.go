package store_test

import (
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/store/storetest"
)

func TestSQLiteAudit(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T, n int) []store.Audit {
		path := filepath.Join(t.TempDir(), "fleet.db")
		var out []store.Audit
		for range n {
			s := openSQLite(t, path)
			t.Cleanup(func() { _ = s.Close() })
			out = append(out, s)
		}
		return out
	})
}

func TestSQLiteMemoryAudit(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T, n int) []store.Audit {
		// One in-memory database has one handle: the replicas share it.
		s := openSQLite(t, ":memory:")
		t.Cleanup(func() { _ = s.Close() })
		out := make([]store.Audit, n)
		for i := range out {
			out[i] = s
		}
		return out
	})
}

func TestPostgresAudit(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T, n int) []store.Audit {
		_, dsn := postgresSchema(t)
		var out []store.Audit
		for range n {
			s := openPostgres(t, dsn)
			t.Cleanup(func() { _ = s.Close() })
			out = append(out, s)
		}
		return out
	})
}
