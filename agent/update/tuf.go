package update

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// Provision installs the TUF root a factory gives the phone. It is the only
// trust the phone starts with; every later root must chain from it.
func Provision(stateDir string, root []byte) error {
	var zero metadata.Metadata[metadata.RootType]
	m, err := zero.FromBytes(root)
	if err != nil {
		return fmt.Errorf("provision: the root metadata does not parse: %w", err)
	}
	if err := m.VerifyDelegate(metadata.ROOT, m); err != nil {
		return fmt.Errorf("provision: the root metadata is not signed by its own threshold: %w", err)
	}
	dir := filepath.Join(stateDir, "tuf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "root.json")); err == nil {
		return fmt.Errorf("provision: %s already holds a trusted root", dir)
	}
	return atomicfile.WriteFile(filepath.Join(dir, "root.json"), root, 0o600)
}

// ctxFetcher is go-tuf's one-method Fetcher bound to a context, so that a
// metadata refresh is cancellable (go-tuf's default fetcher is not).
type ctxFetcher struct {
	ctx    context.Context
	client *http.Client
}

func (f *ctxFetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: u}
	}
	if resp.ContentLength > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: length %d exceeds %d", u, resp.ContentLength, maxLength)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: err.Error()}
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: more than %d bytes", u, maxLength)}
	}
	return b, nil
}

// trust is a refreshed, verified view of the repository.
type trust struct {
	u         *updater.Updater
	targetDir string
}

func (a *Agent) refresh(ctx context.Context) (*trust, error) {
	dir := filepath.Join(a.cfg.StateDir, "tuf")
	// Whatever the refresh does, the state reports what the phone now
	// trusts: a phone a mirror holds back must show it (threat A9).
	defer func() { a.tuf = storedVersions(dir) }()
	root, err := os.ReadFile(filepath.Join(dir, "root.json"))
	if err != nil {
		return nil, fmt.Errorf("no trusted root (provision the device first): %w", err)
	}
	base := strings.TrimSuffix(a.cfg.Server, "/") + "/tuf"
	cfg, err := config.New(base+"/metadata", root)
	if err != nil {
		return nil, fmt.Errorf("tuf config: %w", err)
	}
	cfg.RemoteTargetsURL = base + "/targets"
	cfg.LocalMetadataDir = dir
	cfg.LocalTargetsDir = filepath.Join(a.cfg.StateDir, "tuf-targets")
	cfg.Fetcher = &ctxFetcher{ctx: ctx, client: a.http}
	u, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("tuf updater: %w", err)
	}
	u.UnsafeSetRefTime(a.cfg.Now())
	if err := u.Refresh(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classifyTUF(err)
	}
	return &trust{u: u, targetDir: cfg.LocalTargetsDir}, nil
}

// classifyTUF marks verification failures as security refusals; network
// trouble stays a plain failure that the next check retries.
func classifyTUF(err error) error {
	var (
		dl   *metadata.ErrDownload
		dlh  *metadata.ErrDownloadHTTP
		dlen *metadata.ErrDownloadLengthMismatch
	)
	switch {
	case errors.As(err, &dlh), errors.As(err, &dl):
		return fmt.Errorf("refreshing metadata: %w", err)
	case errors.As(err, &dlen):
		return &RefusedError{Reason: "metadata larger than allowed", Err: err}
	}
	return &RefusedError{Reason: "metadata did not verify", Err: err}
}

