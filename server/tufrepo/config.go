package tufrepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dialtone-dev/dialtone/internal/sipprofile"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Device configuration (issue 7, item 4): a phone's SIP profile is a target
// of a delegated config role, under the paths wire.ConfigPath makes. The
// config role's key holder (an operator, offline or on a workstation) signs
// the role's new metadata; the server checks that it changes exactly one
// config target, that the file it names is a usable profile, and stores it.

// Config role defaults: what `dialtone tuf init` and a --dev server create.
const ConfigRole = "config"

// ConfigPaths are the paths the config role is delegated: every tenant's
// device and group SIP profiles.
var ConfigPaths = []string{
	"config/*/" + wire.ConfigDevices + "/*/" + wire.ConfigSIPProfile,
	"config/*/" + wire.ConfigGroups + "/*/" + wire.ConfigSIPProfile,
}

// MaxConfigBytes bounds a config file: a SIP profile.
const MaxConfigBytes = sipprofile.MaxSize

// ConfigRoleHint says how to add a config role to a repository made before
// there was one; refusals for want of one end with it.
const ConfigRoleHint = "add a config role: `dialtone tuf stage targets --delegate config " +
	"--paths 'config/*/devices/*/sip.json,config/*/groups/*/sip.json' --delegation-key CONFIG.pub` " +
	"and `dialtone tuf stage config --new`, sign the first with the targets keys " +
	"and the second with the config key (`dialtone tuf sign`), then `dialtone tuf push` both"

// ErrNoConfigRole means no delegated role may publish a config target.
var ErrNoConfigRole = errors.New("no role is delegated config targets")

// ConfigPublishRequest is a config publish: the role's new targets metadata
// (signed offline by the role's keys), which adds or replaces exactly one
// config target, and that target's file.
type ConfigPublishRequest struct {
	Role     string
	Metadata []byte
	File     []byte
	// Tenants, when not nil, are the only tenants whose config the caller
	// may publish: an operator publishes config/<its tenant>/... only.
	Tenants []string
}

// ConfigDelegation returns the role that may publish the config target and
// its current signed metadata, or ErrNoConfigRole (with ConfigRoleHint).
func (r *Repo) ConfigDelegation(target string) (role string, raw []byte, err error) {
	if _, err := wire.ParseConfigPath(target); err != nil {
		return "", nil, err
	}
	role, raw, err = r.Delegation(target)
	if err != nil {
		return "", nil, fmt.Errorf("%w (%s): %s", ErrNoConfigRole, target, ConfigRoleHint)
	}
	return role, raw, nil
}

