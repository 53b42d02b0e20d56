package tufrepo

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"gocloud.dev/blob"
)

// ErrNoRepository is returned by Open when the directory holds no repository.
var ErrNoRepository = errors.New("no TUF repository")

// Expiries are the lifetimes given to newly signed metadata.
type Expiries struct {
	Root, Targets, Publisher, Snapshot, Timestamp time.Duration
}

// DefaultExpiries are the lifetimes of DESIGN.md §2.
func DefaultExpiries() Expiries {
	return Expiries{
		Root:      365 * 24 * time.Hour,
		Targets:   90 * 24 * time.Hour,
		Publisher: 30 * 24 * time.Hour,
		Snapshot:  7 * 24 * time.Hour,
		Timestamp: 24 * time.Hour,
	}
}

// Delegation describes one delegated publisher role of the top-level targets.
type Delegation struct {
	Role      string
	Paths     []string // e.g. firmware/*/* or firmware/<model>/*
	Keys      []crypto.PublicKey
	Threshold int
	// Signers sign the role's first, empty metadata. They are the
	// publisher's keys; in production they sign offline.
	Signers []signature.Signer
}

// InitOptions describe a new repository. Root and targets signers are
// offline keys: Init uses them once and the server never keeps them.
type InitOptions struct {
	Dir              string
	RootSigners      []signature.Signer
	RootThreshold    int
	TargetsSigners   []signature.Signer
	TargetsThreshold int
	Snapshot         signature.Signer
	Timestamp        signature.Signer
	Delegations      []Delegation
	Expiries         Expiries
	Now              time.Time
}

func tufKey(pub crypto.PublicKey) (*metadata.Key, string, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return nil, "", fmt.Errorf("converting key: %w", err)
	}
	id, err := k.ID()
	if err != nil {
		return nil, "", fmt.Errorf("key id: %w", err)
	}
	return k, id, nil
}

func signerKey(s signature.Signer) (*metadata.Key, string, error) {
	pub, err := s.PublicKey()
	if err != nil {
		return nil, "", fmt.Errorf("public key of signer: %w", err)
	}
	return tufKey(pub)
}

func signAll[T metadata.Roles](m *metadata.Metadata[T], signers []signature.Signer) error {
	for _, s := range signers {
		if _, err := m.Sign(s); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
	}
	return nil
}

