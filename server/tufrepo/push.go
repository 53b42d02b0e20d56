package tufrepo

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// MaxPushFiles bounds how many metadata files one push may carry.
const MaxPushFiles = 64

// PushRequest carries metadata signed offline: a new root (key rotation,
// thresholds, expiry), new top-level targets (delegations, targets key
// rotation), or a delegated role's metadata that revokes targets or moves
// them between channels. New firmware goes through Publish instead.
type PushRequest struct {
	Files  map[string][]byte // role name -> metadata
	Reason string            // why targets are removed; required when any are
	Actor  string            // who pushed, for the revocation record
	// Models, when not nil, scope the push to publisher roles' targets of
	// these models: a CI token may revoke or promote its own firmware only.
	Models []string
}

// PushResult describes an accepted push.
type PushResult = wire.PushResult

// Revocation records why a target was removed.
type Revocation struct {
	Target string    `json:"target"`
	Role   string    `json:"role"`
	Reason string    `json:"reason"`
	Actor  string    `json:"actor,omitempty"`
	Time   time.Time `json:"time"`
	// Model, Version and SHA256 (hex) are the revoked bundle's, so that an
	// attestation can still tell a revoked image from an unknown one after
	// the target left the metadata. Empty in records older than them.
	Model   string `json:"model,omitempty"`
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
}

const revocationsFile = "revocations.json"

