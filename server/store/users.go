package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// User is an operator as stored: a hash of the password, never the
// password.
type User struct {
	ID   string
	Name string // the login name; unique
	// PasswordHash is an argon2id PHC string carrying its own parameters.
	PasswordHash string
	// TOTPSecret is the base32 TOTP secret, "" until a second factor is
	// enrolled.
	TOTPSecret string
	// TOTPStep is the last TOTP time step accepted, so that a code is
	// accepted once only.
	TOTPStep int64
	// RecoveryCodes is how many unused recovery codes are left (read only:
	// SetTOTP writes them).
	RecoveryCodes int
	Platform      bool
	// Tenants maps each tenant the user belongs to to its role there.
	Tenants  map[string]string
	Disabled bool
	Created  time.Time
}

// Session is an operator's login session as stored: the hash of its bearer
// token, never the token.
type Session struct {
	ID     string
	Hash   []byte // SHA-256 of the bearer token
	UserID string
	// Method is how the user logged in: "password" (the default) or
	// "oidc".
	Method  string
	Created time.Time
	Expires time.Time
	Revoked time.Time // zero while valid
}

// Users is what stores keep of operators and their sessions. Methods that
// name a user by ID return ErrNotFound when there is none.
type Users interface {
	// CreateUser stores u with its memberships; ErrConflict when the ID or
	// the name is taken.
	CreateUser(ctx context.Context, u User) error
	UserByID(ctx context.Context, id string) (User, error)
	UserByName(ctx context.Context, name string) (User, error)
	// ListUsers returns every user, ordered by name.
	ListUsers(ctx context.Context) ([]User, error)
	SetPasswordHash(ctx context.Context, id, hash string) error
	SetDisabled(ctx context.Context, id string, disabled bool) error
	// SetMembership gives the user role in tenant, replacing any role
	// there.
	SetMembership(ctx context.Context, id, tenant, role string) error
	// RemoveMembership takes the user out of tenant; ErrNotFound when the
	// user is not in it.
	RemoveMembership(ctx context.Context, id, tenant string) error
	// SetTOTP replaces the user's TOTP secret and recovery code hashes and
	// resets the last accepted step. An empty secret removes the factor.
	SetTOTP(ctx context.Context, id, secret string, recoveryHashes [][]byte) error
	// AdvanceTOTPStep records step as the last accepted one if it is
	// later than the recorded one, atomically; ErrConflict if not (a
	// replayed code).
	AdvanceTOTPStep(ctx context.Context, id string, step int64) error
	// UseRecoveryCode removes the recovery code hash from the user,
	// atomically; ErrNotFound if it is not (or no longer) there.
	UseRecoveryCode(ctx context.Context, id string, hash []byte) error

	CreateSession(ctx context.Context, s Session) error
	// SessionByHash finds a session, valid or not, by its token's hash.
	SessionByHash(ctx context.Context, hash []byte) (Session, error)
	// RevokeSession marks the session with this hash revoked at when;
	// ErrNotFound when it is unknown or already revoked.
	RevokeSession(ctx context.Context, hash []byte, when time.Time) error
	// RevokeUserSessions revokes every valid session of the user.
	RevokeUserSessions(ctx context.Context, id string, when time.Time) error

	// LinkIdentity links a single sign-on account (the provider's issuer
	// and subject) to the user; ErrConflict when it is linked already.
	LinkIdentity(ctx context.Context, id, issuer, subject string) error
	// UnlinkIdentity removes a link; ErrNotFound when there is none.
	UnlinkIdentity(ctx context.Context, issuer, subject string) error
	// UserByIdentity returns the user a single sign-on account is linked
	// to; ErrNotFound when none.
	UserByIdentity(ctx context.Context, issuer, subject string) (User, error)
}

var (
	_ Users = (*SQLite)(nil)
	_ Users = (*Postgres)(nil)
)

func checkUser(u User) error {
	if u.ID == "" || u.Name == "" || u.PasswordHash == "" {
		return fmt.Errorf("store: creating user: %w: id, name and password hash are required", wire.ErrInvalid)
	}
	if err := checkText(u.ID, u.Name, u.PasswordHash, u.TOTPSecret); err != nil {
		return fmt.Errorf("store: creating user: %w", err)
	}
	for t, r := range u.Tenants {
		if err := checkMembership(t, r); err != nil {
			return fmt.Errorf("store: creating user: %w", err)
		}
	}
	return nil
}

func checkMembership(tenant, role string) error {
	if tenant == "" || role == "" {
		return fmt.Errorf("%w: empty tenant or role", wire.ErrInvalid)
	}
	return checkText(tenant, role)
}

func checkSession(s Session) error {
	if s.ID == "" || len(s.Hash) == 0 || s.UserID == "" {
		return fmt.Errorf("store: creating session: %w: id, hash and user are required", wire.ErrInvalid)
	}
	return checkText(s.ID, s.UserID, s.Method)
}

