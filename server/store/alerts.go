package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Severities of an Alert.
const (
	AlertWarning  = "warning"
	AlertCritical = "critical"
)

// Bounds of what an Alert may carry; server/alert truncates to them.
const (
	MaxAlertID      = 128
	MaxAlertName    = 64 // Kind, Severity, Source
	MaxAlertText    = 256
	MaxAlertMessage = 1024
	MaxAlertFields  = 16
	MaxAlertValue   = 512 // one field value
)

// Alert is a security-relevant happening that operators must see: an ACL
// denial, a malformed report, repeated connection failures, an agent's own
// security event (server/alert raises them). Repeats of one alert within a
// short window are one Alert whose Count grows.
type Alert struct {
	// ID is unique; AddAlert is idempotent by it.
	ID string `json:"id"`
	// Time is the first occurrence, Last the latest (Time when zero).
	Time time.Time `json:"time"`
	Last time.Time `json:"last"`
	// Tenant is "" when unknown (a client refused before it named one);
	// Device "" when the alert is about no one device.
	Tenant   string            `json:"tenant,omitempty"`
	Device   string            `json:"device,omitempty"`
	Kind     string            `json:"kind"`
	Severity string            `json:"severity"` // AlertWarning or AlertCritical
	Source   string            `json:"source"`   // embedded-broker, mosquitto, ingest, agent
	Message  string            `json:"message"`
	Fields   map[string]string `json:"fields,omitempty"`
	// Count is how many occurrences the alert stands for; 0 means 1.
	Count int `json:"count"`
}

// AlertFilter narrows ListAlerts. Zero fields do not filter. Alerts come
// newest first (by Time, then ID descending).
type AlertFilter struct {
	// Exact matches.
	Tenant, Device, Kind string
	// Tenants, when not nil, keeps the alerts of these tenants only (the
	// tenants the caller may see); an empty, non-nil set keeps none.
	Tenants []string
	// Since keeps the alerts whose Time is at or after it.
	Since time.Time
	// Limit caps the number of alerts; zero or negative means all.
	Limit int
	// After continues a listing after the alert that Cursor named (keyset
	// pagination).
	After string
}

// Cursor returns the value of AlertFilter.After that continues a listing
// after a, the last alert of a page.
func (AlertFilter) Cursor(a Alert) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(micros(a.Time), 10) + ":" + a.ID))
}

func parseAlertCursor(s string) (us int64, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		t, rest, ok := strings.Cut(string(b), ":")
		if us, err = strconv.ParseInt(t, 10, 64); ok && err == nil && rest != "" {
			return us, rest, nil
		}
	}
	return 0, "", fmt.Errorf("%w: malformed alert cursor", ErrBadFilter)
}

