package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/dialtone-dev/dialtone/internal/wire"
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// Connection settings. The writer is the only connection that writes: SQLite
// allows one writer at a time anyway, and a single connection turns lock
// contention inside this process into queueing in database/sql. Its
// transactions take the write lock up front (BEGIN IMMEDIATE) so that a
// read-then-write transaction never fails on lock upgrade; busy_timeout covers
// other processes (the CLI) opening the same file. WAL lets readers run
// beside the writer.
const (
	sqliteWriterParams = "_busy_timeout=10000&_foreign_keys=1&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"
	sqliteReaderParams = "_busy_timeout=10000&_foreign_keys=1&_query_only=1"
	sqliteReaders      = 4
)

// SQLite is the Store on an SQLite database file. It is safe for concurrent
// use.
type SQLite struct {
	w *sql.DB // one connection, all writes
	r *sql.DB // read-only pool; the same as w for an in-memory database
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating it if needed) the SQLite database at path and
// applies any pending migrations. path is a file name; ":memory:" gives a
// private in-memory database, for tests.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("store: opening sqlite: bad path %q (want a file name, or \":memory:\" for a private in-memory database)", path)
	}
	w, err := openSQLiteDB(ctx, path+"?"+sqliteWriterParams, 1)
	if err != nil {
		return nil, fmt.Errorf("store: opening sqlite %s: %w", path, err)
	}
	if err := migrateSQLite(ctx, w); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("store: migrating sqlite %s: %w", path, err)
	}
	s := &SQLite{w: w, r: w}
	if path != ":memory:" {
		r, err := openSQLiteDB(ctx, path+"?"+sqliteReaderParams, sqliteReaders)
		if err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("store: opening sqlite %s for reading: %w", path, err)
		}
		s.r = r
	}
	return s, nil
}

func openSQLiteDB(ctx context.Context, dsn string, conns int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// migrateSQLite applies the embedded migrations that the database lacks.
// Running it on an up-to-date database changes nothing.
func migrateSQLite(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys,
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
	)
	if err != nil {
		return err
	}
	// No p.Close: it would close db, which the store owns.
	_, err = p.Up(ctx)
	return err
}

// Close closes the database.
func (s *SQLite) Close() error {
	var rerr error
	if s.r != s.w {
		rerr = s.r.Close()
	}
	return errors.Join(rerr, s.w.Close())
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func checkIDs(tenant, device string) error {
	if tenant == "" || device == "" {
		return fmt.Errorf("%w: empty tenant or device", wire.ErrInvalid)
	}
	return nil
}

// deviceTenant returns the tenant device is registered with, or "" and
// ok false if there is no such device.
func deviceTenant(ctx context.Context, tx *sql.Tx, device string) (tenant string, ok bool, err error) {
	err = tx.QueryRowContext(ctx, `SELECT tenant FROM devices WHERE id = ?`, device).Scan(&tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return tenant, true, nil
}

// UpsertState implements Store.
func (s *SQLite) UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) (err error) {
	if err := checkIDs(tenant, st.Device); err != nil {
		return fmt.Errorf("store: upserting state: %w", err)
	}
	if st.Tenant != "" && st.Tenant != tenant {
		return fmt.Errorf("store: upserting state of %s: %w: state names tenant %q, stored under %q",
			st.Device, ErrConflict, st.Tenant, tenant)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("store: upserting state of %s: %w", st.Device, err)
		}
	}()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()

	var (
		curTenant string
		curTime   sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, `SELECT tenant, state_time FROM devices WHERE id = ?`, st.Device).
		Scan(&curTenant, &curTime)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	case curTenant != tenant:
		return fmt.Errorf("%w: device registered under tenant %q, reported under %q", ErrConflict, curTenant, tenant)
	case curTime.Valid && micros(st.Time) < curTime.Int64:
		return nil // older than what we have: ignore
	}

	_, err = tx.ExecContext(ctx, `
INSERT INTO devices (id, tenant, model, hardware, version, slot, update_state, online,
	tuf_root, tuf_timestamp, tuf_snapshot, tuf_targets, state_time, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
	model = excluded.model,
	hardware = excluded.hardware,
	version = excluded.version,
	slot = excluded.slot,
	update_state = excluded.update_state,
	online = excluded.online,
	tuf_root = excluded.tuf_root,
	tuf_timestamp = excluded.tuf_timestamp,
	tuf_snapshot = excluded.tuf_snapshot,
	tuf_targets = excluded.tuf_targets,
	state_time = excluded.state_time,
	last_seen = max(devices.last_seen, excluded.last_seen)`,
		st.Device, tenant, st.Model, st.Hardware, st.Version, st.Slot, st.UpdateState, st.Online,
		st.TUF.Root, st.TUF.Timestamp, st.TUF.Snapshot, st.TUF.Targets,
		micros(st.Time), micros(received))
	if err != nil {
		return err
	}
	return tx.Commit()
}

