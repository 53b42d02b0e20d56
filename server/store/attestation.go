package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Identity is the TPM a device enrolled with (DESIGN.md §5).
type Identity struct {
	Device, Tenant, Model string
	// EKHash is the SHA-256 of the EK's TPMT_PUBLIC: a TPM enrolls one
	// device, and a device keeps its TPM.
	EKHash, EKPublic []byte
	EKCert           []byte // nil when an operator approved the EK
	AKPublic         []byte
	// TokenHash is the SHA-256 of the attestation token the device was
	// given at enrollment: its nonce and attestation requests carry the
	// token, so that nobody else can have a verdict recorded against it.
	TokenHash []byte
	Method    string // EnrollEKCert or EnrollApproved
	Grant     string // the grant that let it enroll
	Enrolled  time.Time
}

// How an enrolled TPM was trusted.
const (
	EnrollEKCert   = "ek-cert"
	EnrollApproved = "approved"
)

// Kinds of enrollment grant.
const (
	GrantToken  = "token"  // a one-time enrollment token; Hash is its SHA-256
	GrantSerial = "serial" // an allowlisted device ID; Hash is its SHA-256
	GrantEK     = "ek"     // an operator-approved EK; Hash is the EK hash
)

// Grant lets one device enroll, once.
type Grant struct {
	ID, Kind string
	Hash     []byte
	Tenant   string
	Device   string // "" for any device ID (tokens only)
	Model    string // "" for any model
	Created  time.Time
	Expires  time.Time
	Used     time.Time // zero until used
	UsedBy   string
}

// Attestation is one verdict with the evidence it was reached on. A stale
// verdict has no evidence.
type Attestation struct {
	ID                              int64
	Device                          string
	Time                            time.Time
	Outcome, Reason, Detail, Booted string
	Nonce, Quote, Signature, Log    []byte
	PCR                             int
	PCRValue                        []byte
}

// ErrGrantUsed is returned by Enroll for a grant that is used or expired.
var ErrGrantUsed = errors.New("enrollment grant used or expired")

// ErrIdentity is returned by Enroll when the device is enrolled with
// another TPM, or the TPM with another device: a hijack attempt, or a
// swapped board that an operator must clear.
var ErrIdentity = errors.New("device or TPM already enrolled with another")

// Attestations is what stores keep of enrollment and attestation.
type Attestations interface {
	// CreateGrant stores a grant; one of the same kind and hash is
	// ErrConflict.
	CreateGrant(ctx context.Context, g Grant) error
	// GrantByHash finds a grant; ErrNotFound when none.
	GrantByHash(ctx context.Context, kind string, hash []byte) (Grant, error)
	// ListGrants lists the grants of tenants (nil: all), newest first.
	ListGrants(ctx context.Context, tenants []string) ([]Grant, error)

	// Enroll records id in one transaction: it uses the grant (unless
	// id.Grant is empty: a re-enrollment of the same TPM), creates the
	// device in its tenant if it is new, and stores the identity. A device
	// enrolled with another EK, or an EK enrolled for another device, is
	// ErrIdentity; the same EK again replaces the AK. A used or expired
	// grant is ErrGrantUsed, a device of another tenant ErrConflict.
	Enroll(ctx context.Context, id Identity, at time.Time) error
	// Identity returns a device's enrolled TPM; ErrNotFound when none.
	Identity(ctx context.Context, device string) (Identity, error)

	// AddAttestation stores a verdict in the device's history and makes it
	// the device's attestation state, in one transaction (the state only
	// moves forward in time, as SetAttestation). ErrNotFound for an
	// unknown device.
	AddAttestation(ctx context.Context, a Attestation) error
	// Attestations returns a device's verdicts, newest first, at most
	// limit (all when limit <= 0).
	Attestations(ctx context.Context, device string, limit int) ([]Attestation, error)
	// LastEvidence returns the newest verdict that has evidence;
	// ErrNotFound when none.
	LastEvidence(ctx context.Context, device string) (Attestation, error)
	// ExpireAttestations makes every device whose attestation state is
	// trusted and older than before stale at time at, with a history
	// entry, and returns their IDs.
	ExpireAttestations(ctx context.Context, before, at time.Time) ([]string, error)
}

var (
	_ Attestations = (*SQLite)(nil)
	_ Attestations = (*Postgres)(nil)
)

func checkGrant(g Grant) error {
	switch {
	case g.ID == "" || len(g.Hash) == 0 || g.Tenant == "":
		return fmt.Errorf("store: creating grant: %w: id, hash and tenant are required", wire.ErrInvalid)
	case g.Kind != GrantToken && g.Kind != GrantSerial && g.Kind != GrantEK:
		return fmt.Errorf("store: creating grant: %w: kind %q", wire.ErrInvalid, g.Kind)
	case g.Kind != GrantToken && g.Device == "":
		return fmt.Errorf("store: creating grant: %w: a %s grant names its device", wire.ErrInvalid, g.Kind)
	}
	return checkText(g.ID, g.Tenant, g.Device, g.Model)
}