// Init creates a new repository in opts.Dir. It refuses to touch a directory
// that already holds metadata.
func Init(ctx context.Context, opts InitOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Expiries == (Expiries{}) {
		opts.Expiries = DefaultExpiries()
	}
	now := opts.Now.UTC().Truncate(time.Second)
	if len(opts.RootSigners) == 0 || len(opts.TargetsSigners) == 0 || opts.Snapshot == nil || opts.Timestamp == nil {
		return errors.New("init: root, targets, snapshot and timestamp keys are all required")
	}
	if opts.RootThreshold < 1 || opts.RootThreshold > len(opts.RootSigners) {
		return fmt.Errorf("init: root threshold %d must be between 1 and %d", opts.RootThreshold, len(opts.RootSigners))
	}
	if opts.TargetsThreshold < 1 || opts.TargetsThreshold > len(opts.TargetsSigners) {
		return fmt.Errorf("init: targets threshold %d must be between 1 and %d", opts.TargetsThreshold, len(opts.TargetsSigners))
	}
	mdir := filepath.Join(opts.Dir, metadataDir)
	if _, err := os.Stat(filepath.Join(mdir, "timestamp.json")); err == nil {
		return fmt.Errorf("init: %s already holds a repository: %w", opts.Dir, fs.ErrExist)
	}
	for _, d := range []string{mdir, filepath.Join(opts.Dir, targetsDir), filepath.Join(opts.Dir, stagingDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}

	root := metadata.Root(now.Add(opts.Expiries.Root))
	addRoleKeys := func(role string, signers []signature.Signer, threshold int) error {
		for _, s := range signers {
			k, _, err := signerKey(s)
			if err != nil {
				return err
			}
			if err := root.Signed.AddKey(k, role); err != nil {
				return fmt.Errorf("adding %s key: %w", role, err)
			}
		}
		root.Signed.Roles[role].Threshold = threshold
		return nil
	}
	if err := addRoleKeys(metadata.ROOT, opts.RootSigners, opts.RootThreshold); err != nil {
		return err
	}
	if err := addRoleKeys(metadata.TARGETS, opts.TargetsSigners, opts.TargetsThreshold); err != nil {
		return err
	}
	if err := addRoleKeys(metadata.SNAPSHOT, []signature.Signer{opts.Snapshot}, 1); err != nil {
		return err
	}
	if err := addRoleKeys(metadata.TIMESTAMP, []signature.Signer{opts.Timestamp}, 1); err != nil {
		return err
	}
	if err := signAll(root, opts.RootSigners); err != nil {
		return err
	}

	targets := metadata.Targets(now.Add(opts.Expiries.Targets))
	targets.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}, Roles: []metadata.DelegatedRole{}}
	delegated := map[string]*metadata.Metadata[metadata.TargetsType]{}
	for _, d := range opts.Delegations {
		if !validRole(d.Role) {
			return fmt.Errorf("init: bad role name %q", d.Role)
		}
		if d.Threshold < 1 || d.Threshold > len(d.Keys) {
			return fmt.Errorf("init: role %s: threshold %d must be between 1 and %d", d.Role, d.Threshold, len(d.Keys))
		}
		if len(d.Signers) < d.Threshold {
			return fmt.Errorf("init: role %s: %d signers cannot meet threshold %d", d.Role, len(d.Signers), d.Threshold)
		}
		role := metadata.DelegatedRole{Name: d.Role, Threshold: d.Threshold, Terminating: true, Paths: d.Paths}
		for _, pub := range d.Keys {
			k, id, err := tufKey(pub)
			if err != nil {
				return err
			}
			targets.Signed.Delegations.Keys[id] = k
			role.KeyIDs = append(role.KeyIDs, id)
		}
		targets.Signed.Delegations.Roles = append(targets.Signed.Delegations.Roles, role)
		dm := metadata.Targets(now.Add(opts.Expiries.Publisher))
		if err := signAll(dm, d.Signers); err != nil {
			return err
		}
		delegated[d.Role] = dm
	}
	if err := signAll(targets, opts.TargetsSigners); err != nil {
		return err
	}

	st := &state{root: root, targets: targets, delegated: delegated}
	files := map[string][]byte{}
	if err := st.encodeInto(files, true); err != nil {
		return err
	}
	r := &Repo{dir: opts.Dir, snapshotSigner: opts.Snapshot, timestampSigner: opts.Timestamp, exp: opts.Expiries, log: slog.New(slog.DiscardHandler)}
	next, err := r.resign(st, files, now, true)
	if err != nil {
		return err
	}
	_ = next
	return r.commitFiles(files)
}

var roleRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func validRole(s string) bool {
	switch s {
	case metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP:
		return false
	}
	return roleRe.MatchString(s)
}

// state is one consistent view of the repository.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	delegated map[string]*metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	// timestampJSON is what /metadata/timestamp.json serves: from memory,
	// so that the switch to a new state is one pointer swap for readers.
	timestampJSON []byte
}

// encodeInto adds the versioned files of targets and delegated roles (and
// root when withRoot) to files, keyed by path relative to metadata/.
func (st *state) encodeInto(files map[string][]byte, withRoot bool) error {
	if withRoot {
		b, err := st.root.ToBytes(true)
		if err != nil {
			return fmt.Errorf("encoding root: %w", err)
		}
		files[metaName(metadata.ROOT, st.root.Signed.Version)] = b
	}
	b, err := st.targets.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encoding targets: %w", err)
	}
	files[metaName(metadata.TARGETS, st.targets.Signed.Version)] = b
	for role, m := range st.delegated {
		b, err := m.ToBytes(true)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", role, err)
		}
		files[metaName(role, m.Signed.Version)] = b
	}
	return nil
}

// Repo is an open repository. It is safe for concurrent use.
type Repo struct {
	dir             string
	snapshotSigner  signature.Signer
	timestampSigner signature.Signer
	exp             Expiries
	log             *slog.Logger
	now             func() time.Time

	// bucket holds the target files; localTargets is its folder when it
	// is the default fileblob bucket over targets/ (ownBucket: Close
	// closes it), "" for a bucket given by WithTargetsBucket.
	bucket       *blob.Bucket
	ownBucket    bool
	localTargets string

	publishMu sync.Mutex // serialises publishes and re-signing
	mu        sync.RWMutex
	cur       *state
}

// Option configures Open.
type Option func(*Repo)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Repo) { r.log = l } }

// WithExpiries sets the lifetimes of newly signed metadata.
func WithExpiries(e Expiries) Option { return func(r *Repo) { r.exp = e } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(r *Repo) { r.now = now } }

