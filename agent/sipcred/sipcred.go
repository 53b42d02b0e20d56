// Package sipcred owns the phone's SIP password: fetched from the server
// over mTLS with the device certificate (the server releases it only while
// the device's attestation is trusted), sealed to the TPM, and kept in the
// state directory only as the sealed blob (DESIGN.md §5, §7). The password
// is never written to disk in clear and never logged.
package sipcred

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Files in Config.Dir.
const (
	// PasswordFile is the password sealed to the TPM (tpm.SealedBlob).
	PasswordFile = "password.sealed"
	// metaFile is what is not secret about the credential: the digest
	// user the server named and when the password was set.
	metaFile = "credential.json"
)

// Path is the API route that releases a device's SIP credential.
const Path = wire.SIPCredentialPath

// maxAnswer bounds what is read of the server's answer: a password is at
// most tpm.MaxSealedSecret bytes, the rest is a few short fields.
const maxAnswer = 16 << 10

// Errors of Fetch and Get; a *ServerError matches the one of its status.
var (
	// ErrUntrusted: the server refuses while the device's attestation is
	// not trusted (403 untrusted).
	ErrUntrusted = errors.New("device attestation not trusted")
	// ErrNoCredential: no SIP password is set for the device (404).
	ErrNoCredential = errors.New("no sip credential set for the device")
	// ErrUnauthenticated: the server did not accept the device
	// certificate, or none was presented (401).
	ErrUnauthenticated = errors.New("device certificate not accepted")
	// ErrBadCredential: the server's answer is not a usable credential.
	ErrBadCredential = errors.New("bad sip credential")
	// ErrUnseal: the sealed password did not come back from the TPM (a
	// corrupted file, another TPM, a cleared owner hierarchy).
	ErrUnseal = errors.New("sealed sip password unusable")
)

// ServerError is a refusal from the server.
type ServerError struct {
	Status  int
	Code    string // the code field of the JSON body (wire.SIPUntrusted, …)
	Message string // its error field: why
}

func (e *ServerError) Error() string {
	msg := fmt.Sprintf("server refused the sip credential: %d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is maps the status to this package's sentinels.
func (e *ServerError) Is(target error) bool {
	switch target {
	case ErrUntrusted:
		return e.Status == http.StatusForbidden
	case ErrNoCredential:
		return e.Status == http.StatusNotFound
	case ErrUnauthenticated:
		return e.Status == http.StatusUnauthorized
	}
	return false
}

// TPM is what the store needs of the phone's TPM (agent/tpm.Shared):
// sealing and unsealing load objects, so they run with the TPM to
// themselves.
type TPM interface {
	Exclusive(ctx context.Context, fn func(transport.TPM) error) error
}

// Config configures a Store.
type Config struct {
	// HTTP reaches the API and presents the device certificate (mTLS).
	HTTP   *http.Client
	Server string // https://HOST:PORT
	Device string
	TPM    TPM
	// Dir keeps the sealed password (STATE/sip).
	Dir    string
	Logger *slog.Logger
}

// Credential is a SIP digest credential.
type Credential struct {
	// AuthUser, when set, is the digest user name the server assigned; it
	// overrides the profile's.
	AuthUser string
	Password string
	Updated  time.Time
}

// String keeps the password out of logs and %v.
func (c Credential) String() string {
	return fmt.Sprintf("sip credential (auth user %q, updated %s)", c.AuthUser, c.Updated.Format(time.RFC3339))
}

// meta is metaFile's content. Sealed is the SHA-256 of the sealed file it
// goes with: the two are written one after the other, and a crash between
// them must not pair a new password with an old auth user.
type meta struct {
	AuthUser string    `json:"auth_user,omitempty"`
	Updated  time.Time `json:"updated"`
	Sealed   string    `json:"sealed_sha256"`
}

// Store keeps the device's SIP credential.
type Store struct {
	c   Config
	log *slog.Logger
	mu  sync.Mutex // one fetch or unseal at a time
}

// New checks c and creates c.Dir.
func New(c Config) (*Store, error) {
	if c.HTTP == nil || c.Server == "" || !wire.ValidID(c.Device) || c.TPM == nil || c.Dir == "" {
		return nil, errors.New("sipcred: http client, server, device, tpm and dir are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sipcred: %w", err)
	}
	return &Store{c: c, log: c.Logger}, nil
}

// Get returns the credential: unsealed from the state directory when it
// is there, else fetched from the server and sealed. A sealed file that
// does not unseal is logged and replaced by a fresh fetch.
func (s *Store) Get(ctx context.Context) (Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.load(ctx)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no sealed sip password: fetching it from the server")
	default:
		s.log.Warn("the sealed sip password is unusable: fetching it again", "err", err)
	}
	return s.refreshLocked(ctx)
}

// Refresh fetches the credential from the server, seals it and replaces
// the sealed file: when the registrar refuses the current password.
func (s *Store) Refresh(ctx context.Context) (Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshLocked(ctx)
}

// Load returns the sealed credential without asking the server: an error
// wrapping fs.ErrNotExist when there is none, ErrUnseal when it does not
// unseal.
func (s *Store) Load(ctx context.Context) (Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load(ctx)
}

func (s *Store) load(ctx context.Context) (Credential, error) {
	blob, err := tpm.ReadSealedBlob(filepath.Join(s.c.Dir, PasswordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Credential{}, err
	}
	if err != nil {
		return Credential{}, fmt.Errorf("%w: %w", ErrUnseal, err)
	}
	var pw []byte
	err = s.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		var err error
		pw, err = tpm.Unseal(t, blob)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return Credential{}, ctx.Err()
		}
		return Credential{}, fmt.Errorf("%w: %w", ErrUnseal, err)
	}
	b, err := os.ReadFile(filepath.Join(s.c.Dir, metaFile))
	var m meta
	if err != nil || len(b) > maxAnswer || json.Unmarshal(b, &m) != nil || m.Sealed != sealedSum(blob) {
		return Credential{}, fmt.Errorf("%w: its record (%s) is missing or belongs to another sealed password", ErrUnseal, metaFile)
	}
	return Credential{Password: string(pw), AuthUser: m.AuthUser, Updated: m.Updated}, nil
}

