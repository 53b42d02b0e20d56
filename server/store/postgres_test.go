package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/store/storetest"
)

// postgresEnv names the PostgreSQL server the tests use. They need a user
// who may create schemas in the database the DSN names; each test works in a
// schema of its own, dropped when it ends.
const (
	postgresEnv        = "DIALTONE_TEST_POSTGRES"
	postgresDefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

func postgresDSN() string {
	if dsn := os.Getenv(postgresEnv); dsn != "" {
		return dsn
	}
	return postgresDefaultDSN
}

// postgresAdmin connects to the test server, failing (never skipping) the
// test with directions when there is none: a PostgreSQL store left untested
// must not pass as a PostgreSQL store that works.
func postgresAdmin(t testing.TB) *pgx.Conn {
	t.Helper()
	dsn := postgresDSN()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("PostgreSQL unreachable at %s: %v\n"+
			"These tests need a PostgreSQL server whose user may create schemas: "+
			"set %s to its URL, e.g. postgres://user:password@host:5432/db?sslmode=disable "+
			"(default %s).", redact(dsn), err, postgresEnv, postgresDefaultDSN)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// redact hides a password in a URL DSN.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	return u.Redacted()
}

// postgresSchema creates an empty schema, dropped with all it holds when the
// test ends, and returns its name and a DSN whose search_path names it.
func postgresSchema(t testing.TB) (schema, dsn string) {
	t.Helper()
	admin := postgresAdmin(t)
	schema = "dialtone_test_" + randomHex(t)
	if _, err := admin.Exec(t.Context(), `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return schema, withSearchPath(t, postgresDSN(), schema)
}

func randomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// withSearchPath adds search_path to a URL or key=value DSN.
func withSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("%s: %v", postgresEnv, err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

func openPostgres(t testing.TB, dsn string, opts ...store.PostgresOption) *store.Postgres {
	t.Helper()
	s, err := store.OpenPostgres(t.Context(), dsn, opts...)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	return s
}

func TestPostgresConformance(t *testing.T) {
	storetest.RunConformance(t, func(t *testing.T) store.Store {
		_, dsn := postgresSchema(t)
		return openPostgres(t, dsn)
	})
}

func TestPostgresReopen(t *testing.T) {
	_, dsn := postgresSchema(t)
	storetest.RunReopen(t, func(t *testing.T) store.Store {
		return openPostgres(t, dsn)
	})
}

// TestPostgresWithSchema: WithSchema creates its schema, keeps everything
// there, and opens it again as it is.
func TestPostgresWithSchema(t *testing.T) {
	admin := postgresAdmin(t)
	schema := "dialtone_test_" + randomHex(t)
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	storetest.RunReopen(t, func(t *testing.T) store.Store {
		return openPostgres(t, postgresDSN(), store.WithSchema(schema))
	})
	var tables []string
	rows, err := admin.Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := "alerts api_tokens attestations audit_head audit_log device_identities devices enroll_grants events goose_db_version sessions sip_credentials user_identities user_recovery_codes user_tenants users"; strings.Join(tables, " ") != want {
		t.Errorf("tables in %s = %v, want %s", schema, tables, want)
	}
}

// TestPostgresMigrationsIdempotent opens the same schema several times, some
// at once as replicas starting together would, and checks that goose
// recorded each migration once.
func TestPostgresMigrationsIdempotent(t *testing.T) {
	schema, dsn := postgresSchema(t)
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			s, err := store.OpenPostgres(t.Context(), dsn)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent OpenPostgres: %v", err)
		}
	}
	s := openPostgres(t, dsn)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	admin := postgresAdmin(t)
	rows, err := admin.Query(t.Context(),
		`SELECT version_id, count(*) FROM `+schema+`.goose_db_version WHERE is_applied GROUP BY version_id ORDER BY version_id`)
	if err != nil {
		t.Fatal(err)
	}
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
	if len(versions) < 2 || versions[0] != 0 || versions[1] != 1 {
		t.Errorf("applied versions = %v, want 0, 1, …", versions)
	}
}

func TestOpenPostgresBad(t *testing.T) {
	_, dsn := postgresSchema(t)
	for _, tc := range []struct {
		name string
		dsn  string
	}{
		{"not a dsn", "postgres://%zz"},
		{"missing schema", withSearchPath(t, postgresDSN(), "dialtone_test_missing_"+randomHex(t))},
		{"no server", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"},
	} {
		if s, err := store.OpenPostgres(t.Context(), tc.dsn); err == nil {
			s.Close()
			t.Errorf("OpenPostgres(%s) succeeded", tc.name)
		}
	}
	// Sanity: the good DSN opens.
	openPostgres(t, dsn).Close()
}
