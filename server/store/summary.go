package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The operator's single-device and fleet-wide views: Store.Device and
// Store.FleetSummary.

// SummaryFilter narrows and annotates FleetSummary. Zero fields do not
// filter.
type SummaryFilter struct {
	// Tenant keeps one tenant's devices.
	Tenant string
	// Tenants, when not nil, keeps the devices of these tenants only (the
	// tenants the caller may see); an empty, non-nil set keeps none.
	Tenants []string
	// TUFTimestampBelow, when positive, counts in SummaryRow.TUFBehind the
	// devices that DeviceFilter.TUFTimestampBelow of the same value keeps.
	TUFTimestampBelow int64
}

// SummaryRow is how many devices share a tenant, model, version, update
// state, attestation outcome and online flag: a line of a firmware
// compliance report.
type SummaryRow struct {
	Tenant      string `json:"tenant"`
	Model       string `json:"model"`
	Version     string `json:"version"`
	UpdateState string `json:"update_state"`
	Attestation string `json:"attestation"`
	Online      bool   `json:"online"`
	Devices     int64  `json:"devices"`
	// TUFBehind is how many of them trust a TUF timestamp older than
	// SummaryFilter.TUFTimestampBelow.
	TUFBehind int64 `json:"tuf_behind"`
}

const summaryGroup = `tenant, model, version, update_state, attestation, online`

// summaryQuery returns the GROUP BY query of f and its arguments.
func summaryQuery(f SummaryFilter, d dialect) (string, []any) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return d.placeholder(len(args))
	}
	behind := "0"
	if f.TUFTimestampBelow > 0 {
		behind = "CASE WHEN state_time IS NOT NULL AND tuf_timestamp < " + arg(f.TUFTimestampBelow) + " THEN 1 ELSE 0 END"
	}
	var q strings.Builder
	q.WriteString(`SELECT ` + summaryGroup + `, count(*), sum(` + behind + `) FROM devices`)
	var where []string
	if f.Tenant != "" {
		where = append(where, `tenant = `+arg(f.Tenant))
	}
	if f.Tenants != nil {
		where = append(where, tenantIn(f.Tenants, arg))
	}
	if len(where) > 0 {
		q.WriteString(` WHERE ` + strings.Join(where, ` AND `))
	}
	q.WriteString(` GROUP BY ` + summaryGroup + ` ORDER BY ` + summaryGroup)
	return q.String(), args
}

// Device implements Store.
func (s *SQLite) Device(ctx context.Context, id string) (Device, error) {
	var (
		d        Device
		lastSeen int64
		attested sql.NullInt64
		stated   sql.NullInt64
		desired  sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT `+deviceCols+`, state_time, desired_version, desired_time FROM devices WHERE id = ?`, id).
		Scan(&d.ID, &d.Tenant, &d.Model, &d.Hardware, &d.Version, &d.Slot, &d.UpdateState,
			&d.Online, &d.TUF.Root, &d.TUF.Timestamp, &d.TUF.Snapshot, &d.TUF.Targets, &lastSeen,
			&d.Attestation, &attested, &stated, &d.DesiredVersion, &desired)
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("store: device %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, fmt.Errorf("store: device %s: %w", id, err)
	}
	d.LastSeen = fromMicros(lastSeen)
	if attested.Valid {
		d.Attested = fromMicros(attested.Int64)
	}
	if stated.Valid {
		d.StateTime = fromMicros(stated.Int64)
	}
	if desired.Valid {
		d.DesiredTime = fromMicros(desired.Int64)
	}
	return d, nil
}

// FleetSummary implements Store.
func (s *SQLite) FleetSummary(ctx context.Context, f SummaryFilter) ([]SummaryRow, error) {
	q, args := summaryQuery(f, sqliteDialect)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: fleet summary: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []SummaryRow{}
	for rows.Next() {
		var r SummaryRow
		if err := rows.Scan(&r.Tenant, &r.Model, &r.Version, &r.UpdateState, &r.Attestation, &r.Online,
			&r.Devices, &r.TUFBehind); err != nil {
			return nil, fmt.Errorf("store: fleet summary: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: fleet summary: %w", err)
	}
	return out, nil
}

// Device implements Store.
func (s *Postgres) Device(ctx context.Context, id string) (Device, error) {
	var (
		d        Device
		attested *time.Time
		stated   *time.Time
		desired  *time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT `+deviceCols+`, state_time, desired_version, desired_time FROM devices WHERE id = $1`, id).
		Scan(&d.ID, &d.Tenant, &d.Model, &d.Hardware, &d.Version, &d.Slot, &d.UpdateState,
			&d.Online, &d.TUF.Root, &d.TUF.Timestamp, &d.TUF.Snapshot, &d.TUF.Targets, &d.LastSeen,
			&d.Attestation, &attested, &stated, &d.DesiredVersion, &desired)
	if errors.Is(err, pgx.ErrNoRows) {
		return Device{}, fmt.Errorf("store: device %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, fmt.Errorf("store: device %s: %w", id, err)
	}
	d.LastSeen = d.LastSeen.UTC()
	if attested != nil {
		d.Attested = attested.UTC()
	}
	if stated != nil {
		d.StateTime = stated.UTC()
	}
	if desired != nil {
		d.DesiredTime = desired.UTC()
	}
	return d, nil
}

// FleetSummary implements Store.
func (s *Postgres) FleetSummary(ctx context.Context, f SummaryFilter) ([]SummaryRow, error) {
	q, args := summaryQuery(f, postgresDialect)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: fleet summary: %w", err)
	}
	defer rows.Close()
	out := []SummaryRow{}
	for rows.Next() {
		var r SummaryRow
		if err := rows.Scan(&r.Tenant, &r.Model, &r.Version, &r.UpdateState, &r.Attestation, &r.Online,
			&r.Devices, &r.TUFBehind); err != nil {
			return nil, fmt.Errorf("store: fleet summary: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: fleet summary: %w", err)
	}
	return out, nil
}