// PublishConfig checks a config publish and, when every check passes,
// stores the file and makes the role's new metadata current. Any failure
// leaves the repository as it was; refusals are *RejectedError.
func (r *Repo) PublishConfig(ctx context.Context, req ConfigPublishRequest) (*wire.ConfigResult, error) {
	if len(req.File) == 0 || len(req.File) > MaxConfigBytes {
		return nil, reject("file", "%d bytes: a config file is 1 to %d bytes", len(req.File), MaxConfigBytes)
	}
	r.publishMu.Lock()
	defer r.publishMu.Unlock()
	st := r.current()
	now := r.now().UTC().Truncate(time.Second)

	if _, ok := delegatedRole(st.targets, req.Role); !ok {
		return nil, reject("role", "role %q is not delegated by the targets metadata: %s", req.Role, ConfigRoleHint)
	}
	dr, nm, err := checkRoleMetadata(st, req.Role, req.Metadata, now)
	if err != nil {
		return nil, err
	}
	old := st.delegated[req.Role]

	// Exactly one target added or replaced; every other one as it was.
	var changed []string
	for p, tf := range nm.Signed.Targets {
		if prev, ok := old.Signed.Targets[p]; !ok || !targetEqual(prev, tf) {
			changed = append(changed, p)
		}
	}
	for p := range old.Signed.Targets {
		if _, ok := nm.Signed.Targets[p]; !ok {
			return nil, reject("targets", "target %s removed: a config publish adds or replaces one target and keeps the others", p)
		}
	}
	if len(changed) != 1 {
		slices.Sort(changed)
		return nil, reject("targets", "a config publish adds or replaces exactly one target, found %d changed %v", len(changed), changed)
	}
	path := changed[0]
	ct, err := wire.ParseConfigPath(path)
	if err != nil || !safeRel(path) {
		return nil, reject("path", "%s is not a config target path: want config/<tenant>/{devices,groups}/<name>/sip.json", path)
	}
	if ok, err := dr.IsDelegatedPath(path); err != nil || !ok {
		return nil, reject("path", "role %s may not publish %s (delegated paths %v)", req.Role, path, dr.Paths)
	}
	if req.Tenants != nil && !slices.Contains(req.Tenants, ct.Tenant) {
		return nil, reject("scope", "this caller may publish the config of tenants %v, not of %s", req.Tenants, ct.Tenant)
	}
	tf := nm.Signed.Targets[path]
	sum, err := singleSHA256(tf)
	if err != nil {
		return nil, reject("targets", "%s: %w", path, err)
	}
	if len(tf.Hashes) != 1 {
		return nil, reject("targets", "%s: want the sha256 hash alone, so that every hash a client checks is one the server checked", path)
	}
	if tf.Custom != nil {
		return nil, reject("targets", "%s: a config target carries no custom metadata", path)
	}
	if tf.Length != int64(len(req.File)) {
		return nil, reject("file", "%d bytes, metadata says %d", len(req.File), tf.Length)
	}
	if got := sha256Sum(req.File); !bytes.Equal(got, sum) {
		return nil, reject("file", "sha256 %x does not match the signed metadata", got)
	}
	if ct.File == wire.ConfigSIPProfile {
		if _, err := sipprofile.Parse(req.File); err != nil {
			return nil, reject("profile", "%w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	if err := r.putTarget(ctx, targetFileName(path, hex.EncodeToString(sum)), bytes.NewReader(req.File), tf.Length, sum); err != nil {
		return nil, err
	}
	ns, err := r.commitRole(st, req.Role, nm, req.Metadata, now)
	if err != nil {
		return nil, err
	}
	res := &wire.ConfigResult{Target: path, Role: req.Role, Length: tf.Length, SHA256: hex.EncodeToString(sum),
		Version: nm.Signed.Version, Snapshot: ns.snapshot.Signed.Version, Timestamp: ns.timestamp.Signed.Version}
	r.log.Info("published config", "target", path, "role", req.Role, "version", res.Version, "snapshot", res.Snapshot)
	return res, nil
}

// ErrForeignConfigMetadata means role metadata the server handed out is
// not signed by the key that would sign its next version: signing it again
// would launder whatever is in it.
var ErrForeignConfigMetadata = errors.New("role metadata from the server is not signed by the given key")

// StageConfig is the publisher's side of PublishConfig: it sets target to
// file in the role's current metadata (raw, as ConfigDelegation returns
// it), bumps the version, sets the expiry and signs it with key, which
// must have signed the current metadata too. It runs where the key is
// (`dialtone config publish`); the server never holds the key.
func StageConfig(raw []byte, role, target string, file []byte, key signature.Signer, expires time.Duration, now time.Time) ([]byte, error) {
	if _, err := wire.ParseConfigPath(target); err != nil {
		return nil, err
	}
	if len(file) == 0 || len(file) > MaxConfigBytes {
		return nil, fmt.Errorf("config file of %d bytes: want 1 to %d", len(file), MaxConfigBytes)
	}
	if expires <= 0 {
		expires = DefaultExpiries().Publisher
	}
	if len(raw) > MaxMetadataBytes {
		return nil, fmt.Errorf("role metadata of %d bytes exceeds %d", len(raw), MaxMetadataBytes)
	}
	var zero metadata.Metadata[metadata.TargetsType]
	md, err := zero.FromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing the %s metadata: %w", role, err)
	}
	if err := signedByKey(md, role, key); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(file)
	if md.Signed.Targets == nil {
		md.Signed.Targets = map[string]*metadata.TargetFiles{}
	}
	md.Signed.Targets[target] = &metadata.TargetFiles{Length: int64(len(file)), Hashes: metadata.Hashes{"sha256": sum[:]}, Path: target}
	md.Signed.Version++
	md.Signed.Expires = now.UTC().Truncate(time.Second).Add(expires)
	md.ClearSignatures()
	if _, err := md.Sign(key); err != nil {
		return nil, fmt.Errorf("signing the %s metadata: %w", role, err)
	}
	return md.ToBytes(true)
}

// signedByKey checks that md carries a valid signature by key, through
// go-tuf's own verification of a one-role delegation.
func signedByKey(md *metadata.Metadata[metadata.TargetsType], role string, key signature.Signer) error {
	k, id, err := signerKey(key)
	if err != nil {
		return err
	}
	d := metadata.Targets(time.Now().Add(time.Hour))
	d.Signed.Delegations = &metadata.Delegations{
		Keys:  map[string]*metadata.Key{id: k},
		Roles: []metadata.DelegatedRole{{Name: role, KeyIDs: []string{id}, Threshold: 1, Paths: []string{"*"}}},
	}
	if err := d.VerifyDelegate(role, md); err != nil {
		return fmt.Errorf("%w (role %s, key %s): %v", ErrForeignConfigMetadata, role, shortID(id), err)
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