func sessionMethod(m string) string {
	if m == "" {
		return "password"
	}
	return m
}

func checkIdentity(issuer, subject string) error {
	if issuer == "" || subject == "" || len(issuer) > 1024 || len(subject) > 1024 {
		return fmt.Errorf("store: identity: %w: issuer and subject are required (at most 1024 bytes)", wire.ErrInvalid)
	}
	return checkText(issuer, subject)
}

// CreateUser implements Users.
func (s *SQLite) CreateUser(ctx context.Context, u User) error {
	if err := checkUser(u); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: creating user: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	// One writer connection: nobody inserts between this check and the
	// insert.
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE id = ? OR name = ?`, u.ID, u.Name).Scan(&n); err != nil {
		return fmt.Errorf("store: creating user: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("store: creating user %s: %w: the id or name is taken", u.Name, ErrConflict)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, name, password_hash, totp_secret, platform, disabled, created) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.Name, u.PasswordHash, u.TOTPSecret, u.Platform, u.Disabled, micros(u.Created)); err != nil {
		return fmt.Errorf("store: creating user: %w", err)
	}
	for t, r := range u.Tenants {
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_tenants (user_id, tenant, role) VALUES (?, ?, ?)`, u.ID, t, r); err != nil {
			return fmt.Errorf("store: creating user: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: creating user: %w", err)
	}
	return nil
}

const userCols = `id, name, password_hash, totp_secret, totp_step, platform, disabled, created,
	(SELECT count(*) FROM user_recovery_codes c WHERE c.user_id = users.id)`

func (s *SQLite) scanUser(ctx context.Context, row *sql.Row) (User, error) {
	var (
		u       User
		created int64
	)
	if err := row.Scan(&u.ID, &u.Name, &u.PasswordHash, &u.TOTPSecret, &u.TOTPStep, &u.Platform, &u.Disabled, &created, &u.RecoveryCodes); err != nil {
		return User{}, err
	}
	u.Created = fromMicros(created)
	rows, err := s.r.QueryContext(ctx, `SELECT tenant, role FROM user_tenants WHERE user_id = ?`, u.ID)
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

func (s *SQLite) userWhere(ctx context.Context, col, v string) (User, error) {
	u, err := s.scanUser(ctx, s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE `+col+` = ?`, v))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("store: user: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("store: looking up user: %w", err)
	}
	return u, nil
}

// UserByID implements Users.
func (s *SQLite) UserByID(ctx context.Context, id string) (User, error) {
	return s.userWhere(ctx, "id", id)
}

// UserByName implements Users.
func (s *SQLite) UserByName(ctx context.Context, name string) (User, error) {
	return s.userWhere(ctx, "name", name)
}

// ListUsers implements Users.
func (s *SQLite) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: listing users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	byID := map[string]int{}
	for rows.Next() {
		var (
			u       User
			created int64
		)
		if err := rows.Scan(&u.ID, &u.Name, &u.PasswordHash, &u.TOTPSecret, &u.TOTPStep, &u.Platform, &u.Disabled, &created, &u.RecoveryCodes); err != nil {
			return nil, fmt.Errorf("store: listing users: %w", err)
		}
		u.Created = fromMicros(created)
		u.Tenants = map[string]string{}
		byID[u.ID] = len(out)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing users: %w", err)
	}
	mrows, err := s.r.QueryContext(ctx, `SELECT user_id, tenant, role FROM user_tenants`)
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
	return out, mrows.Err()
}

// execOne runs a write that must touch a row; ErrNotFound when it touched
// none.
func (s *SQLite) execOne(ctx context.Context, what, q string, args ...any) error {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: %s: %w", what, ErrNotFound)
	}
	return nil
}

// SetPasswordHash implements Users.
func (s *SQLite) SetPasswordHash(ctx context.Context, id, hash string) error {
	if hash == "" || checkText(hash) != nil {
		return fmt.Errorf("store: setting password: %w: bad hash", wire.ErrInvalid)
	}
	return s.execOne(ctx, "setting password of "+id, `UPDATE users SET password_hash = ? WHERE id = ?`, hash, id)
}

// SetDisabled implements Users.
func (s *SQLite) SetDisabled(ctx context.Context, id string, disabled bool) error {
	return s.execOne(ctx, "disabling user "+id, `UPDATE users SET disabled = ? WHERE id = ?`, disabled, id)
}

// SetMembership implements Users.
func (s *SQLite) SetMembership(ctx context.Context, id, tenant, role string) error {
	if err := checkMembership(tenant, role); err != nil {
		return fmt.Errorf("store: setting membership: %w", err)
	}
	if _, err := s.UserByID(ctx, id); err != nil {
		return err
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO user_tenants (user_id, tenant, role) VALUES (?, ?, ?)
		ON CONFLICT (user_id, tenant) DO UPDATE SET role = excluded.role`, id, tenant, role)
	if err != nil {
		// The user went away in between: the foreign key refuses.
		return fmt.Errorf("store: setting membership: %w", err)
	}
	return nil
}

// RemoveMembership implements Users.
func (s *SQLite) RemoveMembership(ctx context.Context, id, tenant string) error {
	return s.execOne(ctx, "removing "+id+" from "+tenant, `DELETE FROM user_tenants WHERE user_id = ? AND tenant = ?`, id, tenant)
}

// SetTOTP implements Users.
func (s *SQLite) SetTOTP(ctx context.Context, id, secret string, recoveryHashes [][]byte) error {
	if err := checkText(secret); err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `UPDATE users SET totp_secret = ?, totp_step = 0 WHERE id = ?`, secret, id)
	if err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: setting totp of %s: %w", id, ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_recovery_codes WHERE user_id = ?`, id); err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	for _, h := range recoveryHashes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_recovery_codes (user_id, hash) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, h); err != nil {
			return fmt.Errorf("store: setting totp: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: setting totp: %w", err)
	}
	return nil
}

