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

func TestSQLiteAttestations(t *testing.T) {
	storetest.RunAttestations(t, func(t *testing.T) storetest.AttestationStore {
		s := openSQLite(t, filepath.Join(t.TempDir(), "fleet.db"))
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestPostgresAttestations(t *testing.T) {
	storetest.RunAttestations(t, func(t *testing.T) storetest.AttestationStore {
		_, dsn := postgresSchema(t)
		s := openPostgres(t, dsn)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestSQLiteSIPCredentials(t *testing.T) {
	storetest.RunSIPCredentials(t, func(t *testing.T) storetest.SIPCredentialStore {
		s := openSQLite(t, filepath.Join(t.TempDir(), "fleet.db"))
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestPostgresSIPCredentials(t *testing.T) {
	storetest.RunSIPCredentials(t, func(t *testing.T) storetest.SIPCredentialStore {
		_, dsn := postgresSchema(t)
		s := openPostgres(t, dsn)
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
