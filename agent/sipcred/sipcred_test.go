package sipcred

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// api stands in for the server's GET /v1/device/sip-credential (the real
// route is exercised by hack/e2e/sip_test.go): it authenticates the device
// by the CN of its client certificate and answers as the contract says.
type api struct {
	srv   *httptest.Server
	pki   *testutil.PKI
	calls atomic.Int64

	mu       sync.Mutex
	password map[string]string // device → password
	trusted  map[string]bool
	body     []byte // when set, the raw 200 body
}

func newAPI(t *testing.T) *api {
	t.Helper()
	a := &api{pki: testutil.NewPKI(t, t.TempDir(), "ca"), password: map[string]string{}, trusted: map[string]bool{}}
	_, _, cert := a.pki.Issue(t, "127.0.0.1", true)
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: a.pki.Pool}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *api) serve(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	fail := func(status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": "refused: " + code, "code": code})
	}
	if r.Method != http.MethodGet || r.URL.Path != Path {
		fail(http.StatusNotFound, "not-found")
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		fail(http.StatusUnauthorized, wire.SIPNoDeviceCert)
		return
	}
	dev := r.TLS.PeerCertificates[0].Subject.CommonName
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.body != nil {
		w.Write(a.body)
		return
	}
	if !a.trusted[dev] {
		fail(http.StatusForbidden, wire.SIPUntrusted)
		return
	}
	pw, ok := a.password[dev]
	if !ok {
		fail(http.StatusNotFound, wire.SIPNoCredential)
		return
	}
	json.NewEncoder(w).Encode(wire.SIPCredential{Device: dev, Tenant: "default", Password: pw, Updated: time.Now().UTC()})
}

func (a *api) set(device, pw string, trusted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.password[device] = pw
	a.trusted[device] = trusted
}

// client is an HTTP client presenting a certificate for device (nil: none).
func (a *api) client(t *testing.T, device string) *http.Client {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.pki.Pool}
	if device != "" {
		cfg = a.pki.ClientTLS(t, device)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

func sharedTPM(t *testing.T, sw *testutil.Swtpm) *tpm.Shared {
	t.Helper()
	tp, err := tpm.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	s := tpm.NewShared(tp)
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T, a *api, device string, tp TPM, dir string) *Store {
	t.Helper()
	s, err := New(Config{HTTP: a.client(t, device), Server: a.srv.URL, Device: "phone-1", TPM: tp, Dir: dir, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSealedCredential: the password is fetched once, sealed to the
// phone's swtpm, never on disk in clear, and comes back from the sealed
// file after a TPM restart without asking the server; another TPM cannot
// unseal the file, and a corrupted file is refused with a clear error and
// fetched again.
func TestSealedCredential(t *testing.T) {
	ctx := context.Background()
	a := newAPI(t)
	const pw = "s3cr3t-sip-password"
	a.set("phone-1", pw, true)
	sw := testutil.StartSwtpm(t)
	tp := sharedTPM(t, sw)
	dir := filepath.Join(t.TempDir(), "sip")
	s := newStore(t, a, "phone-1", tp, dir)

	if _, err := s.Load(ctx); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load before any fetch = %v, want ErrNotExist", err)
	}
	c, err := s.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Password != pw || a.calls.Load() != 1 {
		t.Fatalf("Get = %q after %d calls; want %q after 1", c.Password, a.calls.Load(), pw)
	}
	if strings.Contains(c.String(), pw) {
		t.Fatal("the credential's String shows the password")
	}
	testutil.NoFileHolds(t, dir, pw)
	file := filepath.Join(dir, PasswordFile)
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed file: %v, %v; want mode 0600", fi, err)
	}

	// A reboot: the TPM restarts, a new store unseals without the server.
	tp.Close()
	sw.Kill()
	sw.Start()
	tp = sharedTPM(t, sw)
	s = newStore(t, a, "phone-1", tp, dir)
	if c, err := s.Get(ctx); err != nil || c.Password != pw {
		t.Fatalf("Get after a TPM restart = %q, %v", c.Password, err)
	}
	if n := a.calls.Load(); n != 1 {
		t.Fatalf("the server was asked %d times; the sealed password should have served", n)
	}

	// Another phone's TPM with this phone's files: nothing unseals.
	otherDir := filepath.Join(t.TempDir(), "sip")
	copyDir(t, dir, otherDir)
	other := newStore(t, a, "phone-1", sharedTPM(t, testutil.StartSwtpm(t)), otherDir)
	if c, err := other.Load(ctx); !errors.Is(err, ErrUnseal) {
		t.Fatalf("Load on another TPM = %q, %v; want ErrUnseal", c.Password, err)
	}

	// A corrupted file: a clear error, then Get fetches and seals afresh.
	blob, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)-1] ^= 0x55
	if err := os.WriteFile(file, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Load(ctx)
	if !errors.Is(err, ErrUnseal) || !strings.Contains(err.Error(), "sealed sip password unusable") {
		t.Fatalf("Load of a corrupted file = %v; want ErrUnseal", err)
	}
	garbage := []byte("not a sealed blob at all")
	if err := os.WriteFile(file, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, ErrUnseal) || !errors.Is(err, tpm.ErrSealedBlob) {
		t.Fatalf("Load of garbage = %v; want ErrUnseal and tpm.ErrSealedBlob", err)
	}
	before := a.calls.Load()
	if c, err := s.Get(ctx); err != nil || c.Password != pw {
		t.Fatalf("Get after corruption = %q, %v", c.Password, err)
	}
	if a.calls.Load() != before+1 {
		t.Fatal("a corrupted sealed file did not make Get fetch again")
	}
	if c, err := s.Load(ctx); err != nil || c.Password != pw {
		t.Fatalf("Load after the refetch = %q, %v", c.Password, err)
	}

	// A crash between writing the sealed password and its record: the
	// record names another sealed file. Load refuses the pair; Get fetches.
	rec := filepath.Join(dir, metaFile)
	old, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rec, bytes.Replace(old, []byte(`"sealed_sha256":"`), []byte(`"sealed_sha256":"00`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, ErrUnseal) {
		t.Fatalf("Load with a record of another sealed file = %v; want ErrUnseal", err)
	}
	before = a.calls.Load()
	if c, err := s.Get(ctx); err != nil || c.Password != pw || a.calls.Load() != before+1 {
		t.Fatalf("Get after a torn write = %q, %v (%d calls)", c.Password, err, a.calls.Load()-before)
	}

	// The registrar refuses the old password: Refresh takes the new one.
	const pw2 = "r0tated-password"
	a.set("phone-1", pw2, true)
	if c, err := s.Refresh(ctx); err != nil || c.Password != pw2 {
		t.Fatalf("Refresh = %q, %v", c.Password, err)
	}
	if c, err := newStore(t, a, "phone-1", tp, dir).Load(ctx); err != nil || c.Password != pw2 {
		t.Fatalf("Load after Refresh = %q, %v", c.Password, err)
	}
	testutil.NoFileHolds(t, dir, pw2)
}

// TestRefusals: an untrusted device, a device without a password and a
// client without a certificate get nothing, and nothing is written.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	a := newAPI(t)
	tp := sharedTPM(t, testutil.StartSwtpm(t))
	a.set("phone-1", "pw-untrusted", false)
	for _, tc := range []struct {
		name   string
		device string
		want   error
	}{
		{"untrusted", "phone-1", ErrUntrusted},
		{"unknown device", "phone-2", ErrUntrusted},
		{"no certificate", "", ErrUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "sip")
			s := newStore(t, a, tc.device, tp, dir)
			c, err := s.Get(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Get = %q, %v; want %v", c.Password, err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, PasswordFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a refused fetch left a sealed file: %v", err)
			}
		})
	}
	// Trusted, but no password set.
	a.mu.Lock()
	a.trusted["phone-1"] = true
	delete(a.password, "phone-1")
	a.mu.Unlock()
	s := newStore(t, a, "phone-1", tp, filepath.Join(t.TempDir(), "sip"))
	if _, err := s.Get(ctx); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("Get without a password set = %v, want ErrNoCredential", err)
	}
	var se *ServerError
	if _, err := s.Get(ctx); !errors.As(err, &se) || se.Code != wire.SIPNoCredential {
		t.Fatalf("Get = %v; want a ServerError with code no-credential", err)
	}
}