// AdvanceTOTPStep implements Users.
func (s *SQLite) AdvanceTOTPStep(ctx context.Context, id string, step int64) error {
	res, err := s.w.ExecContext(ctx, `UPDATE users SET totp_step = ? WHERE id = ? AND totp_step < ?`, step, id, step)
	if err != nil {
		return fmt.Errorf("store: recording totp step: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.UserByID(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("store: totp step %d of %s: %w: already used", step, id, ErrConflict)
	}
	return nil
}

// UseRecoveryCode implements Users.
func (s *SQLite) UseRecoveryCode(ctx context.Context, id string, hash []byte) error {
	return s.execOne(ctx, "using recovery code of "+id, `DELETE FROM user_recovery_codes WHERE user_id = ? AND hash = ?`, id, hash)
}

// CreateSession implements Users.
func (s *SQLite) CreateSession(ctx context.Context, se Session) error {
	if err := checkSession(se); err != nil {
		return err
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO sessions (id, hash, user_id, method, created, expires) VALUES (?, ?, ?, ?, ?, ?)`,
		se.ID, se.Hash, se.UserID, sessionMethod(se.Method), micros(se.Created), micros(se.Expires))
	if err != nil {
		return fmt.Errorf("store: creating session: %w", err)
	}
	return nil
}

// SessionByHash implements Users.
func (s *SQLite) SessionByHash(ctx context.Context, hash []byte) (Session, error) {
	var (
		se               Session
		created, expires int64
		revoked          sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT id, hash, user_id, method, created, expires, revoked FROM sessions WHERE hash = ?`, hash).
		Scan(&se.ID, &se.Hash, &se.UserID, &se.Method, &created, &expires, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("store: session: %w", ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("store: looking up session: %w", err)
	}
	se.Created, se.Expires = fromMicros(created), fromMicros(expires)
	if revoked.Valid {
		se.Revoked = fromMicros(revoked.Int64)
	}
	return se, nil
}

// RevokeSession implements Users.
func (s *SQLite) RevokeSession(ctx context.Context, hash []byte, when time.Time) error {
	return s.execOne(ctx, "revoking session", `UPDATE sessions SET revoked = ? WHERE hash = ? AND revoked IS NULL`, micros(when), hash)
}

// RevokeUserSessions implements Users.
func (s *SQLite) RevokeUserSessions(ctx context.Context, id string, when time.Time) error {
	if _, err := s.w.ExecContext(ctx, `UPDATE sessions SET revoked = ? WHERE user_id = ? AND revoked IS NULL`, micros(when), id); err != nil {
		return fmt.Errorf("store: revoking sessions of %s: %w", id, err)
	}
	return nil
}

// LinkIdentity implements Users.
func (s *SQLite) LinkIdentity(ctx context.Context, id, issuer, subject string) error {
	if err := checkIdentity(issuer, subject); err != nil {
		return err
	}
	if _, err := s.UserByID(ctx, id); err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO user_identities (issuer, subject, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, issuer, subject, id)
	if err != nil {
		return fmt.Errorf("store: linking identity: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: linking identity: %w: it is linked already", ErrConflict)
	}
	return nil
}

// UnlinkIdentity implements Users.
func (s *SQLite) UnlinkIdentity(ctx context.Context, issuer, subject string) error {
	return s.execOne(ctx, "unlinking identity", `DELETE FROM user_identities WHERE issuer = ? AND subject = ?`, issuer, subject)
}

// UserByIdentity implements Users.
func (s *SQLite) UserByIdentity(ctx context.Context, issuer, subject string) (User, error) {
	var id string
	err := s.r.QueryRowContext(ctx, `SELECT user_id FROM user_identities WHERE issuer = ? AND subject = ?`, issuer, subject).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("store: identity: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("store: looking up identity: %w", err)
	}
	return s.UserByID(ctx, id)
}