func checkTPMIdentity(id Identity) error {
	if err := checkIDs(id.Tenant, id.Device); err != nil {
		return fmt.Errorf("store: enrolling: %w", err)
	}
	if len(id.EKHash) != 32 || len(id.EKPublic) == 0 || len(id.AKPublic) == 0 || len(id.TokenHash) != 32 || id.Method == "" {
		return fmt.Errorf("store: enrolling %s: %w: EK hash, EK, AK, token hash and method are required", id.Device, wire.ErrInvalid)
	}
	return checkText(id.Model, id.Method, id.Grant)
}

// CreateGrant implements Attestations.
func (s *SQLite) CreateGrant(ctx context.Context, g Grant) error {
	if err := checkGrant(g); err != nil {
		return err
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM enroll_grants WHERE kind = ? AND hash = ?`, g.Kind, g.Hash).Scan(&n); err != nil {
		return fmt.Errorf("store: creating grant: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("store: creating grant: %w: a %s grant for it exists", ErrConflict, g.Kind)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO enroll_grants (id, kind, hash, tenant, device, model, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.Kind, g.Hash, g.Tenant, g.Device, g.Model, micros(g.Created), micros(g.Expires))
	if err != nil {
		return fmt.Errorf("store: creating grant: %w", err)
	}
	return nil
}

const grantCols = `id, kind, hash, tenant, device, model, created, expires, used, used_by`

func scanSQLiteGrant(row interface{ Scan(...any) error }) (Grant, error) {
	var (
		g                Grant
		created, expires int64
		used             sql.NullInt64
	)
	if err := row.Scan(&g.ID, &g.Kind, &g.Hash, &g.Tenant, &g.Device, &g.Model, &created, &expires, &used, &g.UsedBy); err != nil {
		return Grant{}, err
	}
	g.Created, g.Expires = fromMicros(created), fromMicros(expires)
	if used.Valid {
		g.Used = fromMicros(used.Int64)
	}
	return g, nil
}

// GrantByHash implements Attestations.
func (s *SQLite) GrantByHash(ctx context.Context, kind string, hash []byte) (Grant, error) {
	g, err := scanSQLiteGrant(s.r.QueryRowContext(ctx, `SELECT `+grantCols+` FROM enroll_grants WHERE kind = ? AND hash = ?`, kind, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return Grant{}, ErrNotFound
	}
	if err != nil {
		return Grant{}, fmt.Errorf("store: looking up grant: %w", err)
	}
	return g, nil
}

// ListGrants implements Attestations.
func (s *SQLite) ListGrants(ctx context.Context, tenants []string) ([]Grant, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+grantCols+` FROM enroll_grants ORDER BY created DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("store: listing grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		g, err := scanSQLiteGrant(rows)
		if err != nil {
			return nil, fmt.Errorf("store: listing grants: %w", err)
		}
		if inTenants(g.Tenant, tenants) {
			out = append(out, g)
		}
	}
	return out, rows.Err()
}

func inTenants(t string, tenants []string) bool {
	if tenants == nil {
		return true
	}
	for _, x := range tenants {
		if x == t {
			return true
		}
	}
	return false
}

// Enroll implements Attestations.
func (s *SQLite) Enroll(ctx context.Context, id Identity, at time.Time) error {
	if err := checkTPMIdentity(id); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	defer tx.Rollback()
	// The TPM and the device must be each other's or new.
	rows, err := tx.QueryContext(ctx, `SELECT device, ek_hash FROM device_identities WHERE device = ? OR ek_hash = ?`, id.Device, id.EKHash)
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
		res, err := tx.ExecContext(ctx, `UPDATE enroll_grants SET used = ?, used_by = ? WHERE id = ? AND used IS NULL AND expires > ?`,
			micros(at), id.Device, id.Grant, micros(at))
		if err != nil {
			return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("store: enrolling %s: %w", id.Device, ErrGrantUsed)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (id, tenant, model, last_seen) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		id.Device, id.Tenant, id.Model, micros(at)); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	var tenant string
	if err := tx.QueryRowContext(ctx, `SELECT tenant FROM devices WHERE id = ?`, id.Device).Scan(&tenant); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	if tenant != id.Tenant {
		return fmt.Errorf("store: enrolling %s: %w: the device is in another tenant", id.Device, ErrConflict)
	}
	if _, err := tx.ExecContext(ctx, `
INSERT INTO device_identities (device, tenant, model, ek_hash, ek_public, ek_cert, ak_public, token_hash, method, grant_id, enrolled)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device) DO UPDATE SET ak_public = excluded.ak_public, token_hash = excluded.token_hash, model = excluded.model, enrolled = excluded.enrolled`,
		id.Device, id.Tenant, id.Model, id.EKHash, id.EKPublic, nilIfEmpty(id.EKCert), id.AKPublic, id.TokenHash, id.Method, id.Grant, micros(at)); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: enrolling %s: %w", id.Device, err)
	}
	return nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Identity implements Attestations.
func (s *SQLite) Identity(ctx context.Context, device string) (Identity, error) {
	var (
		id       Identity
		enrolled int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT device, tenant, model, ek_hash, ek_public, ek_cert, ak_public, token_hash, method, grant_id, enrolled FROM device_identities WHERE device = ?`, device).
		Scan(&id.Device, &id.Tenant, &id.Model, &id.EKHash, &id.EKPublic, &id.EKCert, &id.AKPublic, &id.TokenHash, &id.Method, &id.Grant, &enrolled)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, ErrNotFound
	}
	if err != nil {
		return Identity{}, fmt.Errorf("store: reading identity of %s: %w", device, err)
	}
	id.Enrolled = fromMicros(enrolled)
	return id, nil
}

func checkAttestation(a Attestation) error {
	if a.Device == "" || a.Outcome == "" {
		return fmt.Errorf("store: adding attestation: %w: device and outcome are required", wire.ErrInvalid)
	}
	return checkText(a.Device, a.Outcome, a.Reason, a.Detail, a.Booted)
}

// AddAttestation implements Attestations.
func (s *SQLite) AddAttestation(ctx context.Context, a Attestation) error {
	if err := checkAttestation(a); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	defer tx.Rollback()
	if err := sqliteAddAttestation(ctx, tx, a); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	return nil
}

func sqliteAddAttestation(ctx context.Context, tx *sql.Tx, a Attestation) error {
	res, err := tx.ExecContext(ctx, `UPDATE devices SET attestation = ?, attestation_time = ? WHERE id = ? AND (attestation_time IS NULL OR attestation_time <= ?)`,
		a.Outcome, micros(a.Time), a.Device, micros(a.Time))
	if err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE id = ?`, a.Device).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store: adding attestation of %s: %w", a.Device, ErrNotFound)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO attestations (device, time, outcome, reason, detail, booted, nonce, quote, signature, pcr, pcr_value, log)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.Device, micros(a.Time), a.Outcome, a.Reason, a.Detail, a.Booted, nilIfEmpty(a.Nonce), nilIfEmpty(a.Quote), nilIfEmpty(a.Signature), a.PCR, nilIfEmpty(a.PCRValue), nilIfEmpty(a.Log)); err != nil {
		return fmt.Errorf("store: adding attestation of %s: %w", a.Device, err)
	}
	return nil
}

