package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgUniqueViolation is PostgreSQL's SQLSTATE for a unique constraint
// refusing a row.
const pgUniqueViolation = "23505"

// CreateUser implements Users.
func (s *Postgres) CreateUser(ctx context.Context, u User) error {
	if err := checkUser(u); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, name, password_hash, totp_secret, platform, disabled, created) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			u.ID, u.Name, u.PasswordHash, u.TOTPSecret, u.Platform, u.Disabled, u.Created); err != nil {
			return err
		}
		for t, r := range u.Tenants {
			if _, err := tx.Exec(ctx, `INSERT INTO user_tenants (user_id, tenant, role) VALUES ($1, $2, $3)`, u.ID, t, r); err != nil {
				return err
			}
		}
		return nil
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == pgUniqueViolation {
		return fmt.Errorf("store: creating user %s: %w: the id or name is taken", u.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("store: creating user: %w", err)
	}
	return nil
}

func (s *Postgres) scanUser(ctx context.Context, row pgx.Row) (User, error) {
	var u User
	if err := row.Scan(&u.ID, &u.Name, &u.PasswordHash, &u.TOTPSecret, &u.TOTPStep, &u.Platform, &u.Disabled, &u.Created, &u.RecoveryCodes); err != nil {
		return User{}, err
	}
	u.Created = u.Created.UTC()
	rows, err := s.pool.Query(ctx, `SELECT tenant, role FROM user_tenants WHERE user_id = $1`, u.ID)
	if err != nil {
		return User{}, err
	}
	defer rows.Close()
	u.Tenants = map[string]string{}
	for rows.Next() {
		var t, r string
		if err := rows.Scan(&t, &r); err != nil {
			return User{}, err
		}
		u.Tenants[t] = r
	}
	return u, rows.Err()
}

func (s *Postgres) userWhere(ctx context.Context, col, v string) (User, error) {
	u, err := s.scanUser(ctx, s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE `+col+` = $1`, v))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, fmt.Errorf("store: user: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("store: looking up user: %w", err)
	}
	return u, nil
}

// UserByID implements Users.
func (s *Postgres) UserByID(ctx context.Context, id string) (User, error) {
	return s.userWhere(ctx, "id", id)
}

// UserByName implements Users.
func (s *Postgres) UserByName(ctx context.Context, name string) (User, error) {
	return s.userWhere(ctx, "name", name)
}

// ListUsers implements Users.
func (s *Postgres) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: listing users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	byID := map[string]int{}
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.ID, &u.Name, &u.PasswordHash, &u.TOTPSecret, &u.TOTPStep, &u.Platform, &u.Disabled, &u.Created, &u.RecoveryCodes); err != nil {
			return nil, fmt.Errorf("store: listing users: %w", err)
		}
		u.Created = u.Created.UTC()
		u.Tenants = map[string]string{}
		byID[u.ID] = len(out)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing users: %w", err)
	}
	mrows, err := s.pool.Query(ctx, `SELECT user_id, tenant, role FROM user_tenants`)
	if err != nil {
		return nil, fmt.Errorf("store: listing users: %w", err)
	}
	defer mrows.Close()
	for mrows.Next() {
		var id, t, r string
		if err := mrows.Scan(&id, &t, &r); err != nil {
			return nil, fmt.Errorf("store: listing users: %w", err)
		}
		if i, ok := byID[id]; ok {
			out[i].Tenants[t] = r
		}
	}
	if err := mrows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing users: %w", err)
	}
	return out, nil
}

// execOne runs a write that must touch a row; ErrNotFound when it touched
// none.
func (s *Postgres) execOne(ctx context.Context, what, q string, args ...any) error {
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: %s: %w", what, ErrNotFound)
	}
	return nil
}

// SetPasswordHash implements Users.
func (s *Postgres) SetPasswordHash(ctx context.Context, id, hash string) error {
	if hash == "" || checkText(hash) != nil {
		return fmt.Errorf("store: setting password: %w: bad hash", wire.ErrInvalid)
	}
	return s.execOne(ctx, "setting password of "+id, `UPDATE users SET password_hash = $1 WHERE id = $2`, hash, id)
}

// SetDisabled implements Users.
func (s *Postgres) SetDisabled(ctx context.Context, id string, disabled bool) error {
	return s.execOne(ctx, "disabling user "+id, `UPDATE users SET disabled = $1 WHERE id = $2`, disabled, id)
}

// SetMembership implements Users.
func (s *Postgres) SetMembership(ctx context.Context, id, tenant, role string) error {
	if err := checkMembership(tenant, role); err != nil {
		return fmt.Errorf("store: setting membership: %w", err)
	}
	if _, err := s.UserByID(ctx, id); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO user_tenants (user_id, tenant, role) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, tenant) DO UPDATE SET role = excluded.role`, id, tenant, role)
	if err != nil {
		return fmt.Errorf("store: setting membership: %w", err)
	}
	return nil
}

