package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SetSIPCredential implements SIPCredentials.
func (s *Postgres) SetSIPCredential(ctx context.Context, tenant, device string, ciphertext []byte, at time.Time) error {
	if err := checkSIPCredential(tenant, device, ciphertext); err != nil {
		return err
	}
	// One statement: the row is written only when the device exists in
	// tenant; when nothing is written, the device says why.
	tag, err := s.pool.Exec(ctx, `INSERT INTO sip_credentials (device, tenant, ciphertext, updated)
SELECT id, tenant, $3, $4 FROM devices WHERE id = $1 AND tenant = $2
ON CONFLICT (device) DO UPDATE SET tenant = excluded.tenant, ciphertext = excluded.ciphertext, updated = excluded.updated`,
		device, tenant, ciphertext, at)
	if err != nil {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var have string
	err = s.pool.QueryRow(ctx, `SELECT tenant FROM devices WHERE id = $1`, device).Scan(&have)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, err)
	}
	return fmt.Errorf("store: setting the SIP credential of %s: %w: the device is in another tenant", device, ErrConflict)
}

// SIPCredential implements SIPCredentials.
func (s *Postgres) SIPCredential(ctx context.Context, device string) ([]byte, string, time.Time, error) {
	var (
		ct      []byte
		tenant  string
		updated time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT ciphertext, tenant, updated FROM sip_credentials WHERE device = $1`, device).Scan(&ct, &tenant, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", time.Time{}, ErrNotFound
	}
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("store: reading the SIP credential of %s: %w", device, err)
	}
	return ct, tenant, updated.UTC(), nil
}

// DeleteSIPCredential implements SIPCredentials.
func (s *Postgres) DeleteSIPCredential(ctx context.Context, device string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM sip_credentials WHERE device = $1`, device)
	if err != nil {
		return fmt.Errorf("store: deleting the SIP credential of %s: %w", device, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
