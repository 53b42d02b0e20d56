package store_test

import (
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/store/storetest"
)

func TestSQLiteUsers(t *testing.T) {
	storetest.RunUsers(t, func(t *testing.T) store.Users {
		s := openSQLite(t, filepath.Join(t.TempDir(), "fleet.db"))
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestPostgresUsers(t *testing.T) {
	storetest.RunUsers(t, func(t *testing.T) store.Users {
		_, dsn := postgresSchema(t)
		s := openPostgres(t, dsn)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