// RemoveMembership implements Users.
func (s *Postgres) RemoveMembership(ctx context.Context, id, tenant string) error {
	return s.execOne(ctx, "removing "+id+" from "+tenant, `DELETE FROM user_tenants WHERE user_id = $1 AND tenant = $2`, id, tenant)
}

// SetTOTP implements Users.
func (s *Postgres) SetTOTP(ctx context.Context, id, secret string, recoveryHashes [][]byte) error {
	if err := checkText(secret); err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE users SET totp_secret = $1, totp_step = 0 WHERE id = $2`, secret, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("user %s: %w", id, ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM user_recovery_codes WHERE user_id = $1`, id); err != nil {
			return err
		}
		for _, h := range recoveryHashes {
			if _, err := tx.Exec(ctx, `INSERT INTO user_recovery_codes (user_id, hash) VALUES ($1, $2) ON CONFLICT DO NOTHING`, id, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	return nil
}

// AdvanceTOTPStep implements Users.
func (s *Postgres) AdvanceTOTPStep(ctx context.Context, id string, step int64) error {
	tag, err := s.pool.Exec(ctx, `UPDATE users SET totp_step = $1 WHERE id = $2 AND totp_step < $1`, step, id)
	if err != nil {
		return fmt.Errorf("store: recording totp step: %w", err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.UserByID(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("store: totp step %d of %s: %w: already used", step, id, ErrConflict)
	}
	return nil
}

// UseRecoveryCode implements Users.
func (s *Postgres) UseRecoveryCode(ctx context.Context, id string, hash []byte) error {
	return s.execOne(ctx, "using recovery code of "+id, `DELETE FROM user_recovery_codes WHERE user_id = $1 AND hash = $2`, id, hash)
}

// CreateSession implements Users.
func (s *Postgres) CreateSession(ctx context.Context, se Session) error {
	if err := checkSession(se); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO sessions (id, hash, user_id, method, created, expires) VALUES ($1, $2, $3, $4, $5, $6)`,
		se.ID, se.Hash, se.UserID, sessionMethod(se.Method), se.Created, se.Expires)
	if err != nil {
		return fmt.Errorf("store: creating session: %w", err)
	}
	return nil
}

// SessionByHash implements Users.
func (s *Postgres) SessionByHash(ctx context.Context, hash []byte) (Session, error) {
	var (
		se      Session
		revoked *time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT id, hash, user_id, method, created, expires, revoked FROM sessions WHERE hash = $1`, hash).
		Scan(&se.ID, &se.Hash, &se.UserID, &se.Method, &se.Created, &se.Expires, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, fmt.Errorf("store: session: %w", ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("store: looking up session: %w", err)
	}
	se.Created, se.Expires = se.Created.UTC(), se.Expires.UTC()
	if revoked != nil {
		se.Revoked = revoked.UTC()
	}
	return se, nil
}

// RevokeSession implements Users.
func (s *Postgres) RevokeSession(ctx context.Context, hash []byte, when time.Time) error {
	return s.execOne(ctx, "revoking session", `UPDATE sessions SET revoked = $1 WHERE hash = $2 AND revoked IS NULL`, when, hash)
}

// RevokeUserSessions implements Users.
func (s *Postgres) RevokeUserSessions(ctx context.Context, id string, when time.Time) error {
	if _, err := s.pool.Exec(ctx, `UPDATE sessions SET revoked = $1 WHERE user_id = $2 AND revoked IS NULL`, when, id); err != nil {
		return fmt.Errorf("store: revoking sessions of %s: %w", id, err)
	}
	return nil
}

// LinkIdentity implements Users.
func (s *Postgres) LinkIdentity(ctx context.Context, id, issuer, subject string) error {
	if err := checkIdentity(issuer, subject); err != nil {
		return err
	}
	if _, err := s.UserByID(ctx, id); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO user_identities (issuer, subject, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, issuer, subject, id)
	if err != nil {
		return fmt.Errorf("store: linking identity: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: linking identity: %w: it is linked already", ErrConflict)
	}
	return nil
}

// UnlinkIdentity implements Users.
func (s *Postgres) UnlinkIdentity(ctx context.Context, issuer, subject string) error {
	return s.execOne(ctx, "unlinking identity", `DELETE FROM user_identities WHERE issuer = $1 AND subject = $2`, issuer, subject)
}

// UserByIdentity implements Users.
func (s *Postgres) UserByIdentity(ctx context.Context, issuer, subject string) (User, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2`, issuer, subject).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, fmt.Errorf("store: identity: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("store: looking up identity: %w", err)
	}
	return s.UserByID(ctx, id)
}