// checkAlert validates a for storing and returns it normalised (Count at
// least 1, Last at least Time) with its fields as JSON, "" when none.
func checkAlert(a Alert) (Alert, string, error) {
	switch {
	case a.ID == "" || len(a.ID) > MaxAlertID:
		return a, "", fmt.Errorf("%w: alert id empty or longer than %d bytes", wire.ErrInvalid, MaxAlertID)
	case a.Kind == "" || a.Source == "" || len(a.Kind) > MaxAlertName || len(a.Source) > MaxAlertName:
		return a, "", fmt.Errorf("%w: alert %s: kind and source must be 1 to %d bytes", wire.ErrInvalid, a.ID, MaxAlertName)
	case a.Severity != AlertWarning && a.Severity != AlertCritical:
		return a, "", fmt.Errorf("%w: alert %s: severity %q", wire.ErrInvalid, a.ID, a.Severity)
	case len(a.Tenant) > MaxAlertText || len(a.Device) > MaxAlertText:
		return a, "", fmt.Errorf("%w: alert %s: tenant or device longer than %d bytes", wire.ErrInvalid, a.ID, MaxAlertText)
	case len(a.Message) > MaxAlertMessage:
		return a, "", fmt.Errorf("%w: alert %s: message longer than %d bytes", wire.ErrInvalid, a.ID, MaxAlertMessage)
	case len(a.Fields) > MaxAlertFields:
		return a, "", fmt.Errorf("%w: alert %s: more than %d fields", wire.ErrInvalid, a.ID, MaxAlertFields)
	case a.Time.IsZero():
		return a, "", fmt.Errorf("%w: alert %s: no time", wire.ErrInvalid, a.ID)
	case a.Count < 0:
		return a, "", fmt.Errorf("%w: alert %s: negative count", wire.ErrInvalid, a.ID)
	}
	if err := checkText(a.ID, a.Tenant, a.Device, a.Kind, a.Severity, a.Source, a.Message); err != nil {
		return a, "", fmt.Errorf("alert %q: %w", a.ID, err)
	}
	if a.Count == 0 {
		a.Count = 1
	}
	if micros(a.Last) < micros(a.Time) {
		a.Last = a.Time
	}
	if len(a.Fields) == 0 {
		return a, "", nil
	}
	for k, v := range a.Fields {
		if k == "" || len(k) > MaxAlertName || len(v) > MaxAlertValue {
			return a, "", fmt.Errorf("%w: alert %s: field %.64q empty or too long", wire.ErrInvalid, a.ID, k)
		}
		if err := checkText(k, v); err != nil {
			return a, "", fmt.Errorf("alert %s: fields: %w", a.ID, err)
		}
	}
	b, err := json.Marshal(a.Fields)
	if err != nil {
		return a, "", fmt.Errorf("alert %s: encoding fields: %w", a.ID, err)
	}
	return a, string(b), nil
}

// alertClauses returns the WHERE, ORDER BY and LIMIT clauses of f's listing,
// and their arguments.
func alertClauses(f AlertFilter, d dialect) (string, []any, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return d.placeholder(len(args))
	}
	for _, eq := range []struct{ col, v string }{{"tenant", f.Tenant}, {"device", f.Device}, {"kind", f.Kind}} {
		if eq.v != "" {
			where = append(where, eq.col+" = "+arg(eq.v))
		}
	}
	if f.Tenants != nil {
		where = append(where, tenantIn(f.Tenants, arg))
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= "+arg(d.time(f.Since)))
	}
	if f.After != "" {
		us, id, err := parseAlertCursor(f.After)
		if err != nil {
			return "", nil, err
		}
		where = append(where, "(time, id) < ("+arg(d.time(fromMicros(us)))+", "+arg(id)+")")
	}
	var q strings.Builder
	if len(where) > 0 {
		q.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	q.WriteString(" ORDER BY time DESC, id DESC")
	if f.Limit > 0 {
		q.WriteString(" LIMIT " + arg(f.Limit))
	}
	return q.String(), args, nil
}

const alertCols = `id, time, last, tenant, device, kind, severity, source, message, fields, count`

