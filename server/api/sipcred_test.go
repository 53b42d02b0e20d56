package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/devca"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/store"
)

// sipStore is what the SIP credential tests need of a store: SQLite and
// PostgreSQL both.
type sipStore interface {
	store.Store
	store.Tokens
	store.Audit
	store.Attestations
	store.SIPCredentials
}

// forEachSIPStore runs fn on a fresh SQLite store and a fresh PostgreSQL
// schema.
func forEachSIPStore(t *testing.T, fn func(t *testing.T, st sipStore)) {
	forEachStore(t, "dialtone_sip_test_", func(t *testing.T, st testStore) { fn(t, st) })
}

// sipServer is the API over TLS that accepts device certificates, as the
// daemon serves it, with a real device CA, attestation service and store.
type sipServer struct {
	t     *testing.T
	st    sipStore
	srv   *httptest.Server
	dca   *devca.CA
	clock *clock
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const sipPeriod = time.Hour

func newSIPServer(t *testing.T, st sipStore) *sipServer {
	t.Helper()
	s := &sipServer{t: t, st: st, clock: &clock{now: time.Now().UTC()}}
	var err error
	if s.dca, err = devca.Open(filepath.Join(t.TempDir(), "devca")); err != nil {
		t.Fatal(err)
	}
	svc, err := attest.NewService(attest.Options{Store: st, Targets: noTargets{}, Period: sipPeriod, Now: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	box, err := sipsecret.OpenKeyFile(filepath.Join(t.TempDir(), "keys", sipsecret.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Repo: quietRepo{}, Devices: st, Tokens: st, Audit: st, AdminToken: token,
		Attest: svc, Enrollment: st, DeviceCA: s.dca, SIPCredentials: st, SIPBox: box})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewUnstartedServer(a)
	s.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: s.dca.Pool()}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sipServer) device(tenant, id, attestation string, at time.Time) {
	s.t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	if err := s.st.UpsertState(ctx, tenant, wire.State{Schema: wire.SchemaVersion, Tenant: tenant, Device: id, Model: "dt100",
		Hardware: "r1", Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now); err != nil {
		s.t.Fatal(err)
	}
	if attestation != "" {
		if err := s.st.SetAttestation(ctx, id, attestation, at); err != nil {
			s.t.Fatal(err)
		}
	}
}

// token makes an API token of role in tenant and returns its secret.
func (s *sipServer) token(id, tenant, role string) string {
	s.t.Helper()
	secret := APITokenPrefix + "sip-" + id
	now := time.Now().UTC()
	if err := s.st.CreateToken(context.Background(), store.Token{ID: id, Hash: sha256Sum(secret), Tenant: tenant, Role: role,
		Created: now.Add(-time.Minute), Expires: now.Add(time.Hour)}); err != nil {
		s.t.Fatal(err)
	}
	return secret
}

// deviceClient presents a certificate the device CA issued for tenant/id
// (nil ca: no certificate; a foreign ca: one of another CA).
func (s *sipServer) deviceClient(tenant, id string) *http.Client {
	s.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	_, der, err := s.dca.Issue(devca.Identity{Tenant: tenant, DeviceID: id}, &key.PublicKey, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.clientWith(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
}

func (s *sipServer) clientWith(cert *tls.Certificate) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(s.srv.Certificate())
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

type answer struct {
	code int
	body []byte
	hdr  http.Header
	err  errorBody
}

func (s *sipServer) do(c *http.Client, method, path, bearer string, body []byte) answer {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.srv.URL+path, bytes.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{code: resp.StatusCode, body: b, hdr: resp.Header}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &a.err); err != nil || a.err.Error == "" {
			s.t.Errorf("%s %s: %d answer %q is not the error shape", method, path, resp.StatusCode, b)
		}
	}
	return a
}

func (s *sipServer) fetch(c *http.Client) answer {
	s.t.Helper()
	return s.do(c, http.MethodGet, wire.SIPCredentialPath, "", nil)
}

func TestSIPCredentialRelease(t *testing.T) { forEachSIPStore(t, testSIPCredentialRelease) }

func testSIPCredentialRelease(t *testing.T, st sipStore) {
	s := newSIPServer(t, st)
	ctx := context.Background()
	now := s.clock.Now()
	s.device("acme", "p1", attest.Trusted, now.Add(-time.Minute))
	s.device("acme", "bad", attest.Untrusted, now.Add(-time.Minute))
	s.device("acme", "old", attest.Trusted, now.Add(-sipPeriod-time.Minute)) // stale, not yet swept
	s.device("acme", "new", "", time.Time{})                                 // never attested
	s.device("acme", "empty", attest.Trusted, now.Add(-time.Minute))         // no credential
	s.device("beta", "q1", attest.Trusted, now.Add(-time.Minute))
	op := s.token("op", "acme", auth.RoleOperator)
	plain := s.clientWith(nil)

	const password = "correct horse battery staple ü"
	body, _ := json.Marshal(SIPCredentialRequest{Password: password, AuthUser: "1001"})
	for _, dev := range []string{"p1", "bad", "old", "new", "q1"} {
		bearer := op
		if dev == "q1" {
			bearer = token // the platform admin, for beta's device
		}
		if a := s.do(plain, http.MethodPut, "/v1/devices/"+dev+"/sip-credential", bearer, body); a.code != http.StatusOK {
			t.Fatalf("setting %s's credential: %d %s", dev, a.code, a.body)
		}
	}

	// The database holds a ciphertext, not the password.
	ct, tenant, _, err := st.SIPCredential(ctx, "p1")
	if err != nil || tenant != "acme" {
		t.Fatalf("stored: %v, tenant %q", err, tenant)
	}
	if bytes.Contains(ct, []byte(password)) || bytes.Contains(ct, []byte("horse")) || bytes.Contains(ct, []byte("1001")) {
		t.Fatalf("the stored ciphertext %x holds the password or user name in the clear", ct)
	}

	// A trusted device gets its own credential, uncached.
	a := s.fetch(s.deviceClient("acme", "p1"))
	if a.code != http.StatusOK {
		t.Fatalf("trusted device: %d %s", a.code, a.body)
	}
	var got wire.SIPCredential
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Device != "p1" || got.Tenant != "acme" || got.Password != password || got.AuthUser != "1001" || got.Updated.IsZero() {
		t.Fatalf("released %+v", got)
	}
	if cc := a.hdr.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}

	// Refusals, and what they say.
	foreignKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "p1"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	foreignDER, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &foreignKey.PublicKey, foreignKey)
	for _, tc := range []struct {
		name   string
		client *http.Client
		bearer string
		code   int
		ecode  string
		text   string
	}{
		{"no certificate", plain, "", 401, wire.SIPNoDeviceCert, "no valid device certificate"},
		{"an operator's token, no certificate", plain, op, 401, wire.SIPNoDeviceCert, ""},
		{"the admin token, no certificate", plain, token, 401, wire.SIPNoDeviceCert, ""},
		{"untrusted", s.deviceClient("acme", "bad"), "", 403, wire.SIPUntrusted, "untrusted"},
		{"stale", s.deviceClient("acme", "old"), "", 403, wire.SIPUntrusted, "stale"},
		{"never attested", s.deviceClient("acme", "new"), "", 403, wire.SIPUntrusted, "not attested"},
		{"unknown device", s.deviceClient("acme", "ghost"), "", 403, wire.SIPUntrusted, "unknown"},
		{"certificate of another tenant", s.deviceClient("beta", "p1"), "", 403, wire.SIPUntrusted, "tenant beta"},
		{"trusted, no credential", s.deviceClient("acme", "empty"), "", 404, wire.SIPNoCredential, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := s.do(tc.client, http.MethodGet, wire.SIPCredentialPath, tc.bearer, nil)
			if a.code != tc.code || a.err.Code != tc.ecode || !strings.Contains(a.err.Error, tc.text) {
				t.Fatalf("%d %s, want %d code %s saying %q", a.code, a.body, tc.code, tc.ecode, tc.text)
			}
			if bytes.Contains(a.body, []byte("horse")) {
				t.Fatal("a refusal carries the password")
			}
		})
	}
	// A certificate of another CA does not get past the TLS handshake.
	foreign := s.clientWith(&tls.Certificate{Certificate: [][]byte{foreignDER}, PrivateKey: foreignKey})
	if resp, err := foreign.Get(s.srv.URL + wire.SIPCredentialPath); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("a foreign certificate got %s", b)
		}
	}
	// Nothing the refusals did changed the stored credential.
	if ct2, _, _, err := st.SIPCredential(ctx, "p1"); err != nil || !bytes.Equal(ct, ct2) {
		t.Fatalf("after the refusals: %v, ciphertext changed %v", err, !bytes.Equal(ct, ct2))
	}

	// Trust runs out: the same device, an hour later, is refused; a new
	// trusted verdict releases it again.
	s.clock.add(sipPeriod + time.Minute)
	p1 := s.deviceClient("acme", "p1")
	if a := s.fetch(p1); a.code != 403 || a.err.Code != wire.SIPUntrusted || !strings.Contains(a.err.Error, "stale") {
		t.Fatalf("after the period: %d %s, want 403 untrusted (stale)", a.code, a.body)
	}
	if err := st.SetAttestation(ctx, "p1", attest.Trusted, s.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if a := s.fetch(p1); a.code != 200 {
		t.Fatalf("attested again: %d %s", a.code, a.body)
	}
	// A verdict of untrusted takes it away at once.
	if err := st.SetAttestation(ctx, "p1", attest.Untrusted, s.clock.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if a := s.fetch(p1); a.code != 403 || a.err.Code != wire.SIPUntrusted {
		t.Fatalf("untrusted: %d %s", a.code, a.body)
	}
	if err := st.SetAttestation(ctx, "p1", attest.Trusted, s.clock.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}

	// A ciphertext copied onto another device's row does not open as its.
	empty := s.deviceClient("acme", "empty")
	if err := st.SetAttestation(ctx, "empty", attest.Trusted, s.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSIPCredential(ctx, "acme", "empty", ct, s.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if a := s.fetch(empty); a.code != http.StatusInternalServerError || bytes.Contains(a.body, []byte("horse")) {
		t.Fatalf("a copied ciphertext: %d %s, want 500", a.code, a.body)
	}

	// Deleting: the device then has none.
	if a := s.do(plain, http.MethodDelete, "/v1/devices/p1/sip-credential", op, nil); a.code != 200 {
		t.Fatalf("delete: %d %s", a.code, a.body)
	}
	if a := s.fetch(p1); a.code != 404 || a.err.Code != wire.SIPNoCredential {
		t.Fatalf("after delete: %d %s", a.code, a.body)
	}
	if a := s.do(plain, http.MethodDelete, "/v1/devices/p1/sip-credential", op, nil); a.code != 404 || a.err.Code != wire.SIPNoCredential {
		t.Fatalf("delete twice: %d %s", a.code, a.body)
	}

	// The audit log records the sets and the delete, never the password.
	entries, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var sets, deletes int
	for _, e := range entries {
		raw, _ := json.Marshal(e)
		if bytes.Contains(raw, []byte("horse")) || bytes.Contains(raw, ct) {
			t.Fatalf("audit entry %s holds the password", raw)
		}
		switch e.Action {
		case "PUT /v1/devices/{id}/sip-credential":
			sets++
		case "DELETE /v1/devices/{id}/sip-credential":
			deletes++
			if len(e.Before) == 0 || !bytes.Contains(e.Before, []byte(`"device":"p1"`)) {
				t.Errorf("the delete's before state %s", e.Before)
			}
		}
	}
	if sets != 5 || deletes != 1 {
		t.Errorf("audit: %d sets and %d deletes, want 5 and 1", sets, deletes)
	}
}

func TestSIPCredentialManage(t *testing.T) { forEachSIPStore(t, testSIPCredentialManage) }

func testSIPCredentialManage(t *testing.T, st sipStore) {
	s := newSIPServer(t, st)
	ctx := context.Background()
	s.device("acme", "p1", attest.Trusted, s.clock.Now())
	s.device("beta", "q1", attest.Trusted, s.clock.Now())
	op := s.token("op", "acme", auth.RoleOperator)
	admin := s.token("admin", "acme", auth.RoleAdmin)
	viewer := s.token("viewer", "acme", auth.RoleViewer)
	betaOp := s.token("betaop", "beta", auth.RoleOperator)
	plain := s.clientWith(nil)
	good, _ := json.Marshal(SIPCredentialRequest{Password: "s3cret-Password"})
	put := func(dev, bearer string, body []byte) answer {
		return s.do(plain, http.MethodPut, "/v1/devices/"+dev+"/sip-credential", bearer, body)
	}

	for _, tc := range []struct {
		name, dev, bearer string
		body              string
		code              int
	}{
		{"no token", "p1", "", string(good), 401},
		{"viewer", "p1", viewer, string(good), 403},
		{"operator of another tenant", "p1", betaOp, string(good), 404},
		{"operator, another tenant's device", "q1", op, string(good), 404},
		{"unknown device", "ghost", op, string(good), 404},
		{"empty password", "p1", op, `{"password":""}`, 400},
		{"no password", "p1", op, `{"auth_user":"1001"}`, 400},
		{"oversized password", "p1", op, `{"password":"` + strings.Repeat("x", sipsecret.MaxPassword+1) + `"}`, 400},
		{"multi-byte password over the limit", "p1", op, `{"password":"` + strings.Repeat("é", sipsecret.MaxPassword/2+1) + `"}`, 400},
		{"control character", "p1", op, `{"password":"abc\ndef"}`, 400},
		{"NUL", "p1", op, `{"password":"abc\u0000def"}`, 400},
		{"DEL", "p1", op, `{"password":"abc\u007fdef"}`, 400},
		{"C1 control", "p1", op, `{"password":"abc\u0085def"}`, 400},
		{"bad auth_user", "p1", op, `{"password":"abcdef","auth_user":"a b"}`, 400},
		{"unknown field", "p1", op, `{"password":"abcdef","user":"x"}`, 400},
		{"trailing data", "p1", op, `{"password":"abcdef"} {}`, 400},
		{"not JSON", "p1", op, `password=abcdef`, 400},
		{"oversized body", "p1", op, `{"password":"` + strings.Repeat("x", maxSIPCredentialBody) + `"}`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := put(tc.dev, tc.bearer, []byte(tc.body))
			if a.code != tc.code {
				t.Fatalf("%d %s, want %d", a.code, a.body, tc.code)
			}
			if tc.code == 400 && strings.Contains(string(a.body), "abcdef") {
				t.Fatalf("the refusal repeats the password: %s", a.body)
			}
			if _, _, _, err := st.SIPCredential(ctx, tc.dev); err != store.ErrNotFound {
				t.Fatalf("a refused set left a credential: %v", err)
			}
		})
	}
	// The exact limit is accepted; an admin may set it too; the tenant
	// parameter, when given, must be the device's.
	if a := put("p1", op, []byte(`{"password":"`+strings.Repeat("x", sipsecret.MaxPassword)+`"}`)); a.code != 200 {
		t.Fatalf("a %d-byte password: %d %s", sipsecret.MaxPassword, a.code, a.body)
	}
	if a := s.do(plain, http.MethodPut, "/v1/devices/p1/sip-credential?tenant=acme", admin, good); a.code != 200 {
		t.Fatalf("admin: %d %s", a.code, a.body)
	}
	if a := s.do(plain, http.MethodPut, "/v1/devices/p1/sip-credential?tenant=beta", token, good); a.code != http.StatusConflict {
		t.Fatalf("wrong tenant: %d %s, want 409", a.code, a.body)
	}
	var info SIPCredentialInfo
	a := put("p1", op, good)
	if err := json.Unmarshal(a.body, &info); err != nil || a.code != 200 || info.Device != "p1" || info.Tenant != "acme" || info.Updated.IsZero() {
		t.Fatalf("set: %d %s", a.code, a.body)
	}
	if strings.Contains(string(a.body), "s3cret") {
		t.Fatal("the answer to a set repeats the password")
	}
	// Another tenant's operator cannot delete it either.
	if a := s.do(plain, http.MethodDelete, "/v1/devices/p1/sip-credential", betaOp, nil); a.code != 404 {
		t.Fatalf("delete by beta's operator: %d %s", a.code, a.body)
	}
	if _, _, _, err := st.SIPCredential(ctx, "p1"); err != nil {
		t.Fatalf("after refused delete: %v", err)
	}
}