func isTUFError(err error) bool {
	for _, target := range []error{&metadata.ErrRepository{}, &metadata.ErrDownload{}, &metadata.ErrDownloadHTTP{},
		&metadata.ErrDownloadLengthMismatch{}, &metadata.ErrValue{}, &metadata.ErrType{}, &metadata.ErrRuntime{}} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// storedVersions reads the versions of the metadata go-tuf persisted in
// dir. go-tuf writes a file only once it verified it completely (an expired
// or rolled-back timestamp is held in memory for the checks that follow
// but never persisted), so these are the versions the phone trusts.
func storedVersions(dir string) wire.TUFVersions {
	read := func(name string) int64 {
		f, err := os.Open(filepath.Join(dir, name+".json"))
		if err != nil {
			return 0
		}
		defer f.Close()
		var m struct {
			Signed struct {
				Version int64 `json:"version"`
			} `json:"signed"`
		}
		if json.NewDecoder(io.LimitReader(f, 16<<20)).Decode(&m) != nil {
			return 0
		}
		return m.Signed.Version
	}
	return wire.TUFVersions{Root: read(metadata.ROOT), Timestamp: read(metadata.TIMESTAMP),
		Snapshot: read(metadata.SNAPSHOT), Targets: read(metadata.TARGETS)}
}

// candidate is a firmware target this device could install.
type candidate struct {
	path   string
	info   *metadata.TargetFiles
	custom wire.TargetCustom
	role   string
}

// firmwareTargets lists the verified firmware targets for model. go-tuf's
// updater loads delegated roles lazily, on the walk for a path; a probe path
// under the model's folder makes it load every role delegated that folder.
func (t *trust) firmwareTargets(model string) ([]candidate, error) {
	prefix := "firmware/" + model + "/"
	if _, err := t.u.GetTargetInfo(prefix + ".probe"); err != nil && isTUFError(err) {
		// The probe itself is never found (a plain error); a typed go-tuf
		// error means a delegated role failed to load or verify.
		return nil, classifyTUF(err)
	}
	set := t.u.GetTrustedMetadataSet()
	seen := map[string]bool{}
	var out []candidate
	for role, md := range set.Targets {
		for p := range md.Signed.Targets {
			if !strings.HasPrefix(p, prefix) || strings.HasSuffix(p, ".sig") || seen[p] {
				continue
			}
			seen[p] = true
			// Ask again through the delegation walk: only the role that is
			// trusted for the path decides what it is.
			info, err := t.u.GetTargetInfo(p)
			if err != nil {
				continue
			}
			c := candidate{path: p, info: info}
			if info.Custom == nil || json.Unmarshal(*info.Custom, &c.custom) != nil {
				continue
			}
			c.role = t.roleFor(p, info)
			if c.role == "" {
				c.role = role
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// roleFor finds the delegated role whose metadata holds the target as the
// trusted walk resolved it.
func (t *trust) roleFor(path string, info *metadata.TargetFiles) string {
	set := t.u.GetTrustedMetadataSet()
	top := set.Targets[metadata.TARGETS]
	if top == nil || top.Signed.Delegations == nil {
		return ""
	}
	for _, rr := range top.Signed.Delegations.GetRolesForTarget(path) {
		md, ok := set.Targets[rr.Name]
		if !ok {
			continue
		}
		if tf, ok := md.Signed.Targets[path]; ok && tf.Equal(*info) {
			return rr.Name
		}
		if rr.Terminating {
			break
		}
	}
	return ""
}

// publisherKeys are the keys the top-level targets metadata pins for role:
// the only keys whose bundle signatures this device accepts.
func (t *trust) publisherKeys(role string) []crypto.PublicKey {
	top := t.u.GetTrustedMetadataSet().Targets[metadata.TARGETS]
	if top == nil || top.Signed.Delegations == nil {
		return nil
	}
	var out []crypto.PublicKey
	for _, r := range top.Signed.Delegations.Roles {
		if r.Name != role {
			continue
		}
		for _, id := range r.KeyIDs {
			if k, ok := top.Signed.Delegations.Keys[id]; ok {
				if pub, err := k.ToPublicKey(); err == nil {
					out = append(out, pub)
				}
			}
		}
	}
	return out
}

// smallTarget downloads a small target (a signature) through go-tuf, which
// checks its length and hashes.
func (t *trust) smallTarget(ctx context.Context, path string, max int64) ([]byte, error) {
	info, err := t.u.GetTargetInfo(path)
	if err != nil {
		return nil, &RefusedError{Reason: "signature target missing from trusted metadata", Err: err}
	}
	if info.Length > max {
		return nil, &RefusedError{Reason: fmt.Sprintf("signature target of %d bytes exceeds %d", info.Length, max)}
	}
	_, data, err := t.u.DownloadTarget(info, filepath.Join(t.targetDir, filepath.Base(path)), "")
	if err != nil {
		var lh *metadata.ErrLengthOrHashMismatch
		if errors.As(err, &lh) {
			return nil, &RefusedError{Reason: "signature file does not match trusted metadata", Err: err}
		}
		return nil, fmt.Errorf("downloading %s: %w", path, err)
	}
	return data, ctx.Err()
}