// AddAlert stores a new alert and returns true. It is idempotent by ID: for
// an ID already stored it returns false and adds no alert; the stored one
// keeps the larger Count and the later Last of the two, so that a caller
// collapsing repeats can store the running count again and again (see
// server/alert), and storing the same alert twice changes nothing.
func (s *SQLite) AddAlert(ctx context.Context, a Alert) (bool, error) {
	a, fields, err := checkAlert(a)
	if err != nil {
		return false, fmt.Errorf("store: adding alert: %w", err)
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return false, fmt.Errorf("store: adding alert %s: %w", a.ID, err)
	}
	defer tx.rollback()
	res, err := tx.exec(ctx, `INSERT INTO alerts (`+alertCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		a.ID, micros(a.Time), micros(a.Last), a.Tenant, a.Device, a.Kind, a.Severity, a.Source, a.Message,
		sql.NullString{String: fields, Valid: fields != ""}, a.Count)
	if err != nil {
		return false, fmt.Errorf("store: adding alert %s: %w", a.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: adding alert %s: %w", a.ID, err)
	}
	if n == 0 {
		if _, err := tx.exec(ctx, `UPDATE alerts SET count = max(count, ?), last = max(last, ?) WHERE id = ?`,
			a.Count, micros(a.Last), a.ID); err != nil {
			return false, fmt.Errorf("store: adding alert %s: %w", a.ID, err)
		}
	}
	if err := tx.tx.Commit(); err != nil {
		return false, fmt.Errorf("store: adding alert %s: %w", a.ID, err)
	}
	return n > 0, nil
}

// ListAlerts returns the alerts matching f, newest first.
func (s *SQLite) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	clauses, args, err := alertClauses(f, sqliteDialect)
	if err != nil {
		return nil, fmt.Errorf("store: listing alerts: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+alertCols+` FROM alerts`+clauses, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing alerts: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []Alert{}
	for rows.Next() {
		var (
			a          Alert
			first, lst int64
			fields     sql.NullString
		)
		if err := rows.Scan(&a.ID, &first, &lst, &a.Tenant, &a.Device, &a.Kind, &a.Severity, &a.Source, &a.Message,
			&fields, &a.Count); err != nil {
			return nil, fmt.Errorf("store: listing alerts: %w", err)
		}
		a.Time, a.Last = fromMicros(first), fromMicros(lst)
		if fields.Valid {
			if err := json.Unmarshal([]byte(fields.String), &a.Fields); err != nil {
				return nil, fmt.Errorf("store: listing alerts: decoding fields of %s: %w", a.ID, err)
			}
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing alerts: %w", err)
	}
	return out, nil
}

// AddAlert: see SQLite.AddAlert.
func (s *Postgres) AddAlert(ctx context.Context, a Alert) (bool, error) {
	a, fields, err := checkAlert(a)
	if err != nil {
		return false, fmt.Errorf("store: adding alert: %w", err)
	}
	var fs *string
	if fields != "" {
		fs = &fields
	}
	var inserted bool
	// xmax is 0 for a row this statement inserted, the updating
	// transaction's ID for one it updated.
	err = s.pool.QueryRow(ctx, `
INSERT INTO alerts (`+alertCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)
ON CONFLICT (id) DO UPDATE SET count = GREATEST(alerts.count, EXCLUDED.count), last = GREATEST(alerts.last, EXCLUDED.last)
RETURNING xmax = 0`,
		a.ID, a.Time.UTC().Truncate(time.Microsecond), a.Last.UTC().Truncate(time.Microsecond), a.Tenant, a.Device,
		a.Kind, a.Severity, a.Source, a.Message, fs, a.Count).Scan(&inserted)
	if err != nil {
		return false, fmt.Errorf("store: adding alert %s: %w", a.ID, err)
	}
	return inserted, nil
}

// ListAlerts: see SQLite.ListAlerts.
func (s *Postgres) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	clauses, args, err := alertClauses(f, postgresDialect)
	if err != nil {
		return nil, fmt.Errorf("store: listing alerts: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+alertCols+` FROM alerts`+clauses, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing alerts: %w", err)
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		var (
			a      Alert
			fields []byte
		)
		if err := rows.Scan(&a.ID, &a.Time, &a.Last, &a.Tenant, &a.Device, &a.Kind, &a.Severity, &a.Source, &a.Message,
			&fields, &a.Count); err != nil {
			return nil, fmt.Errorf("store: listing alerts: %w", err)
		}
		a.Time, a.Last = a.Time.UTC(), a.Last.UTC()
		if fields != nil {
			if err := json.Unmarshal(fields, &a.Fields); err != nil {
				return nil, fmt.Errorf("store: listing alerts: decoding fields of %s: %w", a.ID, err)
			}
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing alerts: %w", err)
	}
	return out, nil
}
