// Package tufstage owns the offline side of key ceremonies: staging the
// next version of a role's metadata with its edits (keys, thresholds,
// delegations, expiry), adding signatures one key holder at a time, and
// describing a staged file so that each holder sees what they sign. Staged
// files are named <version>.<role>.json, as in the repository, and reach the
// server with `dialtone tuf push`.
package tufstage

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// MaxFileBytes bounds a staged metadata file.
const MaxFileBytes = 4 << 20

// ErrName means a staged file is not named <version>.<role>.json.
var ErrName = errors.New("staged file must be named <version>.<role>.json")

var nameRe = regexp.MustCompile(`^([0-9]+)\.([a-z0-9][a-z0-9-]*)\.json$`)

// ParseName splits a staged file's base name.
func ParseName(path string) (version int64, role string, err error) {
	m := nameRe.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return 0, "", fmt.Errorf("%w: %s", ErrName, filepath.Base(path))
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || v < 1 {
		return 0, "", fmt.Errorf("%w: %s", ErrName, filepath.Base(path))
	}
	return v, m[2], nil
}

// RootEdit changes root metadata.
type RootEdit struct {
	AddKeys    map[string][]crypto.PublicKey // role -> keys to trust
	RemoveKeys map[string][]string           // role -> key IDs to drop
	Thresholds map[string]int
	Expires    time.Duration
}

// KeyID returns the TUF key ID of a public key.
func KeyID(pub crypto.PublicKey) (string, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return "", err
	}
	return k.ID()
}

// StageRoot returns the next root version with the edits applied, unsigned.
func StageRoot(current []byte, e RootEdit, now time.Time) (*metadata.Metadata[metadata.RootType], error) {
	var zero metadata.Metadata[metadata.RootType]
	m, err := zero.FromBytes(current)
	if err != nil {
		return nil, fmt.Errorf("parsing current root: %w", err)
	}
	for role, pubs := range e.AddKeys {
		if _, ok := m.Signed.Roles[role]; !ok {
			return nil, fmt.Errorf("root has no role %q", role)
		}
		for _, pub := range pubs {
			k, err := metadata.KeyFromPublicKey(pub)
			if err != nil {
				return nil, fmt.Errorf("key for %s: %w", role, err)
			}
			if err := m.Signed.AddKey(k, role); err != nil {
				return nil, fmt.Errorf("adding key to %s: %w", role, err)
			}
		}
	}
	for role, ids := range e.RemoveKeys {
		for _, id := range ids {
			full, err := resolveKeyID(m.Signed.Roles[role], id)
			if err != nil {
				return nil, fmt.Errorf("removing from %s: %w", role, err)
			}
			if err := m.Signed.RevokeKey(full, role); err != nil {
				return nil, fmt.Errorf("removing key %s from %s: %w", id, role, err)
			}
		}
	}
	for role, n := range e.Thresholds {
		r, ok := m.Signed.Roles[role]
		if !ok {
			return nil, fmt.Errorf("root has no role %q", role)
		}
		r.Threshold = n
	}
	for name, r := range m.Signed.Roles {
		if r.Threshold < 1 || r.Threshold > len(r.KeyIDs) {
			return nil, fmt.Errorf("role %s: threshold %d with %d keys", name, r.Threshold, len(r.KeyIDs))
		}
	}
	m.Signed.Version++
	if e.Expires > 0 {
		m.Signed.Expires = now.UTC().Truncate(time.Second).Add(e.Expires)
	}
	m.ClearSignatures()
	return m, nil
}

