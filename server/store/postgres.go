package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// Postgres is the Store on a PostgreSQL database, for servers that run as
// several replicas. It is safe for concurrent use.
//
// Concurrent writers take the rows of the devices they touch in ID order
// (states, events, both alike), so two batches over the same devices queue
// instead of deadlocking.
type Postgres struct {
	pool *pgxpool.Pool
}

var (
	_ Store  = (*Postgres)(nil)
	_ Tokens = (*Postgres)(nil)
)

// PostgresOption configures OpenPostgres.
type PostgresOption func(*postgresOptions)

type postgresOptions struct {
	schema string
}

// WithSchema keeps the store's tables in schema, created if missing, instead
// of the first schema of the connection's search_path: several fleets (or
// tests) can then share one database. Without it a search_path in the DSN
// (postgres://…?search_path=fleet) is honoured; that schema must exist.
func WithSchema(schema string) PostgresOption {
	return func(o *postgresOptions) { o.schema = schema }
}

// OpenPostgres connects to the PostgreSQL database that dsn names (a URL or
// key=value string, as libpq takes them; pgxpool's pool_max_conns and the
// like are accepted too) and applies any pending migrations.
func OpenPostgres(ctx context.Context, dsn string, opts ...PostgresOption) (*Postgres, error) {
	var o postgresOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's error quotes the DSN with any password it can spot
		// masked.
		return nil, fmt.Errorf("store: opening postgres: %w", err)
	}
	where := cfg.ConnConfig.Host + "/" + cfg.ConnConfig.Database
	if o.schema != "" {
		if err := createSchema(ctx, cfg.ConnConfig, o.schema); err != nil {
			return nil, fmt.Errorf("store: opening postgres %s: %w", where, err)
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{o.schema}.Sanitize()
		where += " schema " + o.schema
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: opening postgres %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: opening postgres %s: %w", where, err)
	}
	if err := migratePostgres(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: migrating postgres %s: %w", where, err)
	}
	return &Postgres{pool: pool}, nil
}

// createSchema creates schema unless it exists. It looks first, so that a
// user without the right to create schemas can still use an existing one.
func createSchema(ctx context.Context, cfg *pgx.ConnConfig, schema string) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).
		Scan(&exists); err != nil {
		return fmt.Errorf("looking up schema %s: %w", schema, err)
	}
	if exists {
		return nil
	}
	// IF NOT EXISTS: another replica may be doing the same.
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("creating schema %s: %w", schema, err)
	}
	return nil
}

// migratePostgres applies the embedded migrations that the schema lacks,
// holding an advisory lock so that replicas starting together take turns.
func migratePostgres(ctx context.Context, pool *pgxpool.Pool) error {
	// Said plainly here, rather than after goose has retried creating its
	// table for seconds.
	var schema *string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	if schema == nil {
		return errors.New("no schema of the search_path exists (WithSchema creates one)")
	}
	fsys, err := fs.Sub(postgresMigrations, "migrations/postgres")
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(pool)
	defer func() { _ = db.Close() }() // leaves the pool open
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
		goose.WithSessionLocker(schemaLocker{}),
	)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// schemaLocker serialises migrations of one schema. Unlike goose's own
// Postgres locker it waits on the lock rather than polling it every five
// seconds, and its lock is per schema, so that stores in other schemas of the
// same database (tests, other fleets) do not wait on each other.
type schemaLocker struct{}

const schemaLockKey = `hashtextextended('dialtone-store-migrate:' || coalesce(current_schema(), ''), 0)`

func (schemaLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+schemaLockKey+`)`)
	return err
}

