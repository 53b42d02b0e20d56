package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/server/audit"
)

// AppendAudit implements Audit. The head row, locked FOR UPDATE until the
// commit, makes replicas append one at a time: each reads the head the
// previous one committed, so the chain never forks.
func (s *Postgres) AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	var out audit.Entry
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			seq  int64
			hash []byte
		)
		if err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&seq, &hash); err != nil {
			return fmt.Errorf("reading head: %w", err)
		}
		e, err := prepareAudit(e, headOf(uint64(seq), hash))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO audit_log (`+auditCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			int64(e.Seq), e.Time, e.Actor, e.ActorKind, e.Tenant, e.Action, e.Target, nullDoc(e.Before), nullDoc(e.After),
			e.Remote, e.Status, e.PrevHash, e.Hash); err != nil {
			return fmt.Errorf("entry %d: %w", e.Seq, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, int64(e.Seq), e.Hash); err != nil {
			return fmt.Errorf("entry %d: moving head: %w", e.Seq, err)
		}
		out = e
		return nil
	})
	if err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry: %w", err)
	}
	return out, nil
}

// ListAudit implements Audit.
func (s *Postgres) ListAudit(ctx context.Context, f AuditFilter) ([]audit.Entry, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, fmt.Errorf("store: listing audit log: %w", err)
	}
	if f.Tenants != nil && len(f.Tenants) == 0 {
		return []audit.Entry{}, nil
	}
	q := `SELECT ` + auditCols + ` FROM audit_log WHERE seq > $1`
	args := []any{int64(min(f.AfterSeq, 1<<63-1))}
	if f.Tenant != "" {
		args = append(args, f.Tenant)
		q += fmt.Sprintf(` AND tenant = $%d`, len(args))
	}
	if f.Tenants != nil {
		args = append(args, f.Tenants)
		q += fmt.Sprintf(` AND tenant = ANY($%d)`, len(args))
	}
	q += fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args)+1)
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing audit log: %w", err)
	}
	defer rows.Close()
	out := []audit.Entry{}
	for rows.Next() {
		var (
			e             audit.Entry
			seq           int64
			tm            time.Time
			before, after *string
		)
		if err := rows.Scan(&seq, &tm, &e.Actor, &e.ActorKind, &e.Tenant, &e.Action, &e.Target, &before, &after,
			&e.Remote, &e.Status, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("store: listing audit log: %w", err)
		}
		e.Seq, e.Time = uint64(seq), tm.UTC()
		if before != nil {
			e.Before = docFromDB(*before)
		}
		if after != nil {
			e.After = docFromDB(*after)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing audit log: %w", err)
	}
	return out, nil
}

// AuditHead implements Audit.
func (s *Postgres) AuditHead(ctx context.Context) (audit.Head, error) {
	var (
		seq  int64
		hash []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return audit.Head{}, errors.New("store: reading audit head: the head row is gone")
	}
	if err != nil {
		return audit.Head{}, fmt.Errorf("store: reading audit head: %w", err)
	}
	return headOf(uint64(seq), hash), nil
}
