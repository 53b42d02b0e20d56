package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// CreateToken implements Tokens.
func (s *Postgres) CreateToken(ctx context.Context, t Token) error {
	if err := checkToken(t); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO api_tokens (id, hash, tenant, role, models, description, created, expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.ID, t.Hash, t.Tenant, t.Role, strings.Join(t.Models, ","), t.Description, t.Created, t.Expires)
	if err != nil {
		return fmt.Errorf("store: creating token: %w", err)
	}
	return nil
}

func scanPostgresToken(row pgx.Row) (Token, error) {
	var (
		t       Token
		models  string
		revoked *time.Time
	)
	if err := row.Scan(&t.ID, &t.Hash, &t.Tenant, &t.Role, &models, &t.Description, &t.Created, &t.Expires, &revoked); err != nil {
		return Token{}, err
	}
	if models != "" {
		t.Models = strings.Split(models, ",")
	}
	t.Created, t.Expires = t.Created.UTC(), t.Expires.UTC()
	if revoked != nil {
		t.Revoked = revoked.UTC()
	}
	return t, nil
}

// TokenByHash implements Tokens.
func (s *Postgres) TokenByHash(ctx context.Context, hash []byte) (Token, error) {
	t, err := scanPostgresToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: looking up token: %w", err)
	}
	return t, nil
}

// TokenByID implements Tokens.
func (s *Postgres) TokenByID(ctx context.Context, id string) (Token, error) {
	t, err := scanPostgresToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: looking up token: %w", err)
	}
	return t, nil
}

// ListTokens implements Tokens.
func (s *Postgres) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM api_tokens ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("store: listing tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		t, err := scanPostgresToken(rows)
		if err != nil {
			return nil, fmt.Errorf("store: listing tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing tokens: %w", err)
	}
	return out, nil
}

// RevokeToken implements Tokens.
func (s *Postgres) RevokeToken(ctx context.Context, id string, when time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE api_tokens SET revoked = $1 WHERE id = $2 AND revoked IS NULL`, when, id)
	if err != nil {
		return fmt.Errorf("store: revoking token: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store: revoking token %s: %w", id, ErrNotFound)
	}
	return nil
}
