package sippeer

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// newKamailio starts Kamailio with a fresh PKI and the given users.
func newKamailio(t *testing.T, users map[string]string) (*Kamailio, *testutil.PKI) {
	t.Helper()
	pki := testutil.NewPKI(t, t.TempDir(), "ca")
	cert, key, _ := pki.Issue(t, "127.0.0.1", true)
	return StartKamailio(t, KamailioOptions{Users: users, CertFile: cert, KeyFile: key, CAFile: pki.CAFile}), pki
}

func TestKamailioTLS(t *testing.T) {
	k, pki := newKamailio(t, map[string]string{"alice": "secret"})
	c, err := tls.Dial("tcp", k.TLSAddr.String(), &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with kamailio: %v", err)
	}
	defer c.Close()
	if err := c.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, err := k.Registered(ctx, "alice"); err != nil || ok {
		t.Fatalf("Registered(alice) before any REGISTER = %v, %v; want false, nil", ok, err)
	}
}

// TestKamailioVerifyClients: with VerifyClients, a SIP request over TLS is
// answered only for a client holding a certificate from the CA.
func TestKamailioVerifyClients(t *testing.T) {
	pki := testutil.NewPKI(t, t.TempDir(), "ca")
	cert, key, _ := pki.Issue(t, "127.0.0.1", true)
	k := StartKamailio(t, KamailioOptions{CertFile: cert, KeyFile: key, CAFile: pki.CAFile, VerifyClients: true, RequireTLS: true})
	if k.UDPAddr.IsValid() || k.TCPAddr.IsValid() {
		t.Errorf("RequireTLS: UDP %s, TCP %s; want none", k.UDPAddr, k.TCPAddr)
	}
	other := testutil.NewPKI(t, t.TempDir(), "other")
	for _, tt := range []struct {
		name   string
		cfg    *tls.Config
		answer bool
	}{
		{"client certificate from the CA", pki.ClientTLS(t, "phone-1"), true},
		{"no client certificate", &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}, false},
		{"client certificate from another CA", func() *tls.Config { c := other.ClientTLS(t, "phone-2"); c.RootCAs = pki.Pool; return c }(), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := optionsAnswered(t, k, tt.cfg)
			if got != tt.answer {
				t.Fatalf("OPTIONS answered = %v; want %v", got, tt.answer)
			}
		})
	}
}

// optionsAnswered sends an OPTIONS keepalive over TLS and reports whether a
// 200 came back.
func optionsAnswered(t *testing.T, k *Kamailio, cfg *tls.Config) bool {
	t.Helper()
	c, err := tls.Dial("tcp", k.TLSAddr.String(), cfg)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	local := c.LocalAddr().String()
	req := "OPTIONS sip:" + k.Domain + " SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS " + local + ";branch=z9hG4bK-test1;rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:test@" + k.Domain + ">;tag=1\r\nTo: <sip:" + k.Domain + ">\r\n" +
		"Call-ID: options-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return false
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Logf("reading the answer: %v", err)
		return false
	}
	return strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ")
}
