package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/server/devca"
)

// opener opens the TPM at spec for each operation, as the agent does.
func opener(spec string) Opener {
	return func(ctx context.Context) (transport.TPMCloser, error) { return Open(ctx, spec) }
}

// enrollDevice runs the device-identity exchange against the TPM at spec:
// the agent creates the device key and has its AK certify it over the
// server's nonce; the server checks the certification and issues the
// certificate. The TPM is closed again when it returns.
func enrollDevice(t *testing.T, spec string, ca *devca.CA, d devca.Identity) (DeviceKeyBlob, []byte) {
	t.Helper()
	tp, err := Open(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	a, err := NewAttestor(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	blob, err := a.CreateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	n := nonce(t) // the server's
	c, err := a.Certify(blob, n)
	if err != nil {
		t.Fatal(err)
	}
	// Server side: the AK as enrollment recorded it.
	ak, err := quote.AKPublic(a.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.IssueCertified(d, ak, c, n, blob.Public, 0)
	if err != nil {
		t.Fatalf("issuing the device certificate: %v", err)
	}
	if _, err := ca.IssueCertified(d, ak, c, nonce(t), blob.Public, 0); !errors.Is(err, quote.ErrNonce) {
		t.Fatalf("issuing on a certification over another nonce = %v, want ErrNonce", err)
	}
	return blob, der
}

// handshake runs a TLS 1.3 handshake in which the client authenticates
// with certificate der and key signer, against a server that requires a
// client certificate from ca; it returns the identity the server derived
// and the client's and server's errors.
func handshake(t *testing.T, ca *devca.CA, der []byte, signer crypto.Signer) (devca.Identity, error, error) {
	t.Helper()
	serverCfg, clientCfg := testutil.TLSConfigs(t)
	serverCfg = serverCfg.Clone()
	serverCfg.MinVersion = tls.VersionTLS13
	serverCfg.ClientAuth = tls.RequireAndVerifyClientCert
	serverCfg.ClientCAs = ca.Pool()
	clientCfg = clientCfg.Clone()
	clientCfg.MinVersion = tls.VersionTLS13
	clientCfg.ServerName = "localhost"
	clientCfg.Certificates = []tls.Certificate{{
		Certificate: [][]byte{der},
		PrivateKey:  signer,
		// The device key signs ECDSA P-256 / SHA-256 and nothing else.
		SupportedSignatureAlgorithms: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
	}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type result struct {
		id  devca.Identity
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		tc := tls.Server(c, serverCfg)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		id, err := ca.Verify(tc.ConnectionState().PeerCertificates)
		if err == nil {
			_, err = tc.Write([]byte("hello " + id.DeviceID))
		}
		done <- result{id, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	tc := tls.Client(c, clientCfg)
	cerr := tc.Handshake()
	if cerr == nil {
		// In TLS 1.3 the server checks the client's certificate after
		// the client's handshake is done: read to learn the outcome.
		_, cerr = io.ReadAll(tc)
	}
	r := <-done
	return r.id, cerr, r.err
}

// TestDeviceIdentityOnSwtpm is the device identity end to end on a real
// (software) TPM: the device key certified by the AK gets a certificate
// from the device CA, and the TPM-backed Signer authenticates a TLS 1.3
// connection with it, the server reading the device's identity back.
func TestDeviceIdentityOnSwtpm(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	ca, err := devca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := devca.Identity{Tenant: "acme", DeviceID: "phone-1"}
	blob, der := enrollDevice(t, sw.Spec, ca, want)
	s, err := NewSigner(opener(sw.Spec), blob)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(s.Public()) {
		t.Fatal("the certificate is not for the device key")
	}
	rec := &recordingSigner{Signer: s}
	id, cerr, serr := handshake(t, ca, der, rec)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if id != want {
		t.Fatalf("server saw %+v, want %+v", id, want)
	}
	if len(rec.hashes) != 1 || rec.hashes[0] != crypto.SHA256 {
		t.Fatalf("the handshake asked the TPM for signatures with %v, want one with SHA-256", rec.hashes)
	}

	t.Run("certificate with the key of another TPM", func(t *testing.T) {
		// The certificate is genuine, but the private key behind the
		// Signer is another phone's: the CertificateVerify fails.
		other := testutil.StartSwtpm(t)
		otherBlob, _ := enrollDevice(t, other.Spec, ca, devca.Identity{Tenant: "acme", DeviceID: "phone-2"})
		otherSigner, err := NewSigner(opener(other.Spec), otherBlob)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, serr := handshake(t, ca, der, otherSigner); serr == nil {
			t.Fatal("the server accepted a client that signed with another key than its certificate's")
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		rogue, err := devca.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		_, rogueDER, err := rogue.Issue(want, s.Public().(*ecdsa.PublicKey), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, serr := handshake(t, ca, rogueDER, s); serr == nil {
			t.Fatal("the server accepted a certificate of another CA")
		}
	})
}

// recordingSigner notes the hashes a TLS stack asks its Signer for.
type recordingSigner struct {
	crypto.Signer
	mu     sync.Mutex
	hashes []crypto.Hash
}

func (r *recordingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	r.mu.Lock()
	r.hashes = append(r.hashes, opts.HashFunc())
	r.mu.Unlock()
	return r.Signer.Sign(rand, digest, opts)
}

func TestSignerOnSwtpm(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	tp := openSwtpm(t, sw)
	blob := createDeviceKey(t, tp)
	tp.Close()
	s, err := NewSigner(opener(sw.Spec), blob)
	if err != nil {
		t.Fatal(err)
	}
	pub := s.Public().(*ecdsa.PublicKey)
	d := sha256.Sum256([]byte("handshake transcript"))

	// Concurrent signers take turns on swtpm's one connection.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			sig, err := s.Sign(nil, d[:], crypto.SHA256)
			if err == nil && !ecdsa.VerifyASN1(pub, d[:], sig) {
				err = errors.New("signature does not verify")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"SHA-384", make([]byte, 48), crypto.SHA384},
		{"SHA-256 named, 48 bytes given", make([]byte, 48), crypto.SHA256},
		{"no hash", d[:], crypto.Hash(0)},
		{"nil options", d[:], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Sign(nil, tc.digest, tc.opts); !errors.Is(err, ErrHash) {
				t.Fatalf("Sign = %v, want ErrHash", err)
			}
		})
	}

	t.Run("TPM unreachable", func(t *testing.T) {
		sw.Kill()
		if _, err := s.Sign(nil, d[:], crypto.SHA256); err == nil {
			t.Fatal("signed with the TPM down")
		}
	})
}

// BenchmarkSignerOnSwtpm measures one Sign as the agent does it: open the
// TPM, recreate the SRK, load the key, sign, flush, close.
func BenchmarkSignerOnSwtpm(b *testing.B) {
	sw := testutil.StartSwtpm(b)
	tp, err := Open(b.Context(), sw.Spec)
	if err != nil {
		b.Fatal(err)
	}
	blob, err := CreateDeviceKey(tp)
	tp.Close()
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewSigner(opener(sw.Spec), blob)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for b.Loop() {
		if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