// resolveKeyID accepts a unique prefix of a key ID, as status prints them.
func resolveKeyID(r *metadata.Role, prefix string) (string, error) {
	if r == nil {
		return "", errors.New("no such role")
	}
	var found []string
	for _, id := range r.KeyIDs {
		if strings.HasPrefix(id, prefix) {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("key id %q matches %d keys", prefix, len(found))
	}
	return found[0], nil
}

// DelegationEdit adds or replaces a delegated role of the top-level targets.
type DelegationEdit struct {
	Name      string
	Paths     []string
	Keys      []crypto.PublicKey
	Threshold int
}

// TargetsEdit changes top-level targets metadata.
type TargetsEdit struct {
	Set     []DelegationEdit
	Remove  []string
	Expires time.Duration
}

// StageTargets returns the next top-level targets version with the edits.
func StageTargets(current []byte, e TargetsEdit, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	var zero metadata.Metadata[metadata.TargetsType]
	m, err := zero.FromBytes(current)
	if err != nil {
		return nil, fmt.Errorf("parsing current targets: %w", err)
	}
	if m.Signed.Delegations == nil {
		m.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
	}
	d := m.Signed.Delegations
	for _, name := range e.Remove {
		i := slices.IndexFunc(d.Roles, func(r metadata.DelegatedRole) bool { return r.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("no delegation %q to remove", name)
		}
		d.Roles = slices.Delete(d.Roles, i, i+1)
	}
	for _, s := range e.Set {
		if len(s.Keys) == 0 || s.Threshold < 1 || s.Threshold > len(s.Keys) || len(s.Paths) == 0 {
			return nil, fmt.Errorf("delegation %s: want paths, keys and a threshold between 1 and the number of keys", s.Name)
		}
		role := metadata.DelegatedRole{Name: s.Name, Threshold: s.Threshold, Terminating: true, Paths: s.Paths}
		for _, pub := range s.Keys {
			k, err := metadata.KeyFromPublicKey(pub)
			if err != nil {
				return nil, err
			}
			id, err := k.ID()
			if err != nil {
				return nil, err
			}
			d.Keys[id] = k
			role.KeyIDs = append(role.KeyIDs, id)
		}
		if i := slices.IndexFunc(d.Roles, func(r metadata.DelegatedRole) bool { return r.Name == s.Name }); i >= 0 {
			d.Roles[i] = role
		} else {
			// More specific delegations go first: the walk stops at the
			// first terminating role that matches a path.
			d.Roles = append([]metadata.DelegatedRole{role}, d.Roles...)
		}
	}
	// Keys no role uses any more are dropped.
	used := map[string]bool{}
	for _, r := range d.Roles {
		for _, id := range r.KeyIDs {
			used[id] = true
		}
	}
	for id := range d.Keys {
		if !used[id] {
			delete(d.Keys, id)
		}
	}
	m.Signed.Version++
	if e.Expires > 0 {
		m.Signed.Expires = now.UTC().Truncate(time.Second).Add(e.Expires)
	}
	m.ClearSignatures()
	return m, nil
}

// StageRole returns the next version of a delegated role with a new expiry
// (current nil: its first, empty version).
func StageRole(current []byte, expires time.Duration, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	exp := now.UTC().Truncate(time.Second).Add(expires)
	if current == nil {
		return metadata.Targets(exp), nil
	}
	var zero metadata.Metadata[metadata.TargetsType]
	m, err := zero.FromBytes(current)
	if err != nil {
		return nil, fmt.Errorf("parsing current role metadata: %w", err)
	}
	m.Signed.Version++
	if expires > 0 {
		m.Signed.Expires = exp
	}
	m.ClearSignatures()
	return m, nil
}

// Write saves staged metadata as <dir>/<version>.<role>.json.
func Write[T metadata.Roles](dir, role string, m *metadata.Metadata[T]) (string, error) {
	b, err := m.ToBytes(true)
	if err != nil {
		return "", err
	}
	var head struct {
		Signed struct {
			Version int64 `json:"version"`
		} `json:"signed"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, strconv.FormatInt(head.Signed.Version, 10)+"."+role+".json")
	return p, atomicfile.WriteFile(p, b, 0o644)
}

// Summary describes a staged file for the key holder about to sign it.
type Summary struct {
	Role       string    `json:"role"`
	Type       string    `json:"type"`
	Version    int64     `json:"version"`
	Expires    time.Time `json:"expires"`
	Signatures []string  `json:"signatures"`
	Details    []string  `json:"details"`
}

func readBounded(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes exceeds %d", path, fi.Size(), MaxFileBytes)
	}
	return os.ReadFile(path)
}

func typeOf(b []byte) (string, error) {
	var head struct {
		Signed struct {
			Type string `json:"_type"`
		} `json:"signed"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return "", fmt.Errorf("not TUF metadata: %w", err)
	}
	return head.Signed.Type, nil
}

// Sign adds a signature by s to the staged file at path, in place, and
// returns what was signed.
func Sign(path string, s signature.Signer) (*Summary, error) {
	_, role, err := ParseName(path)
	if err != nil {
		return nil, err
	}
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	typ, err := typeOf(b)
	if err != nil {
		return nil, err
	}
	var out []byte
	switch typ {
	case metadata.ROOT:
		out, err = signBytes[metadata.RootType](b, s)
	case metadata.TARGETS:
		out, err = signBytes[metadata.TargetsType](b, s)
	default:
		return nil, fmt.Errorf("%s: offline signing is for root and targets metadata, not %q", path, typ)
	}
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(path, out, 0o644); err != nil {
		return nil, err
	}
	return Describe(path, role, out)
}

func signBytes[T metadata.Roles](b []byte, s signature.Signer) ([]byte, error) {
	var zero metadata.Metadata[T]
	m, err := zero.FromBytes(b)
	if err != nil {
		return nil, err
	}
	pub, err := s.PublicKey()
	if err != nil {
		return nil, err
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	for _, sig := range m.Signatures {
		if sig.KeyID == id {
			return nil, fmt.Errorf("already signed by key %s", id[:12])
		}
	}
	if _, err := m.Sign(s); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return m.ToBytes(true)
}

// Describe summarises metadata bytes of a role.
func Describe(path, role string, b []byte) (*Summary, error) {
	typ, err := typeOf(b)
	if err != nil {
		return nil, err
	}
	sum := &Summary{Role: role, Type: typ}
	switch typ {
	case metadata.ROOT:
		var zero metadata.Metadata[metadata.RootType]
		m, err := zero.FromBytes(b)
		if err != nil {
			return nil, err
		}
		sum.Version, sum.Expires = m.Signed.Version, m.Signed.Expires
		sum.Signatures = signerIDs(m.Signatures)
		for _, name := range metadata.TOP_LEVEL_ROLE_NAMES {
			r, ok := m.Signed.Roles[name]
			if !ok || r == nil {
				sum.Details = append(sum.Details, name+": MISSING")
				continue
			}
			sum.Details = append(sum.Details, fmt.Sprintf("%s: %d of %v", name, r.Threshold, shortIDs(r.KeyIDs)))
		}
	case metadata.TARGETS:
		var zero metadata.Metadata[metadata.TargetsType]
		m, err := zero.FromBytes(b)
		if err != nil {
			return nil, err
		}
		sum.Version, sum.Expires = m.Signed.Version, m.Signed.Expires
		sum.Signatures = signerIDs(m.Signatures)
		if d := m.Signed.Delegations; d != nil {
			for _, r := range d.Roles {
				sum.Details = append(sum.Details, fmt.Sprintf("delegates %v to %s: %d of %v", r.Paths, r.Name, r.Threshold, shortIDs(r.KeyIDs)))
			}
		}
		sum.Details = append(sum.Details, fmt.Sprintf("%d targets", len(m.Signed.Targets)))
	default:
		return nil, fmt.Errorf("%s: unexpected metadata type %q", path, typ)
	}
	return sum, nil
}

// ShortID is the 12-character prefix of a key ID that status and
// summaries print; ceremonies accept any unique prefix back.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func shortIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = ShortID(id)
	}
	return out
}

func signerIDs(sigs []metadata.Signature) []string {
	ids := make([]string, len(sigs))
	for i, s := range sigs {
		ids[i] = s.KeyID
	}
	return shortIDs(ids)
}