// TestBadAnswers: answers that are not a usable credential for this
// device are refused before anything is sealed.
func TestBadAnswers(t *testing.T) {
	ctx := context.Background()
	a := newAPI(t)
	tp := sharedTPM(t, testutil.StartSwtpm(t))
	for _, tc := range []struct {
		name string
		body string
	}{
		{"another device", `{"device":"phone-2","tenant":"default","password":"x"}`},
		{"empty password", `{"device":"phone-1","tenant":"default","password":""}`},
		{"password too long", `{"device":"phone-1","tenant":"default","password":"` + strings.Repeat("p", tpm.MaxSealedSecret+1) + `"}`},
		{"control character", `{"device":"phone-1","tenant":"default","password":"a\r\nb"}`},
		{"not JSON", `password=x`},
		{"oversized", `{"device":"phone-1","password":"x","pad":"` + strings.Repeat("a", maxAnswer) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.mu.Lock()
			a.body = []byte(tc.body)
			a.mu.Unlock()
			dir := filepath.Join(t.TempDir(), "sip")
			s := newStore(t, a, "phone-1", tp, dir)
			if _, err := s.Get(ctx); !errors.Is(err, ErrBadCredential) {
				t.Fatalf("Get = %v, want ErrBadCredential", err)
			}
			if _, err := os.Stat(filepath.Join(dir, PasswordFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a bad answer left a sealed file: %v", err)
			}
		})
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzParseAnswer(f *testing.F) {
	f.Add([]byte(`{"device":"phone-1","tenant":"default","password":"pw","updated":"2024-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"device":"phone-1","auth_user":"u","password":"pw"}`))
	f.Add([]byte(`{"device":"phone-2","password":"pw"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseAnswer(b, "phone-1")
		if err != nil {
			if !errors.Is(err, ErrBadCredential) {
				t.Fatalf("error %v does not wrap ErrBadCredential", err)
			}
			return
		}
		if len(c.Password) == 0 || len(c.Password) > tpm.MaxSealedSecret || strings.ContainsFunc(c.Password, isControl) {
			t.Fatalf("accepted password %q", c.Password)
		}
	})
}
