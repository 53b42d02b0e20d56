package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateGrant implements Attestations.
func (s *Postgres) CreateGrant(ctx context.Context, g Grant) error {
	if err := checkGrant(g); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO enroll_grants (id, kind, hash, tenant, device, model, created, expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (kind, hash) DO NOTHING`,
		g.ID, g.Kind, g.Hash, g.Tenant, g.Device, g.Model, g.Created, g.Expires)
	if err != nil {
		return fmt.Errorf("store: creating grant: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: creating grant: %w: a %s grant for it exists", ErrConflict, g.Kind)
	}
	return nil
}

func scanPostgresGrant(row pgx.Row) (Grant, error) {
	var (
		g    Grant
		used *time.Time
	)
	if err := row.Scan(&g.ID, &g.Kind, &g.Hash, &g.Tenant, &g.Device, &g.Model, &g.Created, &g.Expires, &used, &g.UsedBy); err != nil {
		return Grant{}, err
	}
	g.Created, g.Expires = g.Created.UTC(), g.Expires.UTC()
	if used != nil {
		g.Used = used.UTC()
	}
	return g, nil
}

// GrantByHash implements Attestations.
func (s *Postgres) GrantByHash(ctx context.Context, kind string, hash []byte) (Grant, error) {
	g, err := scanPostgresGrant(s.pool.QueryRow(ctx, `SELECT `+grantCols+` FROM enroll_grants WHERE kind = $1 AND hash = $2`, kind, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return Grant{}, ErrNotFound
	}
	if err != nil {
		return Grant{}, fmt.Errorf("store: looking up grant: %w", err)
	}
	return g, nil
}

// ListGrants implements Attestations.
func (s *Postgres) ListGrants(ctx context.Context, tenants []string) ([]Grant, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+grantCols+` FROM enroll_grants ORDER BY created DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("store: listing grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		g, err := scanPostgresGrant(rows)
		if err != nil {
			return nil, fmt.Errorf("store: listing grants: %w", err)
		}
		if inTenants(g.Tenant, tenants) {
			out = append(out, g)
		}
	}
	return out, rows.Err()
}

// Enroll implements Attestations.
func (s *Postgres) Enroll(ctx context.Context, id Identity, at time.Time) error {
	if err := checkTPMIdentity(id); err != nil {
		return err
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `SELECT device, ek_hash FROM device_identities WHERE device = $1 OR ek_hash = $2 FOR UPDATE`, id.Device, id.EKHash)
	if err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	for rows.Next() {
		var dev string
		var ek []byte
		if err := rows.Scan(&dev, &ek); err != nil {
			rows.Close()
			return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
		}
		if dev != id.Device || string(ek) != string(id.EKHash) {
			rows.Close()
			return fmt.Errorf("store: enrolling %s: %w", id.Device, ErrIdentity)
		}
	}
	rows.Close()
	if id.Grant != "" {
		tag, err := tx.Exec(ctx, `UPDATE enroll_grants SET used = $1, used_by = $2 WHERE id = $3 AND used IS NULL AND expires > $1`, at, id.Device, id.Grant)
		if err != nil {
			return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("store: enrolling %s: %w", id.Device, ErrGrantUsed)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO devices (id, tenant, model, last_seen) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
		id.Device, id.Tenant, id.Model, at); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	var tenant string
	if err := tx.QueryRow(ctx, `SELECT tenant FROM devices WHERE id = $1`, id.Device).Scan(&tenant); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	if tenant != id.Tenant {
		return fmt.Errorf("store: enrolling %s: %w: the device is in another tenant", id.Device, ErrConflict)
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO device_identities (device, tenant, model, ek_hash, ek_public, ek_cert, ak_public, token_hash, method, grant_id, enrolled)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (device) DO UPDATE SET ak_public = excluded.ak_public, token_hash = excluded.token_hash, model = excluded.model, enrolled = excluded.enrolled`,
		id.Device, id.Tenant, id.Model, id.EKHash, id.EKPublic, nilIfEmpty(id.EKCert), id.AKPublic, id.TokenHash, id.Method, id.Grant, at); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	return nil
}

// Identity implements Attestations.
func (s *Postgres) Identity(ctx context.Context, device string) (Identity, error) {
	var id Identity
	err := s.pool.QueryRow(ctx, `SELECT device, tenant, model, ek_hash, ek_public, ek_cert, ak_public, token_hash, method, grant_id, enrolled FROM device_identities WHERE device = $1`, device).
		Scan(&id.Device, &id.Tenant, &id.Model, &id.EKHash, &id.EKPublic, &id.EKCert, &id.AKPublic, &id.TokenHash, &id.Method, &id.Grant, &id.Enrolled)
	if errors.Is(err, pgx.ErrNoRows) {
		return Identity{}, ErrNotFound
	}
	if err != nil {
		return Identity{}, fmt.Errorf("store: reading identity of %s: %w", device, err)
	}
	id.Enrolled = id.Enrolled.UTC()
	return id, nil
}

// AddAttestation implements Attestations.
func (s *Postgres) AddAttestation(ctx context.Context, a Attestation) error {
	if err := checkAttestation(a); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	defer tx.Rollback(ctx)
	if err := postgresAddAttestation(ctx, tx, a); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	return nil
}

func postgresAddAttestation(ctx context.Context, tx pgx.Tx, a Attestation) error {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1)`, a.Device).Scan(&ok); err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	if !ok {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, ErrNotFound)
	}
	if _, err := tx.Exec(ctx, `UPDATE devices SET attestation = $1, attestation_time = $2 WHERE id = $3 AND (attestation_time IS NULL OR attestation_time <= $2)`,
		a.Outcome, a.Time, a.Device); err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO attestations (device, time, outcome, reason, detail, booted, nonce, quote, signature, pcr, pcr_value, log)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		a.Device, a.Time, a.Outcome, a.Reason, a.Detail, a.Booted, nilIfEmpty(a.Nonce), nilIfEmpty(a.Quote), nilIfEmpty(a.Signature), a.PCR, nilIfEmpty(a.PCRValue), nilIfEmpty(a.Log)); err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	return nil
}