// Open loads the repository in dir. The snapshot and timestamp signers must
// be the keys root names for those roles. Target files are stored in the
// repository's targets/ folder, or in the bucket WithTargetsBucket gives.
// Close the Repo when done.
func Open(ctx context.Context, dir string, snapshot, timestamp signature.Signer, opts ...Option) (_ *Repo, err error) {
	r := &Repo{dir: dir, snapshotSigner: snapshot, timestampSigner: timestamp, exp: DefaultExpiries(),
		log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		o(r)
	}
	st, err := r.load()
	if err != nil {
		return nil, err
	}
	if err := checkOnlineKey(st.root, metadata.SNAPSHOT, snapshot); err != nil {
		return nil, err
	}
	if err := checkOnlineKey(st.root, metadata.TIMESTAMP, timestamp); err != nil {
		return nil, err
	}
	r.cur = st
	if err := r.openTargets(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = r.Close()
		}
	}()
	if err := r.cleanOrphans(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, stagingDir), 0o755); err != nil {
		return nil, fmt.Errorf("opening repository: %w", err)
	}
	if _, err := r.Maintain(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func checkOnlineKey(root *metadata.Metadata[metadata.RootType], role string, s signature.Signer) error {
	if s == nil {
		return fmt.Errorf("opening repository: no %s key", role)
	}
	_, id, err := signerKey(s)
	if err != nil {
		return err
	}
	rr := root.Signed.Roles[role]
	if rr == nil {
		return fmt.Errorf("opening repository: root names no %s role", role)
	}
	for _, k := range rr.KeyIDs {
		if k == id {
			return nil
		}
	}
	return fmt.Errorf("opening repository: the %s key given (%s) is not one root trusts for that role", role, id[:12])
}

func readMeta[T metadata.Roles](dir, name string) (*metadata.Metadata[T], error) {
	b, err := os.ReadFile(filepath.Join(dir, metadataDir, name))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	var m *metadata.Metadata[T]
	var zero metadata.Metadata[T]
	m, err = zero.FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", name, err)
	}
	return m, nil
}

// load reads the state that timestamp.json points at: that is the only
// state clients can see, whatever else a crashed publish left behind.
func (r *Repo) load() (*state, error) {
	if _, err := os.Stat(filepath.Join(r.dir, metadataDir, "timestamp.json")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoRepository, r.dir)
	}
	tsJSON, err := os.ReadFile(filepath.Join(r.dir, metadataDir, "timestamp.json"))
	if err != nil {
		return nil, fmt.Errorf("reading timestamp.json: %w", err)
	}
	var zts metadata.Metadata[metadata.TimestampType]
	ts, err := zts.FromBytes(tsJSON)
	if err != nil {
		return nil, fmt.Errorf("parsing timestamp.json: %w", err)
	}
	snapMeta, ok := ts.Signed.Meta["snapshot.json"]
	if !ok {
		return nil, errors.New("timestamp.json names no snapshot")
	}
	snap, err := readMeta[metadata.SnapshotType](r.dir, metaName(metadata.SNAPSHOT, snapMeta.Version))
	if err != nil {
		return nil, err
	}
	st := &state{snapshot: snap, timestamp: ts, timestampJSON: tsJSON, delegated: map[string]*metadata.Metadata[metadata.TargetsType]{}}
	for name, mf := range snap.Signed.Meta {
		role, ok := stringsCutSuffix(name, ".json")
		if !ok {
			return nil, fmt.Errorf("snapshot names %q", name)
		}
		m, err := readMeta[metadata.TargetsType](r.dir, metaName(role, mf.Version))
		if err != nil {
			return nil, err
		}
		if role == metadata.TARGETS {
			st.targets = m
		} else {
			st.delegated[role] = m
		}
	}
	if st.targets == nil {
		return nil, errors.New("snapshot names no targets metadata")
	}
	if st.root, err = r.committedRoot(st); err != nil {
		return nil, err
	}
	return st, nil
}

