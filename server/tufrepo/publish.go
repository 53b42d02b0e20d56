package tufrepo

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Limits on what a publish may carry.
const (
	MaxMetadataBytes  = 4 << 20
	MaxSignatureBytes = 4 << 10
)

// RejectedError says which check a publish or push failed. Nothing was
// changed.
type RejectedError struct {
	Check string // short name of the failed check, e.g. "signature"
	Err   error
}

func (e *RejectedError) Error() string { return "rejected by check " + e.Check + ": " + e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

func reject(check, format string, args ...any) error {
	return &RejectedError{Check: check, Err: fmt.Errorf(format, args...)}
}

// PublishRequest is what a publisher uploads: its role's new targets
// metadata (signed offline with the publisher's key), the bundle's
// signature, and the bundle itself, streamed.
type PublishRequest struct {
	Role      string
	Metadata  []byte
	Signature []byte
	Bundle    io.Reader
	// Models, when not nil, are the only models the caller may publish:
	// a CI token is scoped to its product lines.
	Models []string
}

// PublishResult describes an accepted publish.
type PublishResult = wire.PublishResult

// Delegation returns the role that may publish the target path and its
// current signed metadata, which the publisher extends and signs again.
func (r *Repo) Delegation(targetPath string) (role string, raw []byte, err error) {
	st := r.current()
	d := st.targets.Signed.Delegations
	if d == nil {
		return "", nil, fmt.Errorf("no delegations in targets metadata")
	}
	for _, rr := range d.GetRolesForTarget(targetPath) {
		m, ok := st.delegated[rr.Name]
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, metadataDir, metaName(rr.Name, m.Signed.Version)))
		if err != nil {
			return "", nil, fmt.Errorf("reading %s metadata: %w", rr.Name, err)
		}
		return rr.Name, b, nil
	}
	return "", nil, fmt.Errorf("no role is delegated %q", targetPath)
}

func delegatedRole(t *metadata.Metadata[metadata.TargetsType], name string) (*metadata.DelegatedRole, bool) {
	if t.Signed.Delegations == nil {
		return nil, false
	}
	for i := range t.Signed.Delegations.Roles {
		if t.Signed.Delegations.Roles[i].Name == name {
			return &t.Signed.Delegations.Roles[i], true
		}
	}
	return nil, false
}

// roleKeys are the public keys the top-level targets pins for a role: the
// only keys whose bundle signatures we accept for its targets.
func roleKeys(t *metadata.Metadata[metadata.TargetsType], role *metadata.DelegatedRole) []crypto.PublicKey {
	var out []crypto.PublicKey
	for _, id := range role.KeyIDs {
		k, ok := t.Signed.Delegations.Keys[id]
		if !ok {
			continue
		}
		pub, err := k.ToPublicKey()
		if err == nil {
			out = append(out, pub)
		}
	}
	return out
}

