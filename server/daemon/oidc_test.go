package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/auth/oidc"
	"github.com/dialtone-dev/dialtone/server/auth/oidc/oidctest"
)

type refuseAll struct{}

func (refuseAll) IssueOIDCSession(context.Context, oidc.Identity) (string, time.Time, error) {
	return "", time.Time{}, oidc.ErrUnknownIdentity
}

func TestOIDCHandlerWiring(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	if h, err := oidcHandler(t.Context(), Options{DataDir: dir}, struct{}{}, log); h != nil || err != nil {
		t.Fatalf("SSO off: %v %v", h, err)
	}
	op := oidctest.Start(t)
	o := Options{DataDir: dir, OIDC: OIDCOptions{Issuer: op.Issuer, ClientID: "dialtone", ClientSecret: "s",
		RedirectURL: "https://dialtone.example/v1/oidc/callback"}}
	if _, err := oidcHandler(t.Context(), o, struct{}{}, log); err == nil || !strings.Contains(err.Error(), "IssueOIDCSession") {
		t.Fatalf("accounts without IssueOIDCSession: %v", err)
	}
	h, err := oidcHandler(t.Context(), o, refuseAll{}, log)
	if err != nil || h == nil {
		t.Fatalf("SSO on: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, OIDCStateKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("state key: %v %v", fi, err)
	}
	key, _ := os.ReadFile(filepath.Join(dir, OIDCStateKeyFile))
	again, err := oidcKey(filepath.Join(dir, OIDCStateKeyFile))
	if err != nil || string(again) != string(key) {
		t.Fatalf("state key changed on the second start: %v", err)
	}
	short := filepath.Join(dir, "short.key")
	_ = os.WriteFile(short, []byte("short"), 0o600)
	if _, err := oidcKey(short); err == nil {
		t.Error("accepted a 5-byte key")
	}
}
