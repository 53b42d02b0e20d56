// Package devca owns the server's device CA: the key and self-signed
// certificate that issue phones their short-lived client certificates, once
// their TPM has certified the key (quote.VerifyCertify), and the check that
// turns a presented certificate chain back into the device it names. The
// API and the MQTT broker accept devices by these certificates only.
//
// A device certificate names its device twice: the subject's common name
// is the device ID, and one URI SAN reads dialtone://device/TENANT/DEVICE.
// The tenant is a path element rather than the URI's host because tenant
// IDs (wire.ValidID) are not all valid host names.
package devca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Errors for callers to tell refusals apart.
var (
	// ErrIdentity means an identity is not one a certificate can carry,
	// or a certificate carries none (or more than one).
	ErrIdentity = errors.New("bad device identity")
	// ErrTTL means a certificate lifetime over MaxTTL, or negative.
	ErrTTL = errors.New("bad certificate lifetime")
	// ErrKey means a public key other than ECDSA P-256.
	ErrKey = errors.New("device key must be ECDSA P-256")
	// ErrUntrusted means a chain that does not verify against the CA as a
	// current client certificate.
	ErrUntrusted = errors.New("device certificate not trusted")
	// ErrState means the CA's directory holds something Open cannot use.
	ErrState = errors.New("bad device CA state")
)

const (
	// DefaultTTL is a device certificate's lifetime when Issue is given
	// none: renewal follows attestation, so a device that stops attesting
	// good loses its identity within a day.
	DefaultTTL = 24 * time.Hour
	// MaxTTL bounds a device certificate's lifetime.
	MaxTTL = 7 * 24 * time.Hour
	// caValidity is the CA certificate's lifetime.
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate covers clocks slightly behind the server's.
	backdate = 5 * time.Minute
	// URIScheme and uriKind make the URI SAN: dialtone://device/T/D.
	URIScheme = "dialtone"
	uriKind   = "device"
	// Name is the CA certificate's common name.
	Name = "Dialtone device CA"
)

// Files in the CA's directory.
const (
	keyFile  = "ca.key"
	certFile = "ca.crt"
	maxFile  = 64 << 10
)

// Identity is what a device certificate says about its holder.
type Identity struct {
	Tenant, DeviceID string
}

func (d Identity) valid() error {
	if !wire.ValidID(d.Tenant) || !wire.ValidID(d.DeviceID) {
		return fmt.Errorf("%w: tenant %q, device %q", ErrIdentity, d.Tenant, d.DeviceID)
	}
	return nil
}

// URI is the identity's URI SAN.
func (d Identity) URI() *url.URL {
	return &url.URL{Scheme: URIScheme, Host: uriKind, Path: "/" + d.Tenant + "/" + d.DeviceID}
}

// CA is the device CA.
type CA struct {
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	certPEM []byte
	pool    *x509.CertPool
	now     func() time.Time
}

// Option configures Open.
type Option func(*CA)

// WithClock sets the clock certificates are issued and verified by
// (tests).
func WithClock(now func() time.Time) Option { return func(ca *CA) { ca.now = now } }

// Open loads the CA from dir (ca.key, ca.crt), creating it on first use:
// an ECDSA P-256 key (mode 0600) and a self-signed certificate valid ten
// years. A directory with only one of the two files is an error, not
// something to overwrite: the other may be the only copy.
func Open(dir string, opts ...Option) (*CA, error) {
	ca := &CA{now: time.Now}
	for _, o := range opts {
		o(ca)
	}
	keyPEM, kerr := readFile(filepath.Join(dir, keyFile))
	certPEM, cerr := readFile(filepath.Join(dir, certFile))
	switch {
	case errors.Is(kerr, fs.ErrNotExist) && errors.Is(cerr, fs.ErrNotExist):
		if err := ca.create(dir); err != nil {
			return nil, err
		}
		return ca, nil
	case errors.Is(kerr, fs.ErrNotExist) || errors.Is(cerr, fs.ErrNotExist):
		return nil, fmt.Errorf("%w in %s: one of %s and %s is missing", ErrState, dir, keyFile, certFile)
	case kerr != nil:
		return nil, kerr
	case cerr != nil:
		return nil, cerr
	}
	if err := ca.load(keyPEM, certPEM); err != nil {
		return nil, fmt.Errorf("%w in %s: %w", ErrState, dir, err)
	}
	return ca, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading the device CA: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading the device CA: %w", err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrState, name, maxFile)
	}
	return b, nil
}

func (ca *CA) create(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the device CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("creating the device CA key: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: Name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("creating the device CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the device CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key first: a crash between the two leaves a key without a
	// certificate, which Open refuses rather than replaces.
	if err := atomicfile.WriteFile(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, certFile), certPEM, 0o644); err != nil {
		return err
	}
	return ca.load(keyPEM, certPEM)
}