// Publish checks a publisher's upload and, when every check passes, makes
// the new targets visible by writing new snapshot and timestamp metadata.
// Any failure leaves the repository as it was.
func (r *Repo) Publish(ctx context.Context, req PublishRequest) (*PublishResult, error) {
	r.publishMu.Lock()
	defer r.publishMu.Unlock()
	st := r.current()
	now := r.now().UTC().Truncate(time.Second)

	dr, nm, err := checkRoleMetadata(st, req.Role, req.Metadata, now)
	if err != nil {
		return nil, err
	}
	old := st.delegated[req.Role]

	// Foundation scope: a publish adds exactly one bundle and its signature
	// and leaves every existing target as it was.
	var added []string
	for p, tf := range nm.Signed.Targets {
		prev, existed := old.Signed.Targets[p]
		if !existed {
			added = append(added, p)
			continue
		}
		if !targetEqual(prev, tf) {
			return nil, reject("targets", "target %s changed; only additions are accepted", p)
		}
	}
	for p := range old.Signed.Targets {
		if _, ok := nm.Signed.Targets[p]; !ok {
			return nil, reject("targets", "target %s removed; use revocation instead", p)
		}
	}
	if len(added) != 2 {
		return nil, reject("targets", "a publish adds one bundle and its signature, found %d new targets", len(added))
	}
	var bundlePath, sigPath string
	for _, p := range added {
		if strings.HasSuffix(p, ".sig") {
			sigPath = p
		} else {
			bundlePath = p
		}
	}
	if bundlePath == "" || sigPath != bundlePath+".sig" {
		return nil, reject("targets", "want a bundle target and <bundle>.sig, got %v", added)
	}
	for _, p := range added {
		if !safeRel(p) {
			return nil, reject("targets", "bad target path %q", p)
		}
		ok, err := dr.IsDelegatedPath(p)
		if err != nil || !ok {
			return nil, reject("targets", "role %s may not publish %s (delegated paths %v)", req.Role, p, dr.Paths)
		}
	}
	bt := nm.Signed.Targets[bundlePath]
	stf := nm.Signed.Targets[sigPath]
	custom, err := decodeCustom(bt)
	if err != nil {
		return nil, reject("custom", "%s: %w", bundlePath, err)
	}
	if !strings.HasPrefix(bundlePath, "firmware/"+custom.Model+"/") {
		return nil, reject("custom", "target %s is not under firmware/%s/", bundlePath, custom.Model)
	}
	if req.Models != nil && !slices.Contains(req.Models, custom.Model) {
		return nil, reject("scope", "this token may publish %v, not %s", req.Models, custom.Model)
	}
	if custom.Signature != sigPath {
		return nil, reject("custom", "signature field %q, want %q", custom.Signature, sigPath)
	}
	for p, tf := range old.Signed.Targets {
		oc, err := decodeCustom(tf)
		if err != nil {
			continue
		}
		if oc.Model == custom.Model && oc.Version == custom.Version {
			return nil, reject("version", "%s %s is already published, on channel %s (%s)", custom.Model, custom.Version, oc.Channel, p)
		}
	}
	bundleSHA, err := singleSHA256(bt)
	if err != nil {
		return nil, reject("targets", "%s: %w", bundlePath, err)
	}
	sigSHA, err := singleSHA256(stf)
	if err != nil {
		return nil, reject("targets", "%s: %w", sigPath, err)
	}

	// The signature file: small, checked against its own target entry.
	if int64(len(req.Signature)) != stf.Length || len(req.Signature) > MaxSignatureBytes {
		return nil, reject("signature-file", "%d bytes, metadata says %d", len(req.Signature), stf.Length)
	}
	if got := sha256Sum(req.Signature); !bytes.Equal(got, sigSHA) {
		return nil, reject("signature-file", "sha256 does not match its target entry")
	}

	// The bundle: streamed to staging while hashing, bounded by the length
	// the signed metadata gives.
	staging := filepath.Join(r.dir, stagingDir)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	tmp, err := os.CreateTemp(staging, "bundle-*")
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, req.Bundle}, bt.Length+1), buf)
	if err != nil {
		return nil, reject("bundle", "receiving: %w", err)
	}
	if n != bt.Length {
		return nil, reject("bundle-length", "received %d bytes, metadata says %d", n, bt.Length)
	}
	digest := h.Sum(nil)
	if !bytes.Equal(digest, bundleSHA) {
		return nil, reject("bundle-digest", "sha256 %x does not match the signed metadata", digest)
	}
	if err := verifyWithAny(roleKeys(st.targets, dr), digest, req.Signature); err != nil {
		return nil, reject("bundle-signature", "no key pinned for role %s verifies the bundle signature: %w", req.Role, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	man, err := firmware.Verify(ctx, tmp, firmware.DefaultLimits())
	if err != nil {
		return nil, reject("bundle", "%w", err)
	}
	if man.Model != custom.Model || man.Version != custom.Version {
		return nil, reject("manifest", "bundle manifest says %s %s, metadata says %s %s", man.Model, man.Version, custom.Model, custom.Version)
	}
	if !sameSet(man.Hardware, custom.Hardware) {
		return nil, reject("manifest", "bundle hardware %v, metadata says %v", man.Hardware, custom.Hardware)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Every check passed: store the target files, then write the metadata,
	// with timestamp.json last. The bundle is copied from staging into the
	// bucket as a stream; until the metadata is committed nothing refers to
	// the new objects, so a failure here leaves the repository as it was.
	if err := r.putTarget(ctx, targetFileName(sigPath, hex.EncodeToString(sigSHA)), bytes.NewReader(req.Signature), stf.Length, sigSHA); err != nil {
		return nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if err := r.putTarget(ctx, targetFileName(bundlePath, hex.EncodeToString(bundleSHA)), tmp, bt.Length, bundleSHA); err != nil {
		return nil, err
	}
	ns, err := r.commitRole(st, req.Role, nm, req.Metadata, now)
	if err != nil {
		return nil, err
	}
	res := &PublishResult{
		Target: bundlePath, Model: custom.Model, Version: custom.Version, Channel: custom.Channel,
		Length: bt.Length, SHA256: hex.EncodeToString(bundleSHA), Role: req.Role,
		Snapshot: ns.snapshot.Signed.Version, Timestamp: ns.timestamp.Signed.Version,
	}
	r.log.Info("published firmware", "target", bundlePath, "version", custom.Version, "snapshot", res.Snapshot)
	return res, nil
}

// checkRoleMetadata checks a delegated role's new metadata, as a publisher
// signed it offline, against the current state: the role is delegated, the
// metadata is within bounds, signed by the threshold of the keys the
// top-level targets pins for the role, the next version, not expired, and
// delegates nothing further. What it adds or changes is the caller's to
// check (firmware: Publish; device configuration: PublishConfig).
func checkRoleMetadata(st *state, role string, raw []byte, now time.Time) (*metadata.DelegatedRole, *metadata.Metadata[metadata.TargetsType], error) {
	dr, ok := delegatedRole(st.targets, role)
	if !ok {
		return nil, nil, reject("role", "role %q is not delegated by the targets metadata", role)
	}
	if len(raw) > MaxMetadataBytes {
		return nil, nil, reject("metadata", "%d bytes exceeds %d", len(raw), MaxMetadataBytes)
	}
	var zero metadata.Metadata[metadata.TargetsType]
	nm, err := zero.FromBytes(raw)
	if err != nil {
		return nil, nil, reject("metadata", "parsing: %w", err)
	}
	if err := st.targets.VerifyDelegate(role, nm); err != nil {
		return nil, nil, reject("metadata-signature", "the %s metadata is not signed by its threshold of pinned keys: %w", role, err)
	}
	old, ok := st.delegated[role]
	if !ok {
		return nil, nil, reject("role", "role %q has no metadata yet: push its first version", role)
	}
	if want := old.Signed.Version + 1; nm.Signed.Version != want {
		return nil, nil, reject("metadata-version", "version %d, want %d (another publish may have landed first: fetch the role's metadata again)", nm.Signed.Version, want)
	}
	if !nm.Signed.Expires.After(now) {
		return nil, nil, reject("metadata-expiry", "expires %s, which is not in the future", nm.Signed.Expires.Format(time.RFC3339))
	}
	if nm.Signed.Delegations != nil && (len(nm.Signed.Delegations.Roles) > 0 || nm.Signed.Delegations.SuccinctRoles != nil) {
		return nil, nil, reject("metadata", "a publisher role may not delegate further")
	}
	return dr, nm, nil
}

// commitRole makes a checked new version of a delegated role current: it
// writes the metadata (raw, as its signers made it), new snapshot and
// timestamp metadata last, and installs the new state. The caller holds
// publishMu and has stored the target files the metadata names.
func (r *Repo) commitRole(st *state, role string, nm *metadata.Metadata[metadata.TargetsType], raw []byte, now time.Time) (*state, error) {
	next := *st
	next.delegated = map[string]*metadata.Metadata[metadata.TargetsType]{}
	for k, v := range st.delegated {
		next.delegated[k] = v
	}
	next.delegated[role] = nm
	files := map[string][]byte{metaName(role, nm.Signed.Version): raw}
	ns, err := r.resign(&next, files, now, true)
	if err != nil {
		return nil, err
	}
	if err := r.commitFiles(files); err != nil {
		return nil, err
	}
	r.install(ns)
	return ns, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func verifyWithAny(pubs []crypto.PublicKey, digest, sig []byte) error {
	if len(pubs) == 0 {
		return errors.New("the role pins no usable key")
	}
	var last error
	for _, pub := range pubs {
		if err := firmware.VerifySignatureDigest(pub, digest, sig); err == nil {
			return nil
		} else {
			last = err
		}
	}
	return last
}

func decodeCustom(tf *metadata.TargetFiles) (wire.TargetCustom, error) {
	var c wire.TargetCustom
	if tf.Custom == nil {
		return c, errors.New("no custom metadata")
	}
	dec := json.NewDecoder(bytes.NewReader(*tf.Custom))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("custom metadata: %w", err)
	}
	if !wire.ValidID(c.Model) {
		return c, fmt.Errorf("bad model %q", c.Model)
	}
	if c.Version == "" || c.Channel == "" || len(c.Hardware) == 0 {
		return c, errors.New("version, channel and hardware are required")
	}
	return c, nil
}

func singleSHA256(tf *metadata.TargetFiles) ([]byte, error) {
	h, ok := tf.Hashes["sha256"]
	if !ok || len(h) != sha256.Size {
		return nil, errors.New("a sha256 hash is required")
	}
	if tf.Length <= 0 {
		return nil, errors.New("length must be positive")
	}
	return h, nil
}

func targetEqual(a, b *metadata.TargetFiles) bool {
	if a.Length != b.Length || !a.Hashes.Equal(b.Hashes) {
		return false
	}
	if (a.Custom == nil) != (b.Custom == nil) {
		return false
	}
	if a.Custom == nil {
		return true
	}
	var ca, cb any
	if json.Unmarshal(*a.Custom, &ca) != nil || json.Unmarshal(*b.Custom, &cb) != nil {
		return false
	}
	return reflect.DeepEqual(ca, cb)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