// committedRoot picks the newest root under which the state timestamp.json
// points at verifies. A root pushed together with new targets keys is
// written before timestamp.json; if the server died in between, that root
// does not verify the old targets metadata and is removed as an orphan.
func (r *Repo) committedRoot(st *state) (*metadata.Metadata[metadata.RootType], error) {
	latest, err := r.latestRootVersion()
	if err != nil {
		return nil, err
	}
	for v := latest; v >= 1; v-- {
		root, err := readMeta[metadata.RootType](r.dir, metaName(metadata.ROOT, v))
		if err != nil {
			return nil, err
		}
		if chainErr := verifyChain(root, st); chainErr == nil {
			return root, nil
		} else if v == 1 {
			return nil, fmt.Errorf("the repository does not verify under any root: %w", chainErr)
		} else {
			r.log.Warn("removing a root left by an interrupted push", "version", v, "err", chainErr)
			if err := os.Remove(filepath.Join(r.dir, metadataDir, metaName(metadata.ROOT, v))); err != nil {
				return nil, fmt.Errorf("removing orphan root: %w", err)
			}
		}
	}
	return nil, errors.New("no root metadata")
}

// verifyChain checks that root's keys sign the state's top-level metadata
// and the targets metadata's delegations sign each delegated role.
func verifyChain(root *metadata.Metadata[metadata.RootType], st *state) error {
	if err := root.VerifyDelegate(metadata.TIMESTAMP, st.timestamp); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	if err := root.VerifyDelegate(metadata.SNAPSHOT, st.snapshot); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, st.targets); err != nil {
		return fmt.Errorf("targets: %w", err)
	}
	for role, m := range st.delegated {
		if err := st.targets.VerifyDelegate(role, m); err != nil {
			return fmt.Errorf("%s: %w", role, err)
		}
	}
	return nil
}

func stringsCutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

var versionedRe = regexp.MustCompile(`^([0-9]+)\.([a-z0-9-]+)\.json$`)

func (r *Repo) latestRootVersion() (int64, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, metadataDir))
	if err != nil {
		return 0, fmt.Errorf("listing metadata: %w", err)
	}
	var best int64
	for _, e := range ents {
		m := versionedRe.FindStringSubmatch(e.Name())
		if m == nil || m[2] != metadata.ROOT {
			continue
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err == nil && v > best {
			best = v
		}
	}
	if best == 0 {
		return 0, errors.New("no root metadata")
	}
	return best, nil
}

// cleanOrphans removes versioned metadata newer than what the current state
// references: leftovers of a publish that crashed before its timestamp was
// written. Their version numbers will be reused, so they must not linger.
// It also clears staging/ and the temporary files of an interrupted upload
// into the default targets/ folder. Complete target files that no metadata
// names stay: they are immutable and unreachable (see targets.go).
func (r *Repo) cleanOrphans() error {
	current := map[string]int64{metadata.SNAPSHOT: r.cur.snapshot.Signed.Version, metadata.TARGETS: r.cur.targets.Signed.Version}
	for role, m := range r.cur.delegated {
		current[role] = m.Signed.Version
	}
	ents, err := os.ReadDir(filepath.Join(r.dir, metadataDir))
	if err != nil {
		return fmt.Errorf("listing metadata: %w", err)
	}
	for _, e := range ents {
		m := versionedRe.FindStringSubmatch(e.Name())
		if m == nil || m[2] == metadata.ROOT {
			continue
		}
		v, _ := strconv.ParseInt(m[1], 10, 64)
		if cv, ok := current[m[2]]; ok && v > cv {
			r.log.Warn("removing metadata left by an interrupted publish", "file", e.Name())
			if err := os.Remove(filepath.Join(r.dir, metadataDir, e.Name())); err != nil {
				return fmt.Errorf("removing orphan: %w", err)
			}
		}
	}
	staging := filepath.Join(r.dir, stagingDir)
	if err := os.RemoveAll(staging); err != nil {
		return fmt.Errorf("clearing staging: %w", err)
	}
	return r.cleanStrandedTemp(r.cur)
}

