package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/server/daemon"
)

// devClient trusts only the development CA of a --dev server.
func devClient(t testing.TB, a daemon.Addrs) *http.Client {
	t.Helper()
	if a.CA == "" {
		return http.DefaultClient
	}
	b, err := os.ReadFile(a.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", a.CA)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// startServer runs daemon.Run with o until the test ends and returns its
// addresses once it listens.
func startServer(t *testing.T, o daemon.Options) daemon.Addrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan daemon.Addrs, 1)
	done := make(chan error, 1)
	o.HTTPAddr, o.MQTTAddr, o.Logger = "127.0.0.1:0", "127.0.0.1:0", testutil.Logger(t)
	o.Ready = func(a daemon.Addrs) { ready <- a }
	go func() { done <- daemon.Run(ctx, o) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case a := <-ready:
		return a
	case err := <-done:
		stopped = true
		t.Fatalf("Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server not ready")
	}
	return daemon.Addrs{}
}

// TestDevTLS: a --dev server serves HTTPS with a development CA it makes
// once and keeps across restarts, with HSTS; plain HTTP to it fails.
func TestDevTLS(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan daemon.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", Dev: true,
			Logger: testutil.Logger(t), Ready: func(a daemon.Addrs) { ready <- a }})
	}()
	var a daemon.Addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server not ready")
	}
	if !strings.HasPrefix(a.URL, "https://") || a.CA != filepath.Join(dir, "tls", "ca.pem") {
		t.Fatalf("addrs %+v: want an https URL and the CA in DATA/tls/ca.pem", a)
	}
	var onDisk daemon.Addrs
	b, err := os.ReadFile(filepath.Join(dir, daemon.AddrFile))
	if err != nil || json.Unmarshal(b, &onDisk) != nil || onDisk != a {
		t.Fatalf("server.json %s (%v): want %+v", b, err, a)
	}
	for f, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca.key": 0o600, "server.pem": 0o644, "server.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, "tls", f))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("tls/%s: %v, mode %v: want %v", f, err, fi.Mode().Perm(), mode)
		}
	}
	caBefore, _ := os.ReadFile(a.CA)

	resp, err := devClient(t, a).Get(a.URL + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS with the dev CA: %v", err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Errorf("Strict-Transport-Security = %q", got)
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("TLS state %+v", resp.TLS)
	}
	cert := resp.TLS.PeerCertificates[0]
	if cert.PublicKeyAlgorithm != x509.ECDSA || cert.NotAfter.Sub(cert.NotBefore) > 366*24*time.Hour {
		t.Errorf("server certificate: %v, %v – %v", cert.PublicKeyAlgorithm, cert.NotBefore, cert.NotAfter)
	}
	for _, n := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := cert.VerifyHostname(n); err != nil {
			t.Errorf("certificate for %s: %v", n, err)
		}
	}
	// Not trusted without the CA.
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(a.URL + "/healthz"); err == nil {
		t.Error("a client without the dev CA trusted the server")
	}
	// TLS 1.1 is refused.
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get(a.URL + "/healthz"); err == nil {
		t.Error("TLS 1.1 accepted")
	}
	// Plain HTTP to the HTTPS port fails.
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + a.HTTP + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served")
		}
	}

	// Restart: same CA.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	a2 := startServer(t, daemon.Options{DataDir: dir, Dev: true})
	caAfter, _ := os.ReadFile(a2.CA)
	if string(caBefore) != string(caAfter) || len(caAfter) == 0 {
		t.Error("the dev CA changed across a restart")
	}
	resp, err = devClient(t, a).Get(a2.URL + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS after restart with the first CA: %v", err)
	}
	resp.Body.Close()
}

// TestProductionNeedsCertificate: without --dev and a certificate the
// server refuses to start and names the flags, unless --insecure-http.
func TestProductionNeedsCertificate(t *testing.T) {
	dir := t.TempDir()
	if _, err := daemon.BootstrapDev(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	err := daemon.Run(t.Context(), daemon.Options{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", Logger: testutil.Logger(t)})
	if !errors.Is(err, daemon.ErrNoCertificate) || !strings.Contains(err.Error(), "--tls-cert") || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("Run without a certificate: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tls")); err == nil {
		t.Error("a production server made a dev CA")
	}

	a := startServer(t, daemon.Options{DataDir: dir, InsecureHTTP: true})
	if a.URL != "http://"+a.HTTP || a.CA != "" {
		t.Fatalf("addrs %+v", a)
	}
	resp, err := http.Get(a.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS on plain HTTP")
	}
}

// TestOwnCertificate: --tls-cert and --tls-key serve that certificate
// outside --dev.
func TestOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	if _, err := daemon.BootstrapDev(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	cert, key, ca, err := daemon.EnsureDevCA(certs)
	if err != nil {
		t.Fatal(err)
	}
	a := startServer(t, daemon.Options{DataDir: dir, TLSCert: cert, TLSKey: key})
	if !strings.HasPrefix(a.URL, "https://") || a.CA != "" {
		t.Fatalf("addrs %+v", a)
	}
	resp, err := devClient(t, daemon.Addrs{CA: ca}).Get(a.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
