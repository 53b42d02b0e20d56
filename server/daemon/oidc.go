package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/auth/oidc"
)

// OIDCStateKeyFile, in the data directory, holds the key that signs SSO
// state cookies and seals CLI hand-off codes, made on first use. Replicas
// behind one address must share it (OIDCOptions.KeyFile).
const OIDCStateKeyFile = "oidc-state.key"

// OIDCOptions configure single sign-on; an empty Issuer leaves it off.
type OIDCOptions struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// RedirectURL is https://HOST/v1/oidc/callback as registered at the
	// provider.
	RedirectURL    string
	AllowedDomains []string
	// KeyFile holds at least 32 random bytes; default
	// DataDir/OIDCStateKeyFile, created if missing.
	KeyFile string
}

// oidcHandler builds the /v1/oidc/ handler, or nil when SSO is off.
// accounts must issue SSO sessions (api.SessionIssuer).
func oidcHandler(ctx context.Context, o Options, accounts any, log *slog.Logger) (http.Handler, error) {
	c := o.OIDC
	if c.Issuer == "" {
		return nil, nil
	}
	sessions, ok := accounts.(api.SessionIssuer)
	if !ok {
		return nil, errors.New("single sign-on is configured but the account service cannot issue SSO sessions (IssueOIDCSession)")
	}
	keyFile := c.KeyFile
	if keyFile == "" {
		keyFile = filepath.Join(o.DataDir, OIDCStateKeyFile)
	}
	key, err := oidcKey(keyFile)
	if err != nil {
		return nil, err
	}
	rp, err := oidc.New(oidc.Config{Issuer: c.Issuer, ClientID: c.ClientID, ClientSecret: c.ClientSecret,
		RedirectURL: c.RedirectURL, AllowedDomains: c.AllowedDomains, Key: key})
	if err != nil {
		return nil, err
	}
	// The provider may be down at start: logins retry discovery.
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rp.Discover(dctx); err != nil {
		log.Warn("single sign-on: provider discovery failed; retried at the next login", "issuer", c.Issuer, "err", err)
	}
	return api.NewOIDC(rp, sessions, log)
}

// oidcKey reads the state key in path, making it on first use.
func oidcKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b = make([]byte, 32)
		_, _ = rand.Read(b)
		if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("writing the SSO state key: %w", err)
		}
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the SSO state key: %w", err)
	}
	if len(b) < oidc.MinKeyBytes {
		return nil, fmt.Errorf("SSO state key %s: want at least %d bytes", path, oidc.MinKeyBytes)
	}
	return b, nil
}