func (schemaLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(`+schemaLockKey+`)`)
	return err
}

// Close closes the connections.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

// inTx runs fn in a transaction, committed if fn returns nil.
func (s *Postgres) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }() // does nothing after Commit
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// UpsertState implements Store.
func (s *Postgres) UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error {
	if err := checkState(tenant, st); err != nil {
		return fmt.Errorf("store: upserting state: %w", err)
	}
	if err := s.upsertStates(ctx, tenant, []wire.State{st}, received); err != nil {
		return fmt.Errorf("store: upserting state of %s: %w", st.Device, err)
	}
	return nil
}

// UpsertStates implements Store.
func (s *Postgres) UpsertStates(ctx context.Context, tenant string, states []wire.State, received time.Time) error {
	for _, st := range states {
		if err := checkState(tenant, st); err != nil {
			return fmt.Errorf("store: upserting states: %w", err)
		}
	}
	if len(states) == 0 {
		return nil
	}
	if err := s.upsertStates(ctx, tenant, states, received); err != nil {
		return fmt.Errorf("store: upserting states: %w", err)
	}
	return nil
}

// upsertStatesSQL writes a batch of states in one statement. Its WHERE keeps
// a device of another tenant, and a newer stored state, as they are; the
// rows come in ID order, the order every writer locks devices in.
const upsertStatesSQL = `
INSERT INTO devices AS d (id, tenant, model, hardware, version, slot, update_state, online,
	tuf_root, tuf_timestamp, tuf_snapshot, tuf_targets, state_time, last_seen, conn_time)
SELECT u.id, $1::text, u.model, u.hardware, u.version, u.slot, u.update_state, u.online,
	u.tuf_root, u.tuf_timestamp, u.tuf_snapshot, u.tuf_targets, u.state_time, $2::timestamptz, u.conn_time
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::boolean[],
	$10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::timestamptz[], $15::timestamptz[])
	AS u(id, model, hardware, version, slot, update_state, online,
		tuf_root, tuf_timestamp, tuf_snapshot, tuf_targets, state_time, conn_time)
ORDER BY u.id
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
	last_seen = GREATEST(d.last_seen, excluded.last_seen)
WHERE d.tenant = excluded.tenant AND (d.state_time IS NULL OR d.state_time <= excluded.state_time)`

// willSQL applies last wills that upsertStatesSQL ignored as older than
// the stored state: a will is fixed when its connection is made, so it is
// always older than the states sent on that connection; it still means
// offline when it belongs to the stored state's connection or a newer one.
const willSQL = `
UPDATE devices AS d SET online = false
FROM unnest($1::text[], $2::timestamptz[]) AS w(id, conn)
WHERE d.id = w.id AND d.tenant = $3 AND d.online AND d.conn_time IS NOT NULL AND d.conn_time <= w.conn`

// conflictSQL finds a device of the batch registered under another tenant.
// It runs after the writes, when any device the batch names exists, and a
// device's tenant never changes, so what it finds is final.
const conflictSQL = `SELECT id, tenant FROM devices WHERE id = ANY($1::text[]) AND tenant <> $2 ORDER BY id LIMIT 1`

func (s *Postgres) upsertStates(ctx context.Context, tenant string, states []wire.State, received time.Time) error {
	var willIDs []string
	var willConns []time.Time
	for _, st := range states {
		if !st.Online && !st.Conn.IsZero() {
			willIDs, willConns = append(willIDs, st.Device), append(willConns, st.Conn)
		}
	}
	// One statement cannot update a row twice: keep each device's last word.
	states = latestStates(states)
	n := len(states)
	var (
		ids, models, hws, vers, slots, upds = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		online                              = make([]bool, n)
		root, ts, snap, targets             = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		times                               = make([]time.Time, n)
		conns                               = make([]*time.Time, n)
	)
	for i, st := range states {
		ids[i], models[i], hws[i], vers[i], slots[i], upds[i] = st.Device, st.Model, st.Hardware, st.Version, st.Slot, st.UpdateState
		online[i] = st.Online
		root[i], ts[i], snap[i], targets[i] = st.TUF.Root, st.TUF.Timestamp, st.TUF.Snapshot, st.TUF.Targets
		times[i] = st.Time
		if !st.Conn.IsZero() {
			conns[i] = &st.Conn
		}
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(upsertStatesSQL, tenant, received, ids, models, hws, vers, slots, upds, online, root, ts, snap, targets, times, conns)
		if len(willIDs) > 0 {
			b.Queue(willSQL, willIDs, willConns, tenant)
		}
		b.Queue(conflictSQL, ids, tenant)
		br := tx.SendBatch(ctx, b)
		defer func() { _ = br.Close() }()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if len(willIDs) > 0 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		if err := conflict(br.QueryRow(), tenant); err != nil {
			return err
		}
		return br.Close()
	})
}

// conflict reads conflictSQL's answer.
func conflict(row pgx.Row, tenant string) error {
	var dev, cur string
	err := row.Scan(&dev, &cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: device %s registered under tenant %q, reported under %q", ErrConflict, dev, cur, tenant)
}

// AddEvent implements Store.
func (s *Postgres) AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (bool, error) {
	fields, err := checkEvent(tenant, e)
	if err != nil {
		return false, fmt.Errorf("store: adding event: %w", err)
	}
	n, err := s.addEvents(ctx, tenant, []wire.Event{e}, []string{fields}, received)
	if err != nil {
		return false, fmt.Errorf("store: adding event %s of %s: %w", e.ID, e.Device, err)
	}
	return n == 1, nil
}

// AddEvents implements Store.
func (s *Postgres) AddEvents(ctx context.Context, tenant string, events []wire.Event, received time.Time) (int, error) {
	fields := make([]string, len(events))
	for i, e := range events {
		var err error
		if fields[i], err = checkEvent(tenant, e); err != nil {
			return 0, fmt.Errorf("store: adding events: %w", err)
		}
	}
	if len(events) == 0 {
		return 0, nil
	}
	n, err := s.addEvents(ctx, tenant, events, fields, received)
	if err != nil {
		return 0, fmt.Errorf("store: adding events: %w", err)
	}
	return n, nil
}

// The three statements of a batch of events. The first creates the devices
// that are new, the second locks them all in ID order and reports one of
// another tenant, the third inserts the events in batch order (so that the
// identity column n keeps it), skipping duplicates, and raises LastSeen of
// the devices that got a new one. Its guard makes it do nothing when the
// batch conflicts, which the caller then rolls back.
const (
	addDevicesSQL = `
