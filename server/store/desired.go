package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/jackc/pgx/v5"
)

func checkDesired(device, version string) error {
	if device == "" {
		return fmt.Errorf("%w: empty device", wire.ErrInvalid)
	}
	if len(version) > 64 {
		return fmt.Errorf("%w: desired version too long", wire.ErrInvalid)
	}
	return checkText(device, version)
}

// SetDesired records the version a rollout wants device to run ("" for
// none) and returns it with the device's tenant. An unknown device is
// ErrNotFound. A change older than the recorded one is ignored and the
// recorded one returned.
func (s *SQLite) SetDesired(ctx context.Context, device, version string, at time.Time) (Desired, error) {
	if err := checkDesired(device, version); err != nil {
		return Desired{}, fmt.Errorf("store: setting desired version of %q: %w", device, err)
	}
	var d Desired
	var us int64
	err := s.w.QueryRowContext(ctx, `
UPDATE devices SET desired_version = CASE WHEN desired_time IS NULL OR desired_time <= ?2 THEN ?1 ELSE desired_version END,
                   desired_time    = CASE WHEN desired_time IS NULL OR desired_time <= ?2 THEN ?2 ELSE desired_time END
WHERE id = ?3
RETURNING tenant, id, desired_version, desired_time`, version, micros(at), device).Scan(&d.Tenant, &d.Device, &d.Version, &us)
	if errors.Is(err, sql.ErrNoRows) {
		return Desired{}, fmt.Errorf("store: setting desired version of %s: %w", device, ErrNotFound)
	}
	if err != nil {
		return Desired{}, fmt.Errorf("store: setting desired version of %s: %w", device, err)
	}
	d.Time = fromMicros(us)
	return d, nil
}

// DesiredVersions lists every device whose desired version was ever set
// (withdrawn ones too, with Version ""), by tenant and ID.
func (s *SQLite) DesiredVersions(ctx context.Context) ([]Desired, error) {
	rows, err := s.r.QueryContext(ctx, `
SELECT tenant, id, desired_version, desired_time FROM devices
WHERE desired_time IS NOT NULL ORDER BY tenant, id`)
	if err != nil {
		return nil, fmt.Errorf("store: listing desired versions: %w", err)
	}
	defer rows.Close()
	var out []Desired
	for rows.Next() {
		var d Desired
		var us int64
		if err := rows.Scan(&d.Tenant, &d.Device, &d.Version, &us); err != nil {
			return nil, fmt.Errorf("store: listing desired versions: %w", err)
		}
		d.Time = fromMicros(us)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing desired versions: %w", err)
	}
	return out, nil
}

// SetDesired: see SQLite.SetDesired.
func (s *Postgres) SetDesired(ctx context.Context, device, version string, at time.Time) (Desired, error) {
	if err := checkDesired(device, version); err != nil {
		return Desired{}, fmt.Errorf("store: setting desired version of %q: %w", device, err)
	}
	var d Desired
	err := s.pool.QueryRow(ctx, `
UPDATE devices SET desired_version = CASE WHEN desired_time IS NULL OR desired_time <= $2 THEN $1 ELSE desired_version END,
                   desired_time    = CASE WHEN desired_time IS NULL OR desired_time <= $2 THEN $2 ELSE desired_time END
WHERE id = $3
RETURNING tenant, id, desired_version, desired_time`, version, at.UTC().Truncate(time.Microsecond), device).Scan(&d.Tenant, &d.Device, &d.Version, &d.Time)
	if errors.Is(err, pgx.ErrNoRows) {
		return Desired{}, fmt.Errorf("store: setting desired version of %s: %w", device, ErrNotFound)
	}
	if err != nil {
		return Desired{}, fmt.Errorf("store: setting desired version of %s: %w", device, err)
	}
	d.Time = d.Time.UTC()
	return d, nil
}

// DesiredVersions: see SQLite.DesiredVersions.
func (s *Postgres) DesiredVersions(ctx context.Context) ([]Desired, error) {
	rows, err := s.pool.Query(ctx, `
SELECT tenant, id, desired_version, desired_time FROM devices
WHERE desired_time IS NOT NULL ORDER BY tenant, id`)
	if err != nil {
		return nil, fmt.Errorf("store: listing desired versions: %w", err)
	}
	defer rows.Close()
	var out []Desired
	for rows.Next() {
		var d Desired
		if err := rows.Scan(&d.Tenant, &d.Device, &d.Version, &d.Time); err != nil {
			return nil, fmt.Errorf("store: listing desired versions: %w", err)
		}
		d.Time = d.Time.UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing desired versions: %w", err)
	}
	return out, nil
}
