package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token is an API token as stored: its hash, never the token.
type Token struct {
	ID   string
	Hash []byte // SHA-256 of the token
	// Tenant the token acts in with Role; "" for none (a CI publisher
	// token: publishing firmware is limited by models, not tenants).
	Tenant      string
	Role        string
	Models      []string // empty: every model
	Description string
	Created     time.Time
	Expires     time.Time
	Revoked     time.Time // zero while valid
}

// Tokens is what stores keep of API tokens.
type Tokens interface {
	CreateToken(ctx context.Context, t Token) error
	// TokenByHash finds a token by its hash; ErrNotFound when none.
	TokenByHash(ctx context.Context, hash []byte) (Token, error)
	// TokenByID finds a token by its ID; ErrNotFound when none.
	TokenByID(ctx context.Context, id string) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	// RevokeToken marks a token revoked at when; ErrNotFound when unknown.
	RevokeToken(ctx context.Context, id string, when time.Time) error
}

var (
	_ Tokens = (*SQLite)(nil)
	_ Tokens = (*Postgres)(nil)
)

func checkToken(t Token) error {
	if t.ID == "" || len(t.Hash) == 0 || t.Role == "" {
		return errors.New("store: creating token: id, hash and role are required")
	}
	for _, m := range t.Models {
		if m == "" || strings.Contains(m, ",") {
			return fmt.Errorf("store: creating token: bad model %q", m)
		}
	}
	if err := checkText(append([]string{t.ID, t.Tenant, t.Role, t.Description}, t.Models...)...); err != nil {
		return fmt.Errorf("store: creating token: %w", err)
	}
	return nil
}

// CreateToken implements Tokens.
func (s *SQLite) CreateToken(ctx context.Context, t Token) error {
	if err := checkToken(t); err != nil {
		return err
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO api_tokens (id, hash, tenant, role, models, description, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.Tenant, t.Role, strings.Join(t.Models, ","), t.Description, micros(t.Created), micros(t.Expires))
	if err != nil {
		return fmt.Errorf("store: creating token: %w", err)
	}
	return nil
}

func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var (
		t                Token
		models           string
		created, expires int64
		revoked          sql.NullInt64
	)
	if err := row.Scan(&t.ID, &t.Hash, &t.Tenant, &t.Role, &models, &t.Description, &created, &expires, &revoked); err != nil {
		return Token{}, err
	}
	if models != "" {
		t.Models = strings.Split(models, ",")
	}
	t.Created, t.Expires = fromMicros(created), fromMicros(expires)
	if revoked.Valid {
		t.Revoked = fromMicros(revoked.Int64)
	}
	return t, nil
}

const tokenCols = `id, hash, tenant, role, models, description, created, expires, revoked`

// TokenByHash implements Tokens.
func (s *SQLite) TokenByHash(ctx context.Context, hash []byte) (Token, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: looking up token: %w", err)
	}
	return t, nil
}

// TokenByID implements Tokens.
func (s *SQLite) TokenByID(ctx context.Context, id string) (Token, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: looking up token: %w", err)
	}
	return t, nil
}

// ListTokens implements Tokens.
func (s *SQLite) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenCols+` FROM api_tokens ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("store: listing tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: listing tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken implements Tokens.
func (s *SQLite) RevokeToken(ctx context.Context, id string, when time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE api_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL`, micros(when), id)
	if err != nil {
		return fmt.Errorf("store: revoking token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: revoking token %s: %w", id, ErrNotFound)
	}
	return nil
}
