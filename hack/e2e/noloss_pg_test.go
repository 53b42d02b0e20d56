package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresEnv names the PostgreSQL the tests may use, as in server/store.
const postgresEnv = "DIALTONE_TEST_POSTGRES"

// postgresDatabase creates a database of its own for the test on the
// machine's PostgreSQL and returns its DSN; it is dropped in t.Cleanup.
func postgresDatabase(t *testing.T) string {
	t.Helper()
	admin := os.Getenv(postgresEnv)
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("reaching PostgreSQL at %s: %v (start PostgreSQL on 127.0.0.1:5432 with trust auth, or set %s to a DSN that may create databases)", admin, err, postgresEnv)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	name := "dialtone_e2e_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, admin); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// embeddedPGSetup is the dev server with its fleet store on PostgreSQL.
type embeddedPGSetup struct {
	embeddedSetup
	dsn string
}

func (e embeddedPGSetup) Events(t *testing.T, tenant string) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT device, id, seq, COALESCE(fields::text, '') FROM events WHERE tenant = $1`, tenant)
	if err != nil {
		t.Fatalf("reading the store: %v", err)
	}
	defer rows.Close()
	return scanStoredEvents(t, rows)
}
