package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// SIPCredentials is what stores keep of devices' SIP passwords (issue 7,
// item 4): the ciphertext server/sipsecret made, never a password. The
// store does not know the key; it keeps each ciphertext with the tenant it
// was made for.
type SIPCredentials interface {
	// SetSIPCredential stores (or replaces) the device's ciphertext.
	// ErrNotFound for an unknown device, ErrConflict when the device is
	// not in tenant.
	SetSIPCredential(ctx context.Context, tenant, device string, ciphertext []byte, at time.Time) error
	// SIPCredential returns the device's ciphertext, the tenant it was
	// stored for and when; ErrNotFound when none is set.
	SIPCredential(ctx context.Context, device string) (ciphertext []byte, tenant string, updated time.Time, err error)
	// DeleteSIPCredential removes it; ErrNotFound when none is set.
	DeleteSIPCredential(ctx context.Context, device string) error
}

var (
	_ SIPCredentials = (*SQLite)(nil)
	_ SIPCredentials = (*Postgres)(nil)
)

// maxSIPCiphertext bounds a stored ciphertext: a 128-byte password with
// its version, nonce and tag is 157 bytes.
const maxSIPCiphertext = 1024

func checkSIPCredential(tenant, device string, ciphertext []byte) error {
	if err := checkIDs(tenant, device); err != nil {
		return fmt.Errorf("store: setting the SIP credential: %w", err)
	}
	if len(ciphertext) == 0 || len(ciphertext) > maxSIPCiphertext {
		return fmt.Errorf("store: setting the SIP credential of %s: %w: ciphertext of %d bytes", device, wire.ErrInvalid, len(ciphertext))
	}
	return nil
}

// SetSIPCredential implements SIPCredentials.
func (s *SQLite) SetSIPCredential(ctx context.Context, tenant, device string, ciphertext []byte, at time.Time) error {
	if err := checkSIPCredential(tenant, device, ciphertext); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, err)
	}
	defer tx.Rollback()
	var have string
	err = tx.QueryRowContext(ctx, `SELECT tenant FROM devices WHERE id = ?`, device).Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, err)
	}
	if have != tenant {
		return fmt.Errorf("store: setting the SIP credential of %s: %w: the device is in another tenant", device, ErrConflict)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sip_credentials (device, tenant, ciphertext, updated) VALUES (?, ?, ?, ?)
ON CONFLICT (device) DO UPDATE SET tenant = excluded.tenant, ciphertext = excluded.ciphertext, updated = excluded.updated`,
		device, tenant, ciphertext, micros(at)); err != nil {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: setting the SIP credential of %s: %w", device, err)
	}
	return nil
}

// SIPCredential implements SIPCredentials.
func (s *SQLite) SIPCredential(ctx context.Context, device string) ([]byte, string, time.Time, error) {
	var (
		ct      []byte
		tenant  string
		updated int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT ciphertext, tenant, updated FROM sip_credentials WHERE device = ?`, device).Scan(&ct, &tenant, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", time.Time{}, ErrNotFound
	}
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("store: reading the SIP credential of %s: %w", device, err)
	}
	return ct, tenant, fromMicros(updated), nil
}

// DeleteSIPCredential implements SIPCredentials.
func (s *SQLite) DeleteSIPCredential(ctx context.Context, device string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM sip_credentials WHERE device = ?`, device)
	if err != nil {
		return fmt.Errorf("store: deleting the SIP credential of %s: %w", device, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
