package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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

// sqliteTx is a write transaction with its statements, prepared on first use
// so that a batch compiles each once.
type sqliteTx struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

func (s *SQLite) begin(ctx context.Context) (*sqliteTx, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &sqliteTx{tx: tx, stmts: map[string]*sql.Stmt{}}, nil
}

func (t *sqliteTx) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	st, err := t.tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	t.stmts[q] = st
	return st, nil
}

func (t *sqliteTx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (t *sqliteTx) queryRow(ctx context.Context, q string, args ...any) (*sql.Row, error) {
	st, err := t.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryRowContext(ctx, args...), nil
}

// rollback ends a transaction that was not committed; after Commit it does
// nothing.
func (t *sqliteTx) rollback() {
	_ = t.tx.Rollback() // closes the statements too
}

// tenant returns the tenant device is registered with, or "" and ok false if
// there is no such device.
func (t *sqliteTx) tenant(ctx context.Context, device string) (tenant string, ok bool, err error) {
	row, err := t.queryRow(ctx, `SELECT tenant FROM devices WHERE id = ?`, device)
	if err != nil {
		return "", false, err
	}
	err = row.Scan(&tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return tenant, true, nil
}

// UpsertState implements Store.
func (s *SQLite) UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error {
	if err := checkState(tenant, st); err != nil {
		return fmt.Errorf("store: upserting state: %w", err)
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("store: upserting state of %s: %w", st.Device, err)
	}
	defer tx.rollback()
	if err := tx.upsertState(ctx, tenant, st, received); err != nil {
		return fmt.Errorf("store: upserting state of %s: %w", st.Device, err)
	}
	if err := tx.tx.Commit(); err != nil {
		return fmt.Errorf("store: upserting state of %s: %w", st.Device, err)
	}
	return nil
}

// UpsertStates implements Store.
func (s *SQLite) UpsertStates(ctx context.Context, tenant string, states []wire.State, received time.Time) error {
	for _, st := range states {
		if err := checkState(tenant, st); err != nil {
			return fmt.Errorf("store: upserting states: %w", err)
		}
	}
	if len(states) == 0 {
		return nil
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("store: upserting states: %w", err)
	}
	defer tx.rollback()
	for _, st := range states {
		if err := tx.upsertState(ctx, tenant, st, received); err != nil {
			return fmt.Errorf("store: upserting states: state of %s: %w", st.Device, err)
		}
	}
	if err := tx.tx.Commit(); err != nil {
		return fmt.Errorf("store: upserting states: %w", err)
	}
	return nil
}

func (t *sqliteTx) upsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error {
	var (
		curTenant string
		curTime   sql.NullInt64
	)
	row, err := t.queryRow(ctx, `SELECT tenant, state_time FROM devices WHERE id = ?`, st.Device)
	if err != nil {
		return err
	}
	err = row.Scan(&curTenant, &curTime)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	case curTenant != tenant:
		return fmt.Errorf("%w: device registered under tenant %q, reported under %q", ErrConflict, curTenant, tenant)
	case curTime.Valid && micros(st.Time) < curTime.Int64:
		// Older than what we have: ignored, unless it is the last will
		// of the connection the stored state came from (or a newer one):
		// the will was fixed when connecting, so it is always older.
		if st.Online || st.Conn.IsZero() {
			return nil
		}
		_, err := t.exec(ctx, `UPDATE devices SET online = 0 WHERE id = ? AND online AND conn_time IS NOT NULL AND conn_time <= ?`,
			st.Device, micros(st.Conn))
		return err
	}

	_, err = t.exec(ctx, `
INSERT INTO devices (id, tenant, model, hardware, version, slot, update_state, online,
	tuf_root, tuf_timestamp, tuf_snapshot, tuf_targets, state_time, last_seen, conn_time)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
	conn_time = excluded.conn_time,
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
		micros(st.Time), micros(received), connMicros(st.Conn))
	return err
}

// connMicros is a state's Conn as stored: NULL when not reported.
func connMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(t), Valid: true}
}

// AddEvent implements Store.
func (s *SQLite) AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (inserted bool, err error) {
	fields, err := checkEvent(tenant, e)
	if err != nil {
		return false, fmt.Errorf("store: adding event: %w", err)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("store: adding event %s of %s: %w", e.ID, e.Device, err)
		}
	}()
	tx, err := s.begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.rollback()
	if err := tx.ensureDevice(ctx, tenant, e.Device, received); err != nil {
		return false, err
	}
	inserted, err = tx.addEvent(ctx, tenant, e, fields, received)
	if err != nil || !inserted {
		return false, err // a duplicate leaves everything as it was
	}
	if err := tx.raiseLastSeen(ctx, e.Device, received); err != nil {
		return false, err
	}
	if err := tx.tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}

// AddEvents implements Store.
func (s *SQLite) AddEvents(ctx context.Context, tenant string, events []wire.Event, received time.Time) (inserted int, err error) {
	fields := make([]string, len(events))
	for i, e := range events {
		if fields[i], err = checkEvent(tenant, e); err != nil {
			return 0, fmt.Errorf("store: adding events: %w", err)
		}
	}
	if len(events) == 0 {
		return 0, nil
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("store: adding events: %w", err)
		}
	}()
	tx, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.rollback()
	var devices []string       // distinct, in batch order
	fresh := map[string]bool{} // device → has a new event
	for _, e := range events {
		if _, ok := fresh[e.Device]; !ok {
			fresh[e.Device] = false
			devices = append(devices, e.Device)
		}
	}
	if err := tx.ensureDevices(ctx, tenant, devices, received); err != nil {
		return 0, err
	}
	for i, e := range events {
		ok, err := tx.addEvent(ctx, tenant, e, fields[i], received)
		if err != nil {
			return 0, fmt.Errorf("event %s of %s: %w", e.ID, e.Device, err)
		}
		if ok {
			inserted++
			fresh[e.Device] = true
		}
	}
	var raise []string
	for _, d := range devices {
		if fresh[d] {
			raise = append(raise, d)
		}
	}
	if err := tx.raiseLastSeenAll(ctx, raise, received); err != nil {
		return 0, err
	}
	if err := tx.tx.Commit(); err != nil {
		return 0, err
	}
	return inserted, nil
}

// ensureDevice creates device under tenant, seen at received, unless it
// exists; it is ErrConflict if it exists under another tenant.
func (t *sqliteTx) ensureDevice(ctx context.Context, tenant, device string, received time.Time) error {
	cur, ok, err := t.tenant(ctx, device)
	switch {
	case err != nil:
		return err
	case !ok:
		_, err := t.exec(ctx, `INSERT INTO devices (id, tenant, last_seen) VALUES (?, ?, ?)`,
			device, tenant, micros(received))
		return err
	case cur != tenant:
		return fmt.Errorf("%w: device registered under tenant %q, reported under %q", ErrConflict, cur, tenant)
	}
	return nil
}

// addEvent inserts e unless its device has it already.
func (t *sqliteTx) addEvent(ctx context.Context, tenant string, e wire.Event, fields string, received time.Time) (bool, error) {
	res, err := t.exec(ctx, `
INSERT INTO events (device, id, tenant, schema, seq, time, type, version, message, fields, received)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device, id) DO NOTHING`,
		e.Device, e.ID, tenant, e.Schema, int64(e.Seq), micros(e.Time), e.Type, e.Version, e.Message,
		sql.NullString{String: fields, Valid: fields != ""}, micros(received))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// sqliteChunk bounds the devices one IN (...) list names.
const sqliteChunk = 256

// ensureDevices is ensureDevice for many devices, with one query per
// sqliteChunk of them to find those that exist.
func (t *sqliteTx) ensureDevices(ctx context.Context, tenant string, devices []string, received time.Time) error {
	for len(devices) > 0 {
		chunk := devices[:min(len(devices), sqliteChunk)]
		devices = devices[len(chunk):]
		args := make([]any, len(chunk))
		for i, d := range chunk {
			args[i] = d
		}
		rows, err := t.tx.QueryContext(ctx, `SELECT id, tenant FROM devices WHERE id IN (?`+strings.Repeat(", ?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return err
		}
		known := make(map[string]string, len(chunk))
		for rows.Next() {
			var id, tn string
			if err := rows.Scan(&id, &tn); err != nil {
				rows.Close()
				return err
			}
			known[id] = tn
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, d := range chunk {
			tn, ok := known[d]
			switch {
			case !ok:
				if _, err := t.exec(ctx, `INSERT INTO devices (id, tenant, last_seen) VALUES (?, ?, ?)`, d, tenant, micros(received)); err != nil {
					return fmt.Errorf("device %s: %w", d, err)
				}
			case tn != tenant:
				return fmt.Errorf("device %s: %w: device registered under tenant %q, reported under %q", d, ErrConflict, tn, tenant)
			}
		}
	}
	return nil
}

// raiseLastSeenAll is raiseLastSeen for many devices, one statement per
// sqliteChunk of them.
func (t *sqliteTx) raiseLastSeenAll(ctx context.Context, devices []string, received time.Time) error {
	for len(devices) > 0 {
		chunk := devices[:min(len(devices), sqliteChunk)]
		devices = devices[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, micros(received))
		for _, d := range chunk {
			args = append(args, d)
		}
		if _, err := t.tx.ExecContext(ctx, `UPDATE devices SET last_seen = max(last_seen, ?) WHERE id IN (?`+strings.Repeat(", ?", len(chunk)-1)+`)`, args...); err != nil {
			return err
		}
	}
	return nil
}

func (t *sqliteTx) raiseLastSeen(ctx context.Context, device string, received time.Time) error {
	_, err := t.exec(ctx, `UPDATE devices SET last_seen = max(last_seen, ?) WHERE id = ?`, micros(received), device)
	return err
}

// SetAttestation implements Store.
func (s *SQLite) SetAttestation(ctx context.Context, device, state string, at time.Time) error {
	if device == "" {
		return fmt.Errorf("store: setting attestation: %w: empty device", wire.ErrInvalid)
	}
	if err := checkText(device, state); err != nil {
		return fmt.Errorf("store: setting attestation of %q: %w", device, err)
	}
	res, err := s.w.ExecContext(ctx, `
UPDATE devices SET attestation = ?, attestation_time = ?
WHERE id = ? AND (attestation_time IS NULL OR attestation_time <= ?)`,
		state, micros(at), device, micros(at))
	if err != nil {
		return fmt.Errorf("store: setting attestation of %s: %w", device, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: setting attestation of %s: %w", device, err)
	}
	if n > 0 {
		return nil
	}
	// Nothing changed: an older outcome, or no such device.
	return s.exists(ctx, "store: setting attestation of "+device, device)
}

// exists returns nil if device exists and an ErrNotFound wrapped in what
// otherwise.
func (s *SQLite) exists(ctx context.Context, what, device string) error {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE id = ?`, device).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

const deviceCols = `id, tenant, model, hardware, version, slot, update_state, online,
	tuf_root, tuf_timestamp, tuf_snapshot, tuf_targets, last_seen, attestation, attestation_time`

// ListDevices implements Store.
func (s *SQLite) ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error) {
	clauses, args, err := listClauses(f, sqliteDialect)
	if err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices`+clauses, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []Device{}
	for rows.Next() {
		var (
			d        Device
			lastSeen int64
			attested sql.NullInt64
		)
		if err := rows.Scan(&d.ID, &d.Tenant, &d.Model, &d.Hardware, &d.Version, &d.Slot, &d.UpdateState,
			&d.Online, &d.TUF.Root, &d.TUF.Timestamp, &d.TUF.Snapshot, &d.TUF.Targets, &lastSeen,
			&d.Attestation, &attested); err != nil {
			return nil, fmt.Errorf("store: listing devices: %w", err)
		}
		d.LastSeen = fromMicros(lastSeen)
		if attested.Valid {
			d.Attested = fromMicros(attested.Int64)
		}
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
		if err := s.exists(ctx, "store: events of "+device, device); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CountEvents implements Store.
func (s *SQLite) CountEvents(ctx context.Context, device string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM events WHERE device = ?`, device).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: counting events of %s: %w", device, err)
	}
	if n == 0 {
		if err := s.exists(ctx, "store: counting events of "+device, device); err != nil {
			return 0, err
		}
	}
	return n, nil
}