func (s *Store) refreshLocked(ctx context.Context) (Credential, error) {
	c, err := s.fetch(ctx)
	if err != nil {
		return Credential{}, err
	}
	var blob tpm.SealedBlob
	err = s.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		var err error
		blob, err = tpm.Seal(t, []byte(c.Password))
		return err
	})
	if err != nil {
		return Credential{}, fmt.Errorf("sealing the sip password: %w", err)
	}
	// The sealed password, then its record naming it: after a crash
	// between the two, load refuses the pair and Get fetches again.
	if err := blob.WriteFile(filepath.Join(s.c.Dir, PasswordFile)); err != nil {
		return Credential{}, err
	}
	m, _ := json.Marshal(meta{AuthUser: c.AuthUser, Updated: c.Updated, Sealed: sealedSum(blob)})
	if err := atomicfile.WriteFile(filepath.Join(s.c.Dir, metaFile), m, 0o600); err != nil {
		return Credential{}, err
	}
	s.log.Info("sip password fetched and sealed to the TPM", "updated", c.Updated)
	return c, nil
}

// fetch asks the server for the credential over the device's mTLS
// connection.
func (s *Store) fetch(ctx context.Context) (Credential, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.c.Server, "/")+Path, nil)
	if err != nil {
		return Credential{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.c.HTTP.Do(req)
	if err != nil {
		return Credential{}, fmt.Errorf("fetching the sip credential: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return Credential{}, fmt.Errorf("reading the sip credential: %w", err)
	}
	if len(b) > maxAnswer {
		return Credential{}, fmt.Errorf("%w: answer over %d bytes", ErrBadCredential, maxAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(b, &e) != nil {
			e.Error = strings.TrimSpace(string(b))
		}
		return Credential{}, &ServerError{Status: resp.StatusCode, Code: truncate(e.Code, 64), Message: truncate(e.Error, 200)}
	}
	return parseAnswer(b, s.c.Device)
}

// parseAnswer decodes and checks the server's answer for device.
func parseAnswer(b []byte, device string) (Credential, error) {
	var a wire.SIPCredential
	if err := json.Unmarshal(b, &a); err != nil {
		return Credential{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
	}
	if a.Device != device {
		return Credential{}, fmt.Errorf("%w: for device %q, not %q", ErrBadCredential, truncate(a.Device, 64), device)
	}
	if len(a.Password) == 0 || len(a.Password) > min(wire.MaxSIPPassword, tpm.MaxSealedSecret) {
		return Credential{}, fmt.Errorf("%w: password must be 1 to %d bytes", ErrBadCredential, min(wire.MaxSIPPassword, tpm.MaxSealedSecret))
	}
	if strings.ContainsFunc(a.Password, isControl) || strings.ContainsFunc(a.AuthUser, isControl) || len(a.AuthUser) > 256 {
		return Credential{}, fmt.Errorf("%w: control characters or an over-long auth user", ErrBadCredential)
	}
	return Credential{AuthUser: a.AuthUser, Password: a.Password, Updated: a.Updated}, nil
}

// sealedSum identifies a sealed file's content.
func sealedSum(b tpm.SealedBlob) string {
	h := sha256.Sum256(b.Marshal())
	return hex.EncodeToString(h[:])
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
