package store

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
)

// ExplainList returns the plan the database picks for ListDevices(f), one
// step a line, so that tests can check that the views use indexes.
func ExplainList(ctx context.Context, s Store, f DeviceFilter) (string, error) {
	var lines []string
	switch s := s.(type) {
	case *SQLite:
		clauses, args, err := listClauses(f, sqliteDialect)
		if err != nil {
			return "", err
		}
		rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT `+deviceCols+` FROM devices`+clauses, args...)
		if err != nil {
			return "", err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id, parent, notused int
				detail              string
			)
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				return "", err
			}
			lines = append(lines, detail)
		}
		if err := rows.Err(); err != nil {
			return "", err
		}
	case *Postgres:
		clauses, args, err := listClauses(f, postgresDialect)
		if err != nil {
			return "", err
		}
		rows, err := s.pool.Query(ctx, `EXPLAIN SELECT `+deviceCols+` FROM devices`+clauses, args...)
		if err != nil {
			return "", err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return "", err
			}
			lines = append(lines, line)
		}
		if err := rows.Err(); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("no plans for %T", s)
	}
	return strings.Join(lines, "\n"), nil
}

// Analyze has PostgreSQL gather the statistics its planner uses, as its
// autovacuum does some time after a bulk load. SQLite runs without them in
// production, so it is left so.
func Analyze(ctx context.Context, s Store) error {
	if s, ok := s.(*Postgres); ok {
		_, err := s.pool.Exec(ctx, `ANALYZE devices`)
		return err
	}
	return nil
}

// Migrations returns the embedded migrations of "sqlite" or "postgres".
func Migrations(kind string) (fs.FS, error) {
	if kind == "sqlite" {
		return fs.Sub(sqliteMigrations, "migrations/sqlite")
	}
	return fs.Sub(postgresMigrations, "migrations/postgres")
}