// resign builds a new snapshot (when snapshotToo) and timestamp over st and
// adds the files to write; it returns the new state without installing it.
func (r *Repo) resign(st *state, files map[string][]byte, now time.Time, snapshotToo bool) (*state, error) {
	next := *st
	if snapshotToo {
		snap := metadata.Snapshot(now.Add(r.exp.Snapshot))
		if st.snapshot != nil {
			snap.Signed.Version = st.snapshot.Signed.Version + 1
		}
		snap.Signed.Meta = map[string]*metadata.MetaFiles{
			"targets.json": metadata.MetaFile(st.targets.Signed.Version),
		}
		for role, m := range st.delegated {
			snap.Signed.Meta[role+".json"] = metadata.MetaFile(m.Signed.Version)
		}
		if _, err := snap.Sign(r.snapshotSigner); err != nil {
			return nil, fmt.Errorf("signing snapshot: %w", err)
		}
		b, err := snap.ToBytes(true)
		if err != nil {
			return nil, fmt.Errorf("encoding snapshot: %w", err)
		}
		files[metaName(metadata.SNAPSHOT, snap.Signed.Version)] = b
		next.snapshot = snap
	}
	snapBytes := files[metaName(metadata.SNAPSHOT, next.snapshot.Signed.Version)]
	if snapBytes == nil {
		var err error
		snapBytes, err = os.ReadFile(filepath.Join(r.dir, metadataDir, metaName(metadata.SNAPSHOT, next.snapshot.Signed.Version)))
		if err != nil {
			return nil, fmt.Errorf("reading snapshot: %w", err)
		}
	}
	ts := metadata.Timestamp(now.Add(r.exp.Timestamp))
	if st.timestamp != nil {
		ts.Signed.Version = st.timestamp.Signed.Version + 1
	}
	mf := metadata.MetaFile(next.snapshot.Signed.Version)
	mf.Length = int64(len(snapBytes))
	h := sha256Sum(snapBytes)
	mf.Hashes = metadata.Hashes{"sha256": h}
	ts.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": mf}
	if _, err := ts.Sign(r.timestampSigner); err != nil {
		return nil, fmt.Errorf("signing timestamp: %w", err)
	}
	b, err := ts.ToBytes(true)
	if err != nil {
		return nil, fmt.Errorf("encoding timestamp: %w", err)
	}
	files["timestamp.json"] = b
	next.timestamp = ts
	next.timestampJSON = b
	return &next, nil
}

// commitFiles writes every versioned file first, new root versions after
// them, and timestamp.json last: its atomic rename is the commit point a
// restart goes by. Readers see the new state only when install swaps it in.
func (r *Repo) commitFiles(files map[string][]byte) error {
	mdir := filepath.Join(r.dir, metadataDir)
	isRoot := func(name string) bool { return strings.HasSuffix(name, "."+metadata.ROOT+".json") }
	for _, roots := range []bool{false, true} {
		for name, b := range files {
			if name == "timestamp.json" || isRoot(name) != roots {
				continue
			}
			if err := atomicfile.WriteFile(filepath.Join(mdir, name), b, 0o644); err != nil {
				return err
			}
		}
	}
	if b, ok := files["timestamp.json"]; ok {
		if err := atomicfile.WriteFile(filepath.Join(mdir, "timestamp.json"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Maintain re-signs snapshot and timestamp when they have used up half of
// their lifetime, so that clients never see them expire while the server
// runs. It reports whether it wrote anything.
func (r *Repo) Maintain(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.publishMu.Lock()
	defer r.publishMu.Unlock()
	now := r.now().UTC().Truncate(time.Second)
	st := r.current()
	snapDue := st.snapshot.Signed.Expires.Sub(now) < r.exp.Snapshot/2
	tsDue := st.timestamp.Signed.Expires.Sub(now) < r.exp.Timestamp/2
	if !snapDue && !tsDue {
		return false, nil
	}
	files := map[string][]byte{}
	next, err := r.resign(st, files, now, snapDue)
	if err != nil {
		return false, err
	}
	if err := r.commitFiles(files); err != nil {
		return false, err
	}
	r.install(next)
	r.log.Info("re-signed online metadata", "snapshot", next.snapshot.Signed.Version, "timestamp", next.timestamp.Signed.Version)
	return true, nil
}

// Run keeps the online metadata fresh until ctx ends.
func (r *Repo) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := r.Maintain(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("re-signing online metadata", "err", err)
			}
		}
	}
}

func (r *Repo) current() *state {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cur
}

func (r *Repo) install(st *state) {
	r.mu.Lock()
	r.cur = st
	r.mu.Unlock()
}

// Dir is the repository's directory.
func (r *Repo) Dir() string { return r.dir }

// Versions reports the current metadata versions.
func (r *Repo) Versions() (root, targets, snapshot, timestamp int64) {
	st := r.current()
	return st.root.Signed.Version, st.targets.Signed.Version, st.snapshot.Signed.Version, st.timestamp.Signed.Version
}

// TrustedRoot returns the bytes of 1.root.json: what a factory provisions
// into a phone. Clients follow the chain of root versions from there.
func (r *Repo) TrustedRoot() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(r.dir, metadataDir, metaName(metadata.ROOT, 1)))
	if err != nil {
		return nil, fmt.Errorf("reading root: %w", err)
	}
	return b, nil
}