func scanPostgresAttestation(row pgx.Row) (Attestation, error) {
	var a Attestation
	if err := row.Scan(&a.ID, &a.Device, &a.Time, &a.Outcome, &a.Reason, &a.Detail, &a.Booted, &a.Nonce, &a.Quote, &a.Signature, &a.PCR, &a.PCRValue, &a.Log); err != nil {
		return Attestation{}, err
	}
	a.Time = a.Time.UTC()
	return a, nil
}

// Attestations implements Attestations.
func (s *Postgres) Attestations(ctx context.Context, device string, limit int) ([]Attestation, error) {
	q := `SELECT ` + attestationCols + ` FROM attestations WHERE device = $1 ORDER BY id DESC`
	args := []any{device}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing attestations of %s: %w", device, err)
	}
	defer rows.Close()
	out := []Attestation{}
	for rows.Next() {
		a, err := scanPostgresAttestation(rows)
		if err != nil {
			return nil, fmt.Errorf("store: listing attestations of %s: %w", device, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// LastEvidence implements Attestations.
func (s *Postgres) LastEvidence(ctx context.Context, device string) (Attestation, error) {
	a, err := scanPostgresAttestation(s.pool.QueryRow(ctx, `SELECT `+attestationCols+` FROM attestations WHERE device = $1 AND quote IS NOT NULL ORDER BY id DESC LIMIT 1`, device))
	if errors.Is(err, pgx.ErrNoRows) {
		return Attestation{}, ErrNotFound
	}
	if err != nil {
		return Attestation{}, fmt.Errorf("store: reading evidence of %s: %w", device, err)
	}
	return a, nil
}

// ExpireAttestations implements Attestations.
func (s *Postgres) ExpireAttestations(ctx context.Context, before, at time.Time) ([]string, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `SELECT id FROM devices WHERE attestation = 'trusted' AND attestation_time < $1 FOR UPDATE`, before)
	if err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	for _, id := range ids {
		if err := postgresAddAttestation(ctx, tx, Attestation{Device: id, Time: at, Outcome: "stale", Reason: staleReason}); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	return ids, nil
}