INSERT INTO devices (id, tenant, last_seen)
SELECT d, $2::text, $3::timestamptz FROM unnest($1::text[]) AS d ORDER BY d
ON CONFLICT (id) DO NOTHING`

	lockDevicesSQL = `
SELECT id, tenant FROM devices WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE`

	addEventsSQL = `
WITH ins AS (
	INSERT INTO events (device, id, tenant, schema, seq, time, type, version, message, fields, received)
	SELECT u.device, u.id, $1::text, u.schema, u.seq, u.time, u.type, u.version, u.message, u.fields::jsonb, $2::timestamptz
	FROM unnest($3::text[], $4::text[], $5::integer[], $6::bigint[], $7::timestamptz[],
		$8::text[], $9::text[], $10::text[], $11::text[])
		WITH ORDINALITY AS u(device, id, schema, seq, time, type, version, message, fields, ord)
	WHERE NOT EXISTS (SELECT 1 FROM devices WHERE id = ANY($12::text[]) AND tenant <> $1::text)
	ORDER BY u.ord
	ON CONFLICT (device, id) DO NOTHING
	RETURNING device
), seen AS (
	UPDATE devices SET last_seen = GREATEST(last_seen, $2::timestamptz)
	WHERE id IN (SELECT device FROM ins)
)
SELECT count(*) FROM ins`
)

func (s *Postgres) addEvents(ctx context.Context, tenant string, events []wire.Event, fields []string, received time.Time) (int, error) {
	n := len(events)
	var (
		devs, ids, types, vers, msgs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		schemas                      = make([]int32, n)
		seqs                         = make([]int64, n)
		times                        = make([]time.Time, n)
		fs                           = make([]*string, n)
	)
	for i, e := range events {
		devs[i], ids[i], types[i], vers[i], msgs[i] = e.Device, e.ID, e.Type, e.Version, e.Message
		schemas[i] = int32(e.Schema) // checkEvent bounds it
		seqs[i] = int64(e.Seq)       // checkEvent bounds it
		times[i] = e.Time
		if fields[i] != "" {
			fs[i] = &fields[i]
		}
	}
	devices := slices.Clone(devs)
	slices.Sort(devices) // byte order: COLLATE "C", the order of the locks
	devices = slices.Compact(devices)

	var inserted int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(addDevicesSQL, devices, tenant, received)
		b.Queue(lockDevicesSQL, devices)
		b.Queue(addEventsSQL, tenant, received, devs, ids, schemas, seqs, times, types, vers, msgs, fs, devices)
		br := tx.SendBatch(ctx, b)
		defer func() { _ = br.Close() }()
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var bad, badTenant string
		for rows.Next() {
			var id, t string
			if err := rows.Scan(&id, &t); err != nil {
				return err
			}
			if t != tenant && bad == "" {
				bad, badTenant = id, t
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&inserted); err != nil {
			return err
		}
		if bad != "" {
			return fmt.Errorf("%w: device %s registered under tenant %q, reported under %q", ErrConflict, bad, badTenant, tenant)
		}
		return br.Close()
	})
	if err != nil {
		return 0, err
	}
	return inserted, nil
}

// SetAttestation implements Store.
func (s *Postgres) SetAttestation(ctx context.Context, device, state string, at time.Time) error {
	if device == "" {
		return fmt.Errorf("store: setting attestation: %w: empty device", wire.ErrInvalid)
	}
	if err := checkText(device, state); err != nil {
		return fmt.Errorf("store: setting attestation of %q: %w", device, err)
	}
	tag, err := s.pool.Exec(ctx, `