// Push checks and installs offline-signed metadata. Everything in the
// request lands together or not at all.
func (r *Repo) Push(ctx context.Context, req PushRequest) (*PushResult, error) {
	if len(req.Files) == 0 {
		return nil, reject("push", "no metadata given")
	}
	if len(req.Files) > MaxPushFiles {
		return nil, reject("push", "%d files exceed %d", len(req.Files), MaxPushFiles)
	}
	r.publishMu.Lock()
	defer r.publishMu.Unlock()
	st := r.current()
	now := r.now().UTC().Truncate(time.Second)
	next := *st
	next.delegated = map[string]*metadata.Metadata[metadata.TargetsType]{}
	files := map[string][]byte{}
	res := &PushResult{Roles: map[string]int64{}}

	for role, b := range req.Files {
		if len(b) > MaxMetadataBytes {
			return nil, reject("metadata", "%s: %d bytes exceeds %d", role, len(b), MaxMetadataBytes)
		}
		if role != metadata.ROOT && role != metadata.TARGETS && !validRole(role) {
			return nil, reject("role", "bad role name %q", role)
		}
	}

	if req.Models != nil {
		if _, ok := req.Files[metadata.ROOT]; ok {
			return nil, reject("scope", "a scoped token may not push root metadata")
		}
		if _, ok := req.Files[metadata.TARGETS]; ok {
			return nil, reject("scope", "a scoped token may not push targets metadata")
		}
	}

	if b, ok := req.Files[metadata.ROOT]; ok {
		var zero metadata.Metadata[metadata.RootType]
		nr, err := zero.FromBytes(b)
		if err != nil {
			return nil, reject("root", "parsing: %w", err)
		}
		if want := st.root.Signed.Version + 1; nr.Signed.Version != want {
			return nil, reject("root-version", "version %d, want %d", nr.Signed.Version, want)
		}
		if err := st.root.VerifyDelegate(metadata.ROOT, nr); err != nil {
			return nil, reject("root-signature", "not signed by the threshold of the current root's keys: %w", err)
		}
		if err := nr.VerifyDelegate(metadata.ROOT, nr); err != nil {
			return nil, reject("root-signature", "not signed by the threshold of its own root keys: %w", err)
		}
		if !nr.Signed.Expires.After(now) {
			return nil, reject("root-expiry", "expires %s", nr.Signed.Expires.Format(time.RFC3339))
		}
		if !nr.Signed.ConsistentSnapshot {
			return nil, reject("root", "consistent snapshots must stay on")
		}
		for _, role := range metadata.TOP_LEVEL_ROLE_NAMES {
			rr, ok := nr.Signed.Roles[role]
			if !ok || rr == nil || rr.Threshold < 1 || len(rr.KeyIDs) < rr.Threshold {
				return nil, reject("root", "role %s needs a threshold of at least 1 met by its keys", role)
			}
		}
		if err := checkOnlineKey(nr, metadata.SNAPSHOT, r.snapshotSigner); err != nil {
			return nil, reject("online-keys", "%w: install the new online keys in the server's key directory and restart before pushing", err)
		}
		if err := checkOnlineKey(nr, metadata.TIMESTAMP, r.timestampSigner); err != nil {
			return nil, reject("online-keys", "%w: install the new online keys in the server's key directory and restart before pushing", err)
		}
		next.root = nr
		files[metaName(metadata.ROOT, nr.Signed.Version)] = b
		res.Roles[metadata.ROOT] = nr.Signed.Version
	}

	if b, ok := req.Files[metadata.TARGETS]; ok {
		var zero metadata.Metadata[metadata.TargetsType]
		nt, err := zero.FromBytes(b)
		if err != nil {
			return nil, reject("targets", "parsing: %w", err)
		}
		if want := st.targets.Signed.Version + 1; nt.Signed.Version != want {
			return nil, reject("targets-version", "version %d, want %d", nt.Signed.Version, want)
		}
		if err := next.root.VerifyDelegate(metadata.TARGETS, nt); err != nil {
			return nil, reject("targets-signature", "not signed by the threshold of the targets keys root names: %w", err)
		}
		if !nt.Signed.Expires.After(now) {
			return nil, reject("targets-expiry", "expires %s", nt.Signed.Expires.Format(time.RFC3339))
		}
		if len(nt.Signed.Targets) > 0 {
			return nil, reject("targets", "the top-level targets role only delegates; firmware belongs to publisher roles")
		}
		if d := nt.Signed.Delegations; d != nil {
			if d.SuccinctRoles != nil {
				return nil, reject("targets", "succinct (hashed bin) delegations are not supported yet")
			}
			for _, dr := range d.Roles {
				if !validRole(dr.Name) {
					return nil, reject("targets", "bad delegated role name %q", dr.Name)
				}
				if !dr.Terminating {
					return nil, reject("targets", "delegation %s must be terminating", dr.Name)
				}
			}
		}
		next.targets = nt
		files[metaName(metadata.TARGETS, nt.Signed.Version)] = b
		res.Roles[metadata.TARGETS] = nt.Signed.Version
	} else if err := next.root.VerifyDelegate(metadata.TARGETS, st.targets); err != nil {
		return nil, reject("targets-signature", "the new root does not trust the current targets metadata (%w): push targets metadata signed with the new targets keys in the same request", err)
	}

	var revs []Revocation
	delegations := []metadata.DelegatedRole{}
	if next.targets.Signed.Delegations != nil {
		delegations = next.targets.Signed.Delegations.Roles
	}
	for _, dr := range delegations {
		old, existed := st.delegated[dr.Name]
		b, pushed := req.Files[dr.Name]
		if !pushed {
			if !existed {
				return nil, reject("delegation", "new role %s has no metadata: push its version 1, signed by its keys, in the same request", dr.Name)
			}
			if err := next.targets.VerifyDelegate(dr.Name, old); err != nil {
				return nil, reject("delegation", "role %s's current metadata is not signed by its new keys (%w): push it re-signed in the same request", dr.Name, err)
			}
			next.delegated[dr.Name] = old
			continue
		}
		var zero metadata.Metadata[metadata.TargetsType]
		nm, err := zero.FromBytes(b)
		if err != nil {
			return nil, reject("metadata", "%s: parsing: %w", dr.Name, err)
		}
		want := int64(1)
		if existed {
			want = old.Signed.Version + 1
		}
		if nm.Signed.Version != want {
			return nil, reject("metadata-version", "%s: version %d, want %d", dr.Name, nm.Signed.Version, want)
		}
		if err := next.targets.VerifyDelegate(dr.Name, nm); err != nil {
			return nil, reject("metadata-signature", "%s is not signed by its threshold of pinned keys: %w", dr.Name, err)
		}
		if !nm.Signed.Expires.After(now) {
			return nil, reject("metadata-expiry", "%s expires %s", dr.Name, nm.Signed.Expires.Format(time.RFC3339))
		}
		if nm.Signed.Delegations != nil && (len(nm.Signed.Delegations.Roles) > 0 || nm.Signed.Delegations.SuccinctRoles != nil) {
			return nil, reject("metadata", "%s: a publisher role may not delegate further", dr.Name)
		}
		var prev map[string]*metadata.TargetFiles
		if existed {
			prev = old.Signed.Targets
		} else if len(nm.Signed.Targets) > 0 {
			return nil, reject("targets", "%s: a new role starts empty; publish firmware into it", dr.Name)
		}
		removed, err := checkMetadataOnlyChange(prev, nm.Signed.Targets)
		if err != nil {
			return nil, reject("targets", "%s: %w", dr.Name, err)
		}
		if req.Models != nil {
			for _, p := range changedPaths(prev, nm.Signed.Targets) {
				if !InModels(p, req.Models) {
					return nil, reject("scope", "this token may change targets of %v, not %s", req.Models, p)
				}
			}
		}
		for _, p := range removed {
			if !strings.HasSuffix(p, ".sig") {
				rv := Revocation{Target: p, Role: dr.Name, Reason: req.Reason, Actor: req.Actor, Time: now}
				if tf := prev[p]; tf != nil {
					rv.SHA256 = hex.EncodeToString(tf.Hashes["sha256"])
					if c, err := decodeCustom(tf); err == nil {
						rv.Model, rv.Version = c.Model, c.Version
					}
				}
				revs = append(revs, rv)
			}
		}
		next.delegated[dr.Name] = nm
		files[metaName(dr.Name, nm.Signed.Version)] = b
		res.Roles[dr.Name] = nm.Signed.Version
	}
	for role := range req.Files {
		if role == metadata.ROOT || role == metadata.TARGETS {
			continue
		}
		if _, ok := next.delegated[role]; !ok {
			return nil, reject("role", "role %q is not delegated by the targets metadata", role)
		}
	}
	if len(revs) > 0 && strings.TrimSpace(req.Reason) == "" {
		return nil, reject("reason", "removing targets needs a reason")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	ns, err := r.resign(&next, files, now, true)
	if err != nil {
		return nil, err
	}
	if len(revs) > 0 {
		if err := r.recordRevocations(revs); err != nil {
			return nil, err
		}
	}
	if err := r.commitFiles(files); err != nil {
		return nil, err
	}
	r.install(ns)
	for _, rv := range revs {
		res.Revoked = append(res.Revoked, rv.Target)
		r.log.Warn("target revoked", "target", rv.Target, "reason", rv.Reason, "actor", rv.Actor)
	}
	res.Snapshot, res.Timestamp = ns.snapshot.Signed.Version, ns.timestamp.Signed.Version
	r.log.Info("metadata pushed", "roles", res.Roles, "snapshot", res.Snapshot)
	return res, nil
}

// checkMetadataOnlyChange allows removing targets (revocation) and changing
// a target's channel (promotion); anything that would make the server
// serve bytes it has not checked must come through Publish.
func checkMetadataOnlyChange(prev, next map[string]*metadata.TargetFiles) (removed []string, err error) {
	for p, tf := range next {
		old, ok := prev[p]
		if !ok {
			return nil, fmt.Errorf("adds target %s: new firmware must be published", p)
		}
		if old.Length != tf.Length || !old.Hashes.Equal(tf.Hashes) {
			return nil, fmt.Errorf("changes the length or hashes of %s", p)
		}
		if !sameExceptChannel(old.Custom, tf.Custom) {
			return nil, fmt.Errorf("changes the custom metadata of %s beyond its channel", p)
		}
	}
	for p := range prev {
		if _, ok := next[p]; !ok {
			removed = append(removed, p)
		}
	}
	sort.Strings(removed)
	for _, p := range removed {
		if !strings.HasSuffix(p, ".sig") {
			continue
		}
		if _, kept := next[strings.TrimSuffix(p, ".sig")]; kept {
			return nil, fmt.Errorf("removes the signature %s of a target it keeps", p)
		}
	}
	return removed, nil
}

func sameExceptChannel(a, b *json.RawMessage) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	var ma, mb map[string]any
	if json.Unmarshal(*a, &ma) != nil || json.Unmarshal(*b, &mb) != nil {
		return false
	}
	if c, ok := mb["channel"].(string); ok && c != "" {
		ma["channel"] = c
	}
	ja, _ := json.Marshal(ma)
	jb, _ := json.Marshal(mb)
	return bytes.Equal(ja, jb)
}