func (ca *CA) load(keyPEM, certPEM []byte) error {
	kb, rest := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("ca.key is not one PKCS #8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return fmt.Errorf("ca.key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return errors.New("ca.key is not an ECDSA P-256 key")
	}
	cb, rest := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("ca.crt is not one PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("ca.crt: %w", err)
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return errors.New("ca.crt is not a CA certificate for ca.key")
	}
	ca.key, ca.cert = key, cert
	ca.certPEM = pem.EncodeToMemory(cb)
	ca.pool = x509.NewCertPool()
	ca.pool.AddCert(cert)
	return nil
}

func serial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	return new(big.Int).SetBytes(b)
}

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM is the CA's certificate in PEM, for the phones' and servers'
// trust stores.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Pool is a pool holding the CA's certificate alone: a tls.Config's
// ClientCAs for the API and the broker.
func (ca *CA) Pool() *x509.CertPool { return ca.pool.Clone() }

// Issue makes a client certificate for device d's key pub, valid for ttl
// (DefaultTTL when 0, at most MaxTTL, never past the CA's own expiry). It
// returns the certificate parsed and in DER.
//
// Issue trusts that pub is the device's: IssueCertified is the issuing
// path for phones, which checks their TPM's certification of the key.
func (ca *CA) Issue(d Identity, pub *ecdsa.PublicKey, ttl time.Duration) (*x509.Certificate, []byte, error) {
	if err := d.valid(); err != nil {
		return nil, nil, err
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 || ttl > MaxTTL {
		return nil, nil, fmt.Errorf("%w: %s, want at most %s", ErrTTL, ttl, MaxTTL)
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, nil, ErrKey
	}
	if _, err := pub.ECDH(); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	now := ca.now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: d.DeviceID, Organization: []string{d.Tenant}},
		URIs:                  []*url.URL{d.URI()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing a certificate for %s/%s: %w", d.Tenant, d.DeviceID, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the certificate issued: %w", err)
	}
	return cert, der, nil
}

// IssueCertified is the issuing path for phones: it checks that the
// device's enrolled AK certified the key whose TPMT_PUBLIC is keyPublic over
// the server's nonce (quote.VerifyCertify: a TPM-resident, non-exportable
// signing key), then issues the certificate for that key. It returns the
// certificate in DER. The caller decides whether the device's attestation
// is good enough to be issued one at all.
func (ca *CA) IssueCertified(d Identity, ak *ecdsa.PublicKey, c quote.Certification, nonce []byte, keyPublic []byte, ttl time.Duration) ([]byte, error) {
	pub, err := quote.VerifyCertify(ak, c, nonce, keyPublic)
	if err != nil {
		return nil, fmt.Errorf("device key of %s/%s: %w", d.Tenant, d.DeviceID, err)
	}
	_, der, err := ca.Issue(d, pub, ttl)
	return der, err
}

// Verify checks a client's certificate chain (leaf first, as
// tls.ConnectionState.PeerCertificates has it) against the CA, for client
// authentication, at the CA's clock, and returns the device it names.
// Every refusal wraps ErrUntrusted (and ErrIdentity when the chain is
// good but names no device).
func (ca *CA) Verify(chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrUntrusted)
	}
	if chain[0].IsCA {
		return Identity{}, fmt.Errorf("%w: a CA certificate", ErrUntrusted)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         ca.pool,
		Intermediates: inter,
		CurrentTime:   ca.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	d, err := IdentityFromCert(chain[0])
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return d, nil
}

// IdentityFromCert reads the device identity out of a certificate Issue
// made: exactly one dialtone URI SAN, agreeing with the common name. It
// checks nothing about who signed the certificate; Verify does.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		d, err := parseURI(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, d)
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("%w: %d %s URIs in the certificate", ErrIdentity, len(found), URIScheme)
	}
	d := found[0]
	if c.Subject.CommonName != d.DeviceID {
		return Identity{}, fmt.Errorf("%w: common name %q, URI names %q", ErrIdentity, c.Subject.CommonName, d.DeviceID)
	}
	return d, nil
}

func parseURI(u *url.URL) (Identity, error) {
	bad := func() (Identity, error) { return Identity{}, fmt.Errorf("%w: URI %q", ErrIdentity, u.String()) }
	if u.Host != uriKind || u.User != nil || u.Opaque != "" || u.RawQuery != "" || u.Fragment != "" ||
		u.ForceQuery || u.RawPath != "" || u.RawFragment != "" {
		return bad()
	}
	tenant, device, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || !strings.HasPrefix(u.Path, "/") {
		return bad()
	}
	d := Identity{Tenant: tenant, DeviceID: device}
	if d.valid() != nil {
		return bad()
	}
	return d, nil
}
