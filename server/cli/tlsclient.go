package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// newHTTPClient is the client every command talks to the server with: it
// trusts the system's roots plus, when caFile is set, the CA certificates
// (PEM) in it. timeout 0 means none (uploads). An untrusted certificate
// is reported with the way to trust it.
func newHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the server's CA (--ca): %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	tr.TLSClientConfig = cfg
	return &http.Client{Timeout: timeout, Transport: &trustHint{rt: tr, ca: caFile}}, nil
}

// trustHint explains a certificate the client does not trust.
type trustHint struct {
	rt http.RoundTripper
	ca string
}

func (t *trustHint) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, untrustedHint(err, t.ca)
	}
	return resp, nil
}

// untrustedError is a TLS verification failure with the way out.
type untrustedError struct {
	err error
	ca  string
}

func (e *untrustedError) Error() string {
	if e.ca != "" {
		return fmt.Sprintf("the server's TLS certificate is not trusted (%v): it is not issued by the CA in %s (--ca) nor by a system root", e.err, e.ca)
	}
	return fmt.Sprintf("the server's TLS certificate is not trusted (%v): give the CA that issued it with --ca FILE (or DIALTONE_CA, or ca: in the config file); a --dev server's is DATA/tls/ca.pem", e.err)
}

func (e *untrustedError) Unwrap() error { return e.err }

func untrustedHint(err error, ca string) error {
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &ua) || errors.As(err, &cv) || errors.As(err, &he) || errors.As(err, &ci) {
		return &untrustedError{err: err, ca: ca}
	}
	return err
}

// absCA makes a CA path absolute, so that a stored session finds it from
// any directory.
func absCA(ca string) string {
	if ca == "" {
		return ""
	}
	if p, err := filepath.Abs(ca); err == nil {
		return p
	}
	return ca
}

// httpClient is newHTTPClient for the server of c.
func (c clientOptions) httpClient(timeout time.Duration) (*http.Client, error) {
	return newHTTPClient(c.CA, timeout)
}
