package firmware

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

func newECDSASigner(t testing.TB) *signature.ECDSASignerVerifier {
	t.Helper()
	sv, _, err := signature.NewDefaultECDSASignerVerifier()
	if err != nil {
		t.Fatal(err)
	}
	return sv
}

func publicKey(t testing.TB, s signature.Signer) crypto.PublicKey {
	t.Helper()
	pub, err := s.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func loadPEMPublic(t testing.TB, path string) crypto.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestSignVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	bundle, _ := buildBundle(t, defaultPayloads())
	sv := newECDSASigner(t)
	pub := publicKey(t, sv)

	sig, err := Sign(ctx, sv, bytes.NewReader(bundle))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if bytes.ContainsAny(sig, "\n\r ") {
		t.Fatalf("signature text %q contains whitespace", sig)
	}
	if err := VerifySignature(pub, bytes.NewReader(bundle), sig); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	sum := sha256.Sum256(bundle)
	if err := VerifySignatureDigest(pub, sum[:], sig); err != nil {
		t.Fatalf("VerifySignatureDigest: %v", err)
	}

	t.Run("cosign compatible", func(t *testing.T) {
		der, err := base64.StdEncoding.DecodeString(string(sig))
		if err != nil {
			t.Fatalf("signature is not standard base64: %v", err)
		}
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), sum[:], der) {
			t.Fatal("crypto/ecdsa.VerifyASN1(pub, sha256(file), der) fails")
		}
		// The verifier cosign verify-blob --key builds for an ECDSA key.
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.VerifySignature(bytes.NewReader(der), bytes.NewReader(bundle)); err != nil {
			t.Fatalf("sigstore verifier: %v", err)
		}
	})

	t.Run("whitespace tolerated", func(t *testing.T) {
		for _, s := range []string{string(sig) + "\n", string(sig) + "\r\n", "  " + string(sig) + "\t\n\n"} {
			if err := VerifySignature(pub, bytes.NewReader(bundle), []byte(s)); err != nil {
				t.Errorf("VerifySignature(%q): %v", s, err)
			}
		}
	})

	t.Run("modified bundle fails", func(t *testing.T) {
		for _, off := range []int{0, 600, len(bundle) / 2, len(bundle) - 1} {
			bad := bytes.Clone(bundle)
			bad[off] ^= 0x80
			if err := VerifySignature(pub, bytes.NewReader(bad), sig); !errors.Is(err, ErrSignature) {
				t.Errorf("byte %d flipped: err = %v, want ErrSignature", off, err)
			}
		}
		if err := VerifySignature(pub, bytes.NewReader(append(bytes.Clone(bundle), 0)), sig); !errors.Is(err, ErrSignature) {
			t.Errorf("byte appended: err = %v, want ErrSignature", err)
		}
		if err := VerifySignature(pub, bytes.NewReader(bundle[:len(bundle)-1]), sig); !errors.Is(err, ErrSignature) {
			t.Errorf("byte removed: err = %v, want ErrSignature", err)
		}
	})

	t.Run("wrong key fails", func(t *testing.T) {
		other := publicKey(t, newECDSASigner(t))
		if err := VerifySignature(other, bytes.NewReader(bundle), sig); !errors.Is(err, ErrSignature) {
			t.Fatalf("err = %v, want ErrSignature", err)
		}
	})

	t.Run("read error is not a signature error", func(t *testing.T) {
		errNet := errors.New("connection reset")
		err := VerifySignature(pub, &failingReader{bytes.NewReader(bundle), 1000, errNet}, sig)
		if !errors.Is(err, errNet) || errors.Is(err, ErrSignature) {
			t.Fatalf("err = %v, want %v without ErrSignature", err, errNet)
		}
	})
}

func TestSignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.bundle")
	opts := writePayloadFiles(t, defaultPayloads())
	if _, err := BuildFile(context.Background(), opts, path); err != nil {
		t.Fatal(err)
	}
	sv := newECDSASigner(t)
	sig, err := SignFile(context.Background(), sv, path)
	if err != nil {
		t.Fatalf("SignFile: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := VerifySignature(publicKey(t, sv), f, sig); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if _, err := SignFile(context.Background(), sv, path+".missing"); err == nil || !strings.Contains(err.Error(), ".missing") {
		t.Fatalf("SignFile on a missing file: err = %v", err)
	}
}