const attestationCols = `id, device, time, outcome, reason, detail, booted, nonce, quote, signature, pcr, pcr_value, log`

func scanSQLiteAttestation(row interface{ Scan(...any) error }) (Attestation, error) {
	var (
		a  Attestation
		at int64
	)
	if err := row.Scan(&a.ID, &a.Device, &at, &a.Outcome, &a.Reason, &a.Detail, &a.Booted, &a.Nonce, &a.Quote, &a.Signature, &a.PCR, &a.PCRValue, &a.Log); err != nil {
		return Attestation{}, err
	}
	a.Time = fromMicros(at)
	return a, nil
}

// Attestations implements Attestations.
func (s *SQLite) Attestations(ctx context.Context, device string, limit int) ([]Attestation, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+attestationCols+` FROM attestations WHERE device = ? ORDER BY id DESC LIMIT ?`, device, limit)
	if err != nil {
		return nil, fmt.Errorf("store: listing attestations of %s: %w", device, err)
	}
	defer rows.Close()
	out := []Attestation{}
	for rows.Next() {
		a, err := scanSQLiteAttestation(rows)
		if err != nil {
			return nil, fmt.Errorf("store: listing attestations of %s: %w", device, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// LastEvidence implements Attestations.
func (s *SQLite) LastEvidence(ctx context.Context, device string) (Attestation, error) {
	a, err := scanSQLiteAttestation(s.r.QueryRowContext(ctx, `SELECT `+attestationCols+` FROM attestations WHERE device = ? AND quote IS NOT NULL ORDER BY id DESC LIMIT 1`, device))
	if errors.Is(err, sql.ErrNoRows) {
		return Attestation{}, ErrNotFound
	}
	if err != nil {
		return Attestation{}, fmt.Errorf("store: reading evidence of %s: %w", device, err)
	}
	return a, nil
}

// staleReason is the history entry of an expired verdict.
const staleReason = "no attestation within the period"

// ExpireAttestations implements Attestations.
func (s *SQLite) ExpireAttestations(ctx context.Context, before, at time.Time) ([]string, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id FROM devices WHERE attestation = 'trusted' AND attestation_time < ?`, micros(before))
	if err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: expiring attestations: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if err := sqliteAddAttestation(ctx, tx, Attestation{Device: id, Time: at, Outcome: "stale", Reason: staleReason}); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: expiring attestations: %w", err)
	}
	return ids, nil
}