// AddEvent implements Store.
func (s *SQLite) AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (inserted bool, err error) {
	if err := checkIDs(tenant, e.Device); err != nil {
		return false, fmt.Errorf("store: adding event: %w", err)
	}
	if e.ID == "" {
		return false, fmt.Errorf("store: adding event: %w: empty event id", wire.ErrInvalid)
	}
	if e.Seq > math.MaxInt64 {
		return false, fmt.Errorf("store: adding event %s: %w: seq %d out of range", e.ID, wire.ErrInvalid, e.Seq)
	}
	var fields sql.NullString
	if len(e.Fields) > 0 {
		b, err := json.Marshal(e.Fields)
		if err != nil {
			return false, fmt.Errorf("store: adding event %s: encoding fields: %w", e.ID, err)
		}
		fields = sql.NullString{String: string(b), Valid: true}
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("store: adding event %s of %s: %w", e.ID, e.Device, err)
		}
	}()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()

	cur, ok, err := deviceTenant(ctx, tx, e.Device)
	switch {
	case err != nil:
		return false, err
	case !ok:
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO devices (id, tenant, last_seen) VALUES (?, ?, ?)`,
			e.Device, tenant, micros(received)); err != nil {
			return false, err
		}
	case cur != tenant:
		return false, fmt.Errorf("%w: device registered under tenant %q, reported under %q", ErrConflict, cur, tenant)
	}

	res, err := tx.ExecContext(ctx, `
INSERT INTO events (device, id, tenant, schema, seq, time, type, version, message, fields, received)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device, id) DO NOTHING`,
		e.Device, e.ID, tenant, e.Schema, int64(e.Seq), micros(e.Time), e.Type, e.Version, e.Message,
		fields, micros(received))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	if n == 0 {
		return false, nil // duplicate: leave everything as it was
	}
	if _, err := tx.ExecContext(ctx,
		`UPDATE devices SET last_seen = max(last_seen, ?) WHERE id = ?`,
		micros(received), e.Device); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}

// ListDevices implements Store.
func (s *SQLite) ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error) {
	var (
		where []string
		args  []any
	)
	if f.Tenant != "" {
		where = append(where, "tenant = ?")
		args = append(args, f.Tenant)
	}
	if f.Model != "" {
		where = append(where, "model = ?")
		args = append(args, f.Model)
	}
	q := `SELECT id, tenant, model, hardware, version, slot, update_state, online,
	tuf_root, tuf_timestamp, tuf_snapshot, tuf_targets, last_seen FROM devices`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY tenant, id"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}

	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []Device{}
	for rows.Next() {
		var (
			d        Device
			lastSeen int64
		)
		if err := rows.Scan(&d.ID, &d.Tenant, &d.Model, &d.Hardware, &d.Version, &d.Slot, &d.UpdateState,
			&d.Online, &d.TUF.Root, &d.TUF.Timestamp, &d.TUF.Snapshot, &d.TUF.Targets, &lastSeen); err != nil {
			return nil, fmt.Errorf("store: listing devices: %w", err)
		}
		d.LastSeen = fromMicros(lastSeen)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	return out, nil
}

// Events implements Store.
func (s *SQLite) Events(ctx context.Context, device string, limit int) ([]StoredEvent, error) {
	const cols = `tenant, device, id, schema, seq, time, type, version, message, fields, received`
	var (
		q    string
		args = []any{device}
	)
	if limit > 0 {
		q = `SELECT ` + cols + ` FROM (
	SELECT ` + cols + `, rowid AS rid FROM events WHERE device = ?
	ORDER BY seq DESC, received DESC, rowid DESC LIMIT ?
) ORDER BY seq, received, rid`
		args = append(args, limit)
	} else {
		q = `SELECT ` + cols + ` FROM events WHERE device = ? ORDER BY seq, received, rowid`
	}

	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: events of %s: %w", device, err)
	}
	defer func() { _ = rows.Close() }()
	out := []StoredEvent{}
	for rows.Next() {
		var (
			se             StoredEvent
			seq            int64
			tm, recv       int64
			fields         sql.NullString
			schema         int
			typ, ver, msg  string
			dev, id, tnant string
		)
		if err := rows.Scan(&tnant, &dev, &id, &schema, &seq, &tm, &typ, &ver, &msg, &fields, &recv); err != nil {
			return nil, fmt.Errorf("store: events of %s: %w", device, err)
		}
		se.Tenant = tnant
		se.Received = fromMicros(recv)
		se.Event = wire.Event{
			Schema: schema, ID: id, Device: dev, Seq: uint64(seq), Time: fromMicros(tm),
			Type: typ, Version: ver, Message: msg,
		}
		if fields.Valid {
			if err := json.Unmarshal([]byte(fields.String), &se.Event.Fields); err != nil {
				return nil, fmt.Errorf("store: events of %s: decoding fields of %s: %w", device, id, err)
			}
		}
		out = append(out, se)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: events of %s: %w", device, err)
	}
	if len(out) == 0 {
		var one int
		err := s.r.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE id = ?`, device).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("store: events of %s: %w", device, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("store: events of %s: %w", device, err)
		}
	}
	return out, nil
}