// TestVerifyOpenSSLSignature checks a signature made by openssl dgst, which
// computes exactly what cosign sign-blob --key does.
func TestVerifyOpenSSLSignature(t *testing.T) {
	pub := loadPEMPublic(t, filepath.Join("testdata", "publisher.pub"))
	sig, err := os.ReadFile(filepath.Join("testdata", "gnu-posix.bundle.sig"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join("testdata", "gnu-posix.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(pub, bytes.NewReader(bundle), sig); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	other, err := os.ReadFile(filepath.Join("testdata", "gnu-gnu.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(pub, bytes.NewReader(other), sig); !errors.Is(err, ErrSignature) {
		t.Fatalf("signature verified over another file: err = %v", err)
	}
}

// TestSignVerifiedByOpenSSL hands our signature to openssl when it is
// installed: an implementation we did not write must accept it.
func TestSignVerifiedByOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	sv, err := signature.LoadSignerVerifierFromPEMFile(filepath.Join("testdata", "publisher.pem"), crypto.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	bundlePath := filepath.Join("testdata", "gnu-gnu.bundle")
	sig, err := SignFile(context.Background(), sv, bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(string(sig))
	if err != nil {
		t.Fatal(err)
	}
	derPath := filepath.Join(dir, "sig.der")
	if err := os.WriteFile(derPath, der, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", filepath.Join("testdata", "publisher.pub"), "-signature", derPath, bundlePath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Fatalf("openssl dgst -verify: %v: %s", err, out)
	}
}

func TestSignRSA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadSignerVerifier(key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("rsa bundle")
	sig, err := Sign(context.Background(), sv, bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := VerifySignature(&key.PublicKey, bytes.NewReader(msg), sig); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if err := VerifySignature(&key.PublicKey, strings.NewReader("other"), sig); !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
}

// lyingSigner ignores the digest option and signs the (empty) message
// instead, as a careless KMS client might.
type lyingSigner struct{ *signature.ECDSASignerVerifier }

func (l lyingSigner) SignMessage(message io.Reader, _ ...signature.SignOption) ([]byte, error) {
	return l.ECDSASignerVerifier.SignMessage(message)
}

func TestSignRejects(t *testing.T) {
	ed, _, err := signature.NewDefaultED25519SignerVerifier()
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384sv, err := signature.LoadSignerVerifier(p384, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		signer signature.Signer
		inMsg  string
	}{
		{"nil", nil, "nil signer"},
		{"ed25519", ed, "ed25519"},
		{"P-384", p384sv, "P-384"},
		{"ignores digest", lyingSigner{newECDSASigner(t)}, "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := Sign(context.Background(), tt.signer, strings.NewReader("bundle"))
			if err == nil || !strings.Contains(err.Error(), tt.inMsg) {
				t.Fatalf("Sign = %q, %v; want an error mentioning %q", sig, err, tt.inMsg)
			}
		})
	}

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Sign(ctx, newECDSASigner(t), strings.NewReader("bundle")); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

func TestVerifySignatureRejects(t *testing.T) {
	sv := newECDSASigner(t)
	pub := publicKey(t, sv)
	msg := []byte("bundle bytes")
	sum := sha256.Sum256(msg)
	der, err := sv.SignMessage(nil, options.WithDigest(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	good := base64.StdEncoding.EncodeToString(der)

	// IEEE P1363 r||s, which the sigstore verifier would also accept.
	r, s := parseDER(t, der)
	p1363 := append(leftPad(r, 32), leftPad(s, 32)...)

	ed, _, err := signature.NewDefaultED25519SignerVerifier()
	if err != nil {
		t.Fatal(err)
	}
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  crypto.PublicKey
		sig  string
	}{
		{"empty", pub, ""},
		{"whitespace only", pub, " \n"},
		{"not base64", pub, "!!!not base64!!!"},
		{"url-safe alphabet", pub, good[:6] + "-_" + good[8:]},
		{"truncated base64", pub, good[:len(good)-5]},
		{"truncated der", pub, base64.StdEncoding.EncodeToString(der[:len(der)-1])},
		{"der with trailing byte", pub, base64.StdEncoding.EncodeToString(append(bytes.Clone(der), 0))},
		{"p1363 encoding", pub, base64.StdEncoding.EncodeToString(p1363)},
		{"raw der not base64", pub, string(der)},
		{"too long", pub, strings.Repeat("A", maxSignatureText+4)},
		{"nil key", nil, good},
		{"nil ecdsa key", (*ecdsa.PublicKey)(nil), good},
		{"ecdsa key without point", &ecdsa.PublicKey{Curve: elliptic.P256()}, good},
		{"ed25519 key", publicKey(t, ed), good},
		{"small rsa key", &smallRSA.PublicKey, good},
		{"private key", sv.ECDSASigner, good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifySignatureDigest(tt.pub, sum[:], []byte(tt.sig))
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("VerifySignatureDigest: err = %v, want ErrSignature", err)
			}
			err = VerifySignature(tt.pub, bytes.NewReader(msg), []byte(tt.sig))
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("VerifySignature: err = %v, want ErrSignature", err)
			}
		})
	}
	for _, n := range []int{0, 20, 31, 33, 64} {
		if err := VerifySignatureDigest(pub, make([]byte, n), []byte(good)); !errors.Is(err, ErrSignature) {
			t.Errorf("digest of %d bytes: err = %v, want ErrSignature", n, err)
		}
	}
	if err := VerifySignatureDigest(pub, sum[:], []byte(good)); err != nil {
		t.Fatalf("the good signature must verify: %v", err)
	}
}

func parseDER(t *testing.T, der []byte) (r, s []byte) {
	t.Helper()
	// SEQUENCE { INTEGER r, INTEGER s } with short lengths, as P-256 has.
	if len(der) < 8 || der[0] != 0x30 || der[2] != 0x02 {
		t.Fatalf("unexpected DER %x", der)
	}
	rl := int(der[3])
	r = der[4 : 4+rl]
	if der[4+rl] != 0x02 {
		t.Fatalf("unexpected DER %x", der)
	}
	sl := int(der[5+rl])
	s = der[6+rl : 6+rl+sl]
	return bytes.TrimLeft(r, "\x00"), bytes.TrimLeft(s, "\x00")
}

func leftPad(b []byte, n int) []byte {
	return append(make([]byte, n-len(b)), b...)
}