// Revocations lists every recorded revocation, oldest first.
func (r *Repo) Revocations() ([]Revocation, error) {
	b, err := os.ReadFile(filepath.Join(r.dir, revocationsFile))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading revocations: %w", err)
	}
	var out []Revocation
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("parsing revocations: %w", err)
	}
	return out, nil
}

// recordRevocations is written before the metadata that removes the
// targets, so a revocation is never in effect without its reason on record.
func (r *Repo) recordRevocations(revs []Revocation) error {
	all, err := r.Revocations()
	if err != nil {
		return err
	}
	all = append(all, revs...)
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(r.dir, revocationsFile), b, 0o644)
}

// RoleStatus describes one role for `dialtone tuf status`.
type RoleStatus struct {
	Role      string    `json:"role"`
	Version   int64     `json:"version"`
	Expires   time.Time `json:"expires"`
	Threshold int       `json:"threshold"`
	KeyIDs    []string  `json:"keyids"`
	Paths     []string  `json:"paths,omitempty"`
	Targets   int       `json:"targets"`
	Online    bool      `json:"online"`
}

// Status lists every role: who signs it, its version, and when it expires.
func (r *Repo) Status() []RoleStatus {
	st := r.current()
	root := st.root.Signed
	out := []RoleStatus{}
	add := func(role string, version int64, expires time.Time, targets int) {
		rr := root.Roles[role]
		if rr == nil {
			rr = &metadata.Role{}
		}
		out = append(out, RoleStatus{Role: role, Version: version, Expires: expires, Threshold: rr.Threshold, KeyIDs: rr.KeyIDs,
			Targets: targets, Online: role == metadata.SNAPSHOT || role == metadata.TIMESTAMP})
	}
	add(metadata.ROOT, root.Version, root.Expires, 0)
	add(metadata.TARGETS, st.targets.Signed.Version, st.targets.Signed.Expires, len(st.targets.Signed.Targets))
	add(metadata.SNAPSHOT, st.snapshot.Signed.Version, st.snapshot.Signed.Expires, 0)
	add(metadata.TIMESTAMP, st.timestamp.Signed.Version, st.timestamp.Signed.Expires, 0)
	if d := st.targets.Signed.Delegations; d != nil {
		for _, dr := range d.Roles {
			m, ok := st.delegated[dr.Name]
			if !ok {
				continue
			}
			out = append(out, RoleStatus{Role: dr.Name, Version: m.Signed.Version, Expires: m.Signed.Expires, Threshold: dr.Threshold,
				KeyIDs: dr.KeyIDs, Paths: dr.Paths, Targets: len(m.Signed.Targets)})
		}
	}
	return out
}

// changedPaths lists targets removed or changed between two versions.
func changedPaths(prev, next map[string]*metadata.TargetFiles) []string {
	var out []string
	for p, old := range prev {
		tf, ok := next[p]
		if !ok || !targetEqual(old, tf) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// InModels reports whether a target path lies under firmware/<m>/ for one
// of models: the scope of a publisher token.
func InModels(path string, models []string) bool {
	for _, m := range models {
		if strings.HasPrefix(path, "firmware/"+m+"/") {
			return true
		}
	}
	return false
}
