package testutil

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// PKI is a throwaway CA for one test: it issues TLS server certificates for
// 127.0.0.1 and client certificates whose CN is a device ID or a server
// identity, written as PEM files that external daemons (Mosquitto) read.
type PKI struct {
	Dir    string // where the CA and issued certificates are written
	CA     *x509.Certificate
	CAFile string // the CA certificate, PEM
	Pool   *x509.CertPool

	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	serial int64
}

// NewPKI creates a CA named name and writes its certificate to dir/name.pem.
func NewPKI(t testing.TB, dir, name string) *PKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating CA: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{Dir: dir, CA: ca, CAFile: filepath.Join(dir, name+".pem"), Pool: x509.NewCertPool(), key: key, serial: 1}
	p.Pool.AddCert(ca)
	WritePEM(t, p.CAFile, "CERTIFICATE", der)
	return p
}

// Issue makes a certificate for cn — a TLS server certificate for 127.0.0.1
// and localhost if server, else a client one — and writes it and its key to
// Dir/cn.pem and Dir/cn.key.
func (p *PKI) Issue(t testing.TB, cn string, server bool) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key := newKey(t)
	p.mu.Lock()
	p.serial++
	serial := p.serial
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.key)
	if err != nil {
		t.Fatalf("issuing %s: %v", cn, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.Dir, cn+".pem"), filepath.Join(p.Dir, cn+".key")
	WritePEM(t, certFile, "CERTIFICATE", der)
	WritePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ClientTLS is the TLS configuration of a client holding a new certificate
// for cn that trusts servers this CA issued.
func (p *PKI) ClientTLS(t testing.TB, cn string) *tls.Config {
	t.Helper()
	_, _, cert := p.Issue(t, cn, false)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Pool, Certificates: []tls.Certificate{cert}}
}

// WritePEM writes one PEM block to path (mode 0600).
func WritePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
