package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// Config targets (the SIP profile, DESIGN.md §7) come from the same TUF
// repository as firmware, delegated to a config role: the phone trusts
// them exactly as far as its root lets it. They are fetched on their own
// updater so that a config check never waits for a firmware download.

// ErrNoConfig means none of the asked config paths is a target.
var ErrNoConfig = errors.New("no config target")

// ConfigSource says where config targets come from: the agent's server
// and state directory (the trusted metadata it shares with the firmware
// updates).
type ConfigSource struct {
	Server   string
	StateDir string
	HTTP     *http.Client // nil: the system's roots
	Now      func() time.Time
}

// ConfigFile is one verified config target.
type ConfigFile struct {
	Path   string
	Data   []byte
	SHA256 string // hex
}

// configMu serialises config fetches in this process: each refreshes the
// metadata in the shared state directory.
var configMu sync.Mutex

// FetchConfig refreshes the TUF metadata and returns the first of paths
// that is a target, downloaded and checked against its length and hashes;
// a target over max bytes is refused. ErrNoConfig when none is a target; a
// *RefusedError when the metadata or the file does not verify.
func FetchConfig(ctx context.Context, src ConfigSource, max int64, paths ...string) (ConfigFile, error) {
	configMu.Lock()
	defer configMu.Unlock()
	if src.Now == nil {
		src.Now = time.Now
	}
	hc := src.HTTP
	if hc == nil {
		hc = &http.Client{Transport: NewTransport(nil)}
	}
	dir := filepath.Join(src.StateDir, "tuf")
	root, err := os.ReadFile(filepath.Join(dir, "root.json"))
	if err != nil {
		return ConfigFile{}, fmt.Errorf("no trusted root (provision the device first): %w", err)
	}
	base := strings.TrimSuffix(src.Server, "/") + "/tuf"
	cfg, err := config.New(base+"/metadata", root)
	if err != nil {
		return ConfigFile{}, fmt.Errorf("tuf config: %w", err)
	}
	cfg.RemoteTargetsURL = base + "/targets"
	cfg.LocalMetadataDir = dir
	cfg.LocalTargetsDir = filepath.Join(src.StateDir, "tuf-config")
	cfg.Fetcher = &ctxFetcher{ctx: ctx, client: hc}
	if err := os.MkdirAll(cfg.LocalTargetsDir, 0o700); err != nil {
		return ConfigFile{}, err
	}
	u, err := updater.New(cfg)
	if err != nil {
		return ConfigFile{}, fmt.Errorf("tuf updater: %w", err)
	}
	u.UnsafeSetRefTime(src.Now())
	if err := u.Refresh(); err != nil {
		if ctx.Err() != nil {
			return ConfigFile{}, ctx.Err()
		}
		return ConfigFile{}, classifyTUF(err)
	}
	for _, p := range paths {
		info, err := u.GetTargetInfo(p)
		if err != nil {
			if isTUFError(err) {
				// A delegated role failed to load or verify.
				return ConfigFile{}, classifyTUF(err)
			}
			continue // not a target
		}
		if info.Length > max {
			return ConfigFile{}, &RefusedError{Reason: fmt.Sprintf("config target %s of %d bytes exceeds %d", p, info.Length, max)}
		}
		local := filepath.Join(cfg.LocalTargetsDir, strings.ReplaceAll(p, "/", "_"))
		_, data, err := u.DownloadTarget(info, local, "")
		if err != nil {
			if ctx.Err() != nil {
				return ConfigFile{}, ctx.Err()
			}
			var lh *metadata.ErrLengthOrHashMismatch
			if errors.As(err, &lh) {
				return ConfigFile{}, &RefusedError{Reason: "config file does not match trusted metadata", Err: err}
			}
			return ConfigFile{}, fmt.Errorf("downloading %s: %w", p, err)
		}
		sum := sha256.Sum256(data)
		return ConfigFile{Path: p, Data: data, SHA256: hex.EncodeToString(sum[:])}, nil
	}
	return ConfigFile{}, fmt.Errorf("%w: none of %s", ErrNoConfig, strings.Join(paths, ", "))
}
