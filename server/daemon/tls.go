package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
)

// Files of the development CA, under DataDir/TLSDir.
const (
	TLSDir        = "tls"
	DevCAFile     = "ca.pem"
	DevCAKeyFile  = "ca.key"
	DevCertFile   = "server.pem"
	DevKeyFile    = "server.key"
	devCertValid  = 365 * 24 * time.Hour
	devCARenewal  = 30 * 24 * time.Hour // a server certificate this close to expiry is reissued
	HSTSHeader    = "Strict-Transport-Security"
	HSTSHeaderVal = "max-age=31536000"
)

// ErrNoCertificate means a production server was given no certificate.
var ErrNoCertificate = errors.New("no TLS certificate: give --tls-cert and --tls-key (PEM files), " +
	"or --insecure-http to serve the API in plain HTTP (not for production; use --dev for a development CA)")

// tlsSetup is how the API is served: cfg nil means plain HTTP.
type tlsSetup struct {
	cfg    *tls.Config
	caFile string // the development CA, "" otherwise
}

// serverTLS decides how the API is served from the options.
func serverTLS(o Options) (tlsSetup, error) {
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return tlsSetup{}, errors.New("--tls-cert and --tls-key go together")
	}
	certFile, keyFile, caFile := o.TLSCert, o.TLSKey, ""
	switch {
	case certFile != "":
	case o.InsecureHTTP:
		return tlsSetup{}, nil
	case o.Dev:
		var err error
		if certFile, keyFile, caFile, err = EnsureDevCA(o.DataDir); err != nil {
			return tlsSetup{}, err
		}
	default:
		return tlsSetup{}, ErrNoCertificate
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tlsSetup{}, fmt.Errorf("loading the TLS certificate: %w", err)
	}
	return tlsSetup{cfg: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, caFile: caFile}, nil
}

// hsts adds the Strict-Transport-Security header to every response.
func hsts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HSTSHeader, HSTSHeaderVal)
		h.ServeHTTP(w, r)
	})
}

// EnsureDevCA creates, once, a development CA and a server certificate it
// issues for 127.0.0.1, ::1, localhost and the host name in
// dataDir/tls, and returns the paths of the server certificate, its key
// and the CA certificate. The CA is kept across restarts; the server
// certificate is reissued by it when missing or close to expiry.
func EnsureDevCA(dataDir string) (certFile, keyFile, caFile string, err error) {
	dir := filepath.Join(dataDir, TLSDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", "", fmt.Errorf("dev CA: %w", err)
	}
	caFile, caKeyFile := filepath.Join(dir, DevCAFile), filepath.Join(dir, DevCAKeyFile)
	certFile, keyFile = filepath.Join(dir, DevCertFile), filepath.Join(dir, DevKeyFile)
	ca, caKey, err := loadPair(caFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) || (err == nil && time.Until(ca.NotAfter) < devCARenewal) {
		ca, caKey, err = newDevCA(caFile, caKeyFile)
	}
	if err != nil {
		return "", "", "", fmt.Errorf("dev CA: %w", err)
	}
	if c, _, err := loadPair(certFile, keyFile); err == nil && c.CheckSignatureFrom(ca) == nil && time.Until(c.NotAfter) > devCARenewal {
		return certFile, keyFile, caFile, nil
	}
	if err := newDevServerCert(ca, caKey, certFile, keyFile); err != nil {
		return "", "", "", fmt.Errorf("dev CA: server certificate: %w", err)
	}
	return certFile, keyFile, caFile, nil
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, nil, fmt.Errorf("%s or %s holds no PEM block", certFile, keyFile)
	}
	c, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.ParseECPrivateKey(kp.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return c, k, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// writePair writes a certificate (0644) and its key (0600), key first.
func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return atomicfile.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func newDevCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"Dialtone development"}, CommonName: "Dialtone development CA " + host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(devCertValid),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(certFile, keyFile, der, key); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func newDevServerCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	names := []string{"localhost"}
	if host, err := os.Hostname(); err == nil && host != "" && host != "localhost" {
		names = append(names, host)
	}
	now := time.Now()
	notAfter := now.Add(devCertValid)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{Organization: []string{"Dialtone development"}, CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writePair(certFile, keyFile, der, key)
}
