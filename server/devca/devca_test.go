package devca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/quote/quotetest"
	"github.com/dialtone-dev/dialtone/server/devca"
)

func newKey(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clock is a settable clock for the CA.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestOpenCreatesThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "devca")
	ca, err := devca.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v, %v; want 0600", fi.Mode(), err)
	}
	c := ca.Certificate()
	if !c.IsCA || c.Subject.CommonName != devca.Name || c.NotAfter.Sub(c.NotBefore) < 9*365*24*time.Hour {
		t.Fatalf("CA certificate: CA %v, name %q, valid %v..%v", c.IsCA, c.Subject.CommonName, c.NotBefore, c.NotAfter)
	}
	again, err := devca.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Fatal("reopening made another CA")
	}
	// What the first instance issues, the reopened one verifies.
	d := devca.Identity{Tenant: "acme", DeviceID: "p1"}
	leaf, _, err := ca.Issue(d, &newKey(t, elliptic.P256()).PublicKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Verify([]*x509.Certificate{leaf}); err != nil || got != d {
		t.Fatalf("Verify after reopening = %+v, %v", got, err)
	}

	t.Run("one file missing", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, "ca.crt")); err != nil {
			t.Fatal(err)
		}
		if _, err := devca.Open(dir); !errors.Is(err, devca.ErrState) {
			t.Fatalf("Open with ca.key alone = %v, want ErrState", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "ca.crt")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("Open wrote a certificate for a key it found alone")
		}
	})
	t.Run("key and certificate of two CAs", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		if _, err := devca.Open(other); err != nil {
			t.Fatal(err)
		}
		mixed := t.TempDir()
		for src, name := range map[string]string{dir: "ca.key", other: "ca.crt"} {
			b, err := os.ReadFile(filepath.Join(src, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mixed, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := devca.Open(mixed); !errors.Is(err, devca.ErrState) {
			t.Fatalf("Open with another CA's certificate = %v, want ErrState", err)
		}
	})
}

func TestIssueAndVerify(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	ca, err := devca.Open(t.TempDir(), devca.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	d := devca.Identity{Tenant: "acme_eu", DeviceID: "phone-1.lab"}
	key := newKey(t, elliptic.P256())
	leaf, der, err := ca.Issue(d, &key.PublicKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Raw, der) {
		t.Fatal("the parsed certificate is not the DER returned")
	}
	if got := leaf.NotAfter.Sub(clk.t); got != devca.DefaultTTL {
		t.Fatalf("default lifetime %v, want %v", got, devca.DefaultTTL)
	}
	if leaf.SerialNumber.BitLen() < 64 || leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("leaf: serial %v, CA %v, EKU %v", leaf.SerialNumber, leaf.IsCA, leaf.ExtKeyUsage)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "dialtone://device/acme_eu/phone-1.lab" {
		t.Fatalf("URIs %v", leaf.URIs)
	}
	if got, err := ca.Verify([]*x509.Certificate{leaf}); err != nil || got != d {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, d)
	}
	if got, err := devca.IdentityFromCert(leaf); err != nil || got != d {
		t.Fatalf("IdentityFromCert = %+v, %v", got, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: clk.t,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the chain does not verify against Pool: %v", err)
	}
	if ca.Pool().Equal(x509.NewCertPool()) {
		t.Fatal("empty pool")
	}

	for _, tc := range []struct {
		name   string
		d      devca.Identity
		pub    *ecdsa.PublicKey
		ttl    time.Duration
		reason error
	}{
		{"lifetime over a week", d, &key.PublicKey, devca.MaxTTL + time.Second, devca.ErrTTL},
		{"negative lifetime", d, &key.PublicKey, -time.Hour, devca.ErrTTL},
		{"P-384 key", d, &newKey(t, elliptic.P384()).PublicKey, 0, devca.ErrKey},
		{"no key", d, nil, 0, devca.ErrKey},
		{"empty tenant", devca.Identity{DeviceID: "p"}, &key.PublicKey, 0, devca.ErrIdentity},
		{"device with a slash", devca.Identity{Tenant: "acme", DeviceID: "a/b"}, &key.PublicKey, 0, devca.ErrIdentity},
		{"tenant with a wildcard", devca.Identity{Tenant: "+", DeviceID: "p"}, &key.PublicKey, 0, devca.ErrIdentity},
	} {
		t.Run("issue: "+tc.name, func(t *testing.T) {
			if _, _, err := ca.Issue(tc.d, tc.pub, tc.ttl); !errors.Is(err, tc.reason) {
				t.Fatalf("Issue = %v, want %v", err, tc.reason)
			}
		})
	}
	week, _, err := ca.Issue(d, &key.PublicKey, devca.MaxTTL)
	if err != nil || week.NotAfter.Sub(clk.t) != devca.MaxTTL {
		t.Fatalf("a week's certificate: %v", err)
	}

	rogue, err := devca.Open(t.TempDir(), devca.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	rogueLeaf, _, err := rogue.Issue(d, &key.PublicKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		at    time.Duration
	}{
		{"no certificate", nil, 0},
		{"another CA's certificate", []*x509.Certificate{rogueLeaf}, 0},
		{"another CA's certificate with ours as intermediate", []*x509.Certificate{rogueLeaf, ca.Certificate()}, 0},
		{"expired", []*x509.Certificate{leaf}, devca.DefaultTTL + time.Second},
		{"not yet valid", []*x509.Certificate{leaf}, -time.Hour},
		{"the CA's own certificate", []*x509.Certificate{ca.Certificate()}, 0},
	} {
		t.Run("verify: "+tc.name, func(t *testing.T) {
			c := *clk
			clk.t = clk.t.Add(tc.at)
			defer func() { *clk = c }()
			if got, err := ca.Verify(tc.chain); !errors.Is(err, devca.ErrUntrusted) {
				t.Fatalf("Verify = %+v, %v; want ErrUntrusted", got, err)
			}
		})
	}
}

// TestVerifyRefusesServerCertificates: a certificate of the right CA but
// for another use is not a device.
func TestVerifyRefusesOtherUses(t *testing.T) {
	dir := t.TempDir()
	ca, err := devca.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	caKey := loadKey(t, dir)
	now := time.Now()
	mk := func(edit func(*x509.Certificate)) *x509.Certificate {
		t.Helper()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(7),
			Subject:      pkix.Name{CommonName: "p1"},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			URIs:         []*url.URL{{Scheme: "dialtone", Host: "device", Path: "/acme/p1"}},
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		edit(tmpl)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate(), &newKey(t, elliptic.P256()).PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := ca.Verify([]*x509.Certificate{mk(func(*x509.Certificate) {})}); err != nil {
		t.Fatalf("the control certificate is refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		edit   func(*x509.Certificate)
		reason error
	}{
		{"server certificate", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, devca.ErrUntrusted},
		{"no identity", func(c *x509.Certificate) { c.URIs = nil }, devca.ErrIdentity},
		{"two identities", func(c *x509.Certificate) {
			c.URIs = append(c.URIs, &url.URL{Scheme: "dialtone", Host: "device", Path: "/acme/p2"})
		}, devca.ErrIdentity},
		{"common name of another device", func(c *x509.Certificate) { c.Subject.CommonName = "p2" }, devca.ErrIdentity},
		{"URI of another kind", func(c *x509.Certificate) { c.URIs[0].Host = "server" }, devca.ErrIdentity},
		{"URI with a query", func(c *x509.Certificate) { c.URIs[0].RawQuery = "x=1" }, devca.ErrIdentity},
		{"URI with three elements", func(c *x509.Certificate) { c.URIs[0].Path = "/acme/p1/x" }, devca.ErrIdentity},
		{"escaped URI", func(c *x509.Certificate) { c.URIs[0].Path = "/acme/p%31"; c.URIs[0].RawPath = "/acme/p%2531" }, devca.ErrIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := ca.Verify([]*x509.Certificate{mk(tc.edit)}); !errors.Is(err, tc.reason) {
				t.Fatalf("Verify = %+v, %v; want %v", got, err, tc.reason)
			}
		})
	}
}

func loadKey(t *testing.T, dir string) *ecdsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("ca.key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// TestIssueCertified: the certificate is issued only on a certification
// that verifies, for the certified key. (The TPM-made certifications are
// tested in agent/tpm against swtpm.)
func TestIssueCertified(t *testing.T) {
	ca, err := devca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ak := quotetest.NewAK()
	dk := newKey(t, elliptic.P256())
	pub := devicePublic(t, &dk.PublicKey)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	c := certification(ak, nonce, quote.Name(pub))
	d := devca.Identity{Tenant: "acme", DeviceID: "p1"}
	der, err := ca.IssueCertified(d, ak.Key(), c, nonce, pub, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !dk.PublicKey.Equal(cert.PublicKey) {
		t.Fatal("the certificate is for another key")
	}
	if _, err := ca.IssueCertified(d, ak.Key(), c, []byte("another"), pub, time.Hour); !errors.Is(err, quote.ErrNonce) {
		t.Fatalf("IssueCertified on another nonce = %v, want ErrNonce", err)
	}
	if _, err := ca.IssueCertified(d, quotetest.NewAK().Key(), c, nonce, pub, time.Hour); !errors.Is(err, quote.ErrSignature) {
		t.Fatalf("IssueCertified with another AK = %v, want ErrSignature", err)
	}
	other := devicePublic(t, &newKey(t, elliptic.P256()).PublicKey)
	if _, err := ca.IssueCertified(d, ak.Key(), c, nonce, other, time.Hour); !errors.Is(err, quote.ErrCertifiedName) {
		t.Fatalf("IssueCertified for another key = %v, want ErrCertifiedName", err)
	}
}

func devicePublic(t *testing.T, k *ecdsa.PublicKey) []byte {
	t.Helper()
	pt, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	raw := pt.Bytes()
	return tpm2.Marshal(tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, NoDA: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
		}),
	})
}

func certification(ak *quotetest.AK, nonce, name []byte) quote.Certification {
	att := tpm2.Marshal(tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestCertify,
		QualifiedSigner: tpm2.TPM2BName{Buffer: quote.Name(ak.Public())},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name: tpm2.TPM2BName{Buffer: name}, QualifiedName: tpm2.TPM2BName{Buffer: name},
		}),
	})
	d := sha256.Sum256(att)
	r, s := ak.Sign(d[:])
	sig := tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s}})}
	return quote.Certification{Attest: att, Signature: tpm2.Marshal(sig)}
}

func FuzzIdentityFromCert(f *testing.F) {
	f.Add("dialtone://device/acme/p1", "p1")
	f.Add("dialtone://device/acme/p1/x", "p1")
	f.Add("dialtone://device/acme/p%31", "p1")
	f.Add("dialtone://server/acme/p1", "p1")
	f.Add("dialtone:device/acme/p1", "p1")
	f.Add("dialtone://device//p1", "p1")
	f.Fuzz(func(t *testing.T, uri, cn string) {
		u, err := url.Parse(uri)
		if err != nil {
			return
		}
		d, err := devca.IdentityFromCert(&x509.Certificate{URIs: []*url.URL{u}, Subject: pkix.Name{CommonName: cn}})
		if err != nil {
			return
		}
		// Only the one spelling Issue writes is accepted (url.Parse
		// lowercases the scheme, which is case-insensitive).
		if d.URI().String() != u.String() || d.DeviceID != cn {
			t.Fatalf("accepted %q (cn %q) as %+v, which Issue writes as %q", uri, cn, d, d.URI())
		}
	})
}