UPDATE devices SET attestation = $1, attestation_time = $2
WHERE id = $3 AND (attestation_time IS NULL OR attestation_time <= $2)`,
		state, at, device)
	if err != nil {
		return fmt.Errorf("store: setting attestation of %s: %w", device, err)
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	// Nothing changed: an older outcome, or no such device.
	return s.exists(ctx, "store: setting attestation of "+device, device)
}

// exists returns nil if device exists and an ErrNotFound wrapped in what
// otherwise.
func (s *Postgres) exists(ctx context.Context, what, device string) error {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1)`, device).Scan(&ok); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

// ListDevices implements Store.
func (s *Postgres) ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error) {
	clauses, args, err := listClauses(f, postgresDialect)
	if err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+deviceCols+` FROM devices`+clauses, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	defer rows.Close()
	out := []Device{}
	for rows.Next() {
		var (
			d        Device
			attested *time.Time
		)
		if err := rows.Scan(&d.ID, &d.Tenant, &d.Model, &d.Hardware, &d.Version, &d.Slot, &d.UpdateState,
			&d.Online, &d.TUF.Root, &d.TUF.Timestamp, &d.TUF.Snapshot, &d.TUF.Targets, &d.LastSeen,
			&d.Attestation, &attested); err != nil {
			return nil, fmt.Errorf("store: listing devices: %w", err)
		}
		d.LastSeen = d.LastSeen.UTC()
		if attested != nil {
			d.Attested = attested.UTC()
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing devices: %w", err)
	}
	return out, nil
}

// Events implements Store.
func (s *Postgres) Events(ctx context.Context, device string, limit int) ([]StoredEvent, error) {
	const cols = `tenant, device, id, schema, seq, time, type, version, message, fields, received`
	var (
		q    string
		args = []any{device}
	)
	if limit > 0 {
		q = `SELECT ` + cols + ` FROM (
	SELECT ` + cols + `, n FROM events WHERE device = $1
	ORDER BY seq DESC, received DESC, n DESC LIMIT $2
) AS last ORDER BY seq, received, n`
		args = append(args, limit)
	} else {
		q = `SELECT ` + cols + ` FROM events WHERE device = $1 ORDER BY seq, received, n`
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: events of %s: %w", device, err)
	}
	defer rows.Close()
	out := []StoredEvent{}
	for rows.Next() {
		var (
			se     StoredEvent
			e      = &se.Event
			schema int32
			seq    int64
			fields []byte
		)
		if err := rows.Scan(&se.Tenant, &e.Device, &e.ID, &schema, &seq, &e.Time, &e.Type, &e.Version, &e.Message,
			&fields, &se.Received); err != nil {
			return nil, fmt.Errorf("store: events of %s: %w", device, err)
		}
		e.Schema, e.Seq = int(schema), uint64(seq)
		e.Time, se.Received = e.Time.UTC(), se.Received.UTC()
		if fields != nil {
			if err := json.Unmarshal(fields, &e.Fields); err != nil {
				return nil, fmt.Errorf("store: events of %s: decoding fields of %s: %w", device, e.ID, err)
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
func (s *Postgres) CountEvents(ctx context.Context, device string) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE device = $1`, device).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: counting events of %s: %w", device, err)
	}
	if n == 0 {
		if err := s.exists(ctx, "store: counting events of "+device, device); err != nil {
			return 0, err
		}
	}
	return n, nil
}
