package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
)

// AuditFilter selects a page of the audit log.
type AuditFilter struct {
	// AfterSeq lists entries after this one; 0 from the start.
	AfterSeq uint64
	// Limit bounds the page: 0 means DefaultAuditLimit, at most
	// MaxAuditLimit.
	Limit int
	// Tenant, when set, lists only the entries of this tenant.
	Tenant string
	// Tenants, when not nil, lists only the entries of these tenants (none
	// when empty): what a tenant admin may read.
	Tenants []string
}

// Paging and size limits of the audit log.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
	// MaxAuditDocBytes bounds an entry's Before and After each.
	MaxAuditDocBytes = 64 << 10
)

// Audit is what stores keep of the audit log (package audit). Appends are
// serial: each entry chains to the one appended before it, across every
// process that shares the database.
type Audit interface {
	// AppendAudit appends e after the current head, atomically: it sets
	// e's Seq, PrevHash and Hash (and Time when zero), puts Before and
	// After in canonical form, moves the head, and returns the entry as
	// stored.
	AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error)
	// ListAudit lists entries in Seq order.
	ListAudit(ctx context.Context, f AuditFilter) ([]audit.Entry, error)
	// AuditHead returns the anchored head: the last appended entry's Seq
	// and Hash ({0, Genesis} while the log is empty).
	AuditHead(ctx context.Context) (audit.Head, error)
}

var (
	_ Audit = (*SQLite)(nil)
	_ Audit = (*Postgres)(nil)
)

func (f AuditFilter) limit() (int, error) {
	switch {
	case f.Limit == 0:
		return DefaultAuditLimit, nil
	case f.Limit < 0 || f.Limit > MaxAuditLimit:
		return 0, fmt.Errorf("%w: audit limit %d: want 1 to %d", wire.ErrInvalid, f.Limit, MaxAuditLimit)
	}
	return f.Limit, nil
}

// prepareAudit checks e and readies it to follow head.
func prepareAudit(e audit.Entry, head audit.Head) (audit.Entry, error) {
	if e.Actor == "" || e.Action == "" {
		return audit.Entry{}, fmt.Errorf("%w: an audit entry needs an actor and an action", wire.ErrInvalid)
	}
	if err := checkText(e.Actor, e.ActorKind, e.Tenant, e.Action, e.Target, e.Remote); err != nil {
		return audit.Entry{}, err
	}
	if len(e.Before) > MaxAuditDocBytes || len(e.After) > MaxAuditDocBytes {
		return audit.Entry{}, fmt.Errorf("%w: audit before or after exceeds %d bytes", wire.ErrInvalid, MaxAuditDocBytes)
	}
	e, err := audit.Normalize(e, head, time.Now())
	if err != nil {
		return audit.Entry{}, fmt.Errorf("%w: %w", wire.ErrInvalid, err)
	}
	// Canonical JSON escapes nothing it need not: the documents are text
	// as the checks above see them.
	if err := checkText(string(e.Before), string(e.After)); err != nil {
		return audit.Entry{}, err
	}
	return e, nil
}

func headOf(seq uint64, hash []byte) audit.Head {
	if seq == 0 && len(hash) == 0 {
		hash = audit.Genesis
	}
	return audit.Head{Seq: seq, Hash: hash}
}

// docFromDB returns a stored document. One that is not JSON (edited in the
// database) comes back as a JSON string of its text, so that it can still
// be listed (encoding/json refuses a RawMessage that is not JSON) and fails
// verification as the edit it is.
func docFromDB(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

// nullDoc stores an absent document as NULL.
func nullDoc(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

const auditCols = `seq, time, actor, actor_kind, tenant, action, target, before, after, remote, status, prev_hash, hash`

// AppendAudit implements Audit. The writer's transaction (BEGIN IMMEDIATE)
// holds SQLite's write lock from the head's read to the commit.
func (s *SQLite) AppendAudit(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry: %w", err)
	}
	defer tx.rollback()
	var (
		seq  int64
		hash []byte
	)
	if err := tx.tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash); err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry: reading head: %w", err)
	}
	e, err = prepareAudit(e, headOf(uint64(seq), hash))
	if err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry: %w", err)
	}
	if _, err := tx.tx.ExecContext(ctx, `INSERT INTO audit_log (`+auditCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		int64(e.Seq), micros(e.Time), e.Actor, e.ActorKind, e.Tenant, e.Action, e.Target, nullDoc(e.Before), nullDoc(e.After),
		e.Remote, e.Status, e.PrevHash, e.Hash); err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry %d: %w", e.Seq, err)
	}
	if _, err := tx.tx.ExecContext(ctx, `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, int64(e.Seq), e.Hash); err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry %d: moving head: %w", e.Seq, err)
	}
	if err := tx.tx.Commit(); err != nil {
		return audit.Entry{}, fmt.Errorf("store: appending audit entry %d: %w", e.Seq, err)
	}
	return e, nil
}

// ListAudit implements Audit.
func (s *SQLite) ListAudit(ctx context.Context, f AuditFilter) ([]audit.Entry, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, fmt.Errorf("store: listing audit log: %w", err)
	}
	if f.Tenants != nil && len(f.Tenants) == 0 {
		return []audit.Entry{}, nil
	}
	q := `SELECT ` + auditCols + ` FROM audit_log WHERE seq > ?`
	args := []any{int64(min(f.AfterSeq, 1<<63-1))}
	if f.Tenant != "" {
		q += ` AND tenant = ?`
		args = append(args, f.Tenant)
	}
	if f.Tenants != nil {
		q += ` AND tenant IN (?` + strings.Repeat(`, ?`, len(f.Tenants)-1) + `)`
		for _, t := range f.Tenants {
			args = append(args, t)
		}
	}
	q += ` ORDER BY seq LIMIT ?`
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: listing audit log: %w", err)
	}
	defer rows.Close()
	out := []audit.Entry{}
	for rows.Next() {
		var (
			e             audit.Entry
			seq, tm       int64
			before, after sql.NullString
		)
		if err := rows.Scan(&seq, &tm, &e.Actor, &e.ActorKind, &e.Tenant, &e.Action, &e.Target, &before, &after,
			&e.Remote, &e.Status, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("store: listing audit log: %w", err)
		}
		e.Seq, e.Time = uint64(seq), fromMicros(tm)
		if before.Valid {
			e.Before = docFromDB(before.String)
		}
		if after.Valid {
			e.After = docFromDB(after.String)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: listing audit log: %w", err)
	}
	return out, nil
}

// AuditHead implements Audit.
func (s *SQLite) AuditHead(ctx context.Context) (audit.Head, error) {
	var (
		seq  int64
		hash []byte
	)
	err := s.r.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Head{}, errors.New("store: reading audit head: the head row is gone")
	}
	if err != nil {
		return audit.Head{}, fmt.Errorf("store: reading audit head: %w", err)
	}
	return headOf(uint64(seq), hash), nil
}
