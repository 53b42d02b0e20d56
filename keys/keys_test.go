package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

func TestGenerateLoadSignVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "publisher.key")
	if err := Generate(path); err != nil {
		t.Fatalf("Generate: %v", err)
	}

	for p, want := range map[string]os.FileMode{path: 0o600, path + ".pub": 0o644} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	assertPEMType(t, path, "PRIVATE KEY")
	assertPEMType(t, path+".pub", "PUBLIC KEY")
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("directory holds %d entries, want 2 (temporary files left behind?)", len(ents))
	}

	for _, uri := range []string{path, "file://" + path} {
		sv, err := LoadSigner(ctx, uri)
		if err != nil {
			t.Fatalf("LoadSigner(%q): %v", uri, err)
		}
		msg := []byte("firmware 1.2.3")
		sig, err := sv.SignMessage(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("SignMessage: %v", err)
		}
		pub, err := LoadPublic(uri + ".pub")
		if err != nil {
			t.Fatalf("LoadPublic: %v", err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			t.Fatalf("public key is %T, want ECDSA P-256", pub)
		}
		sum := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(ec, sum[:], sig) {
			t.Fatal("signature does not verify with the public key file over SHA-256")
		}
		sum[0] ^= 1
		if ecdsa.VerifyASN1(ec, sum[:], sig) {
			t.Fatal("signature verifies over a different digest")
		}
		// The sigstore verifier must agree, since cosign uses it.
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
			t.Fatalf("sigstore verifier: %v", err)
		}
	}
}

func TestGenerateRefusesOverwrite(t *testing.T) {
	tests := []struct {
		name     string
		existing string // relative to the key path
	}{
		{"private key exists", ""},
		{"public key exists", ".pub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			original := []byte("precious")
			if err := os.WriteFile(path+tt.existing, original, 0o600); err != nil {
				t.Fatal(err)
			}
			err := Generate(path)
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Generate over existing file: err = %v, want fs.ErrExist", err)
			}
			got, _ := os.ReadFile(path + tt.existing)
			if !bytes.Equal(got, original) {
				t.Fatal("existing file was modified")
			}
			other := path + ".pub"
			if tt.existing == ".pub" {
				other = path
			}
			if _, err := os.Stat(other); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Generate left %s behind after refusing: %v", other, err)
			}
		})
	}
}

func TestGenerateTwiceFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if err := Generate(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := Generate(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Generate: err = %v, want fs.ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("second Generate replaced the key")
	}
}

func TestLoadSignerFixtures(t *testing.T) {
	ctx := context.Background()
	unsetEnv(t, PassphraseEnv)
	tests := []struct {
		file    string
		pub     string // matching public key file, if any
		wantErr error  // nil: must load; otherwise errors.Is target
		errText string // substring the message must carry
	}{
		{file: "ec-p256.pem", pub: "ec-p256.pub"},
		{file: "ec-p256-sec1.pem"},
		{file: "ed25519.pem", pub: "ed25519.pub"},
		{file: "rsa2048.pem", pub: "rsa2048.pub"},
		{file: "ec-p384.pem", wantErr: ErrUnsupportedKey, errText: "P-384"},
		{file: "rsa1024.pem", wantErr: ErrUnsupportedKey, errText: "1024 bits"},
		{file: "x25519.pem", wantErr: ErrUnsupportedKey, errText: "ecdh"},
		{file: "ec-p256-encrypted.pem", wantErr: ErrPassphraseRequired, errText: PassphraseEnv},
		{file: "ec-p256.pub", wantErr: ErrUnsupportedKey, errText: "public key"},
		{file: "two-keys.pem", errText: "after the PEM block"},
		{file: "not-a-key.txt", errText: "no PEM block"},
		{file: "truncated.pem", errText: "parsing PRIVATE KEY"},
		{file: "does-not-exist.pem", wantErr: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			sv, err := LoadSigner(ctx, path)
			if tt.wantErr == nil && tt.errText == "" {
				if err != nil {
					t.Fatalf("LoadSigner: %v", err)
				}
				checkSignerRoundTrip(t, sv, tt.pub)
				return
			}
			if err == nil {
				t.Fatal("LoadSigner succeeded, want error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("err = %q, want it to mention %q", err, tt.errText)
			}
			if !strings.Contains(err.Error(), "loading key \""+path+"\"") {
				t.Errorf("err = %q, want it to name the key", err)
			}
		})
	}
}

// checkSignerRoundTrip signs with sv and verifies with the public key file
// openssl derived, which proves the private key was parsed correctly.
func checkSignerRoundTrip(t *testing.T, sv signature.SignerVerifier, pubFile string) {
	t.Helper()
	msg := []byte("hello phones")
	sig, err := sv.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("SignMessage: %v", err)
	}
	if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
		t.Fatalf("self-verify: %v", err)
	}
	if pubFile == "" {
		return
	}
	pub, err := LoadPublic(filepath.Join("testdata", pubFile))
	if err != nil {
		t.Fatalf("LoadPublic: %v", err)
	}
	sum := sha256.Sum256(msg)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, sum[:], sig) {
			t.Fatal("ECDSA signature does not verify against openssl's public key")
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig); err != nil {
			t.Fatalf("RSA signature does not verify against openssl's public key: %v", err)
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, msg, sig) {
			t.Fatal("ed25519 signature does not verify against openssl's public key")
		}
	default:
		t.Fatalf("unexpected public key type %T", pub)
	}
	// Whatever the key type, the signer must honour a precomputed SHA-256
	// digest or refuse it; firmware signing depends on this.
	if _, ok := pub.(ed25519.PublicKey); ok {
		return
	}
	dsig, err := sv.SignMessage(nil, options.WithDigest(sum[:]))
	if err != nil {
		t.Fatalf("SignMessage WithDigest: %v", err)
	}
	if err := sv.VerifySignature(bytes.NewReader(dsig), bytes.NewReader(msg)); err != nil {
		t.Fatalf("digest signature does not verify over the message: %v", err)
	}
}

func TestLoadSignerOversized(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(filepath.Join("testdata", "ec-p256.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{"at limit", MaxKeyFileBytes, false},
		{"one byte over", MaxKeyFileBytes + 1, true},
		{"megabytes", 4 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whitespace after the block is allowed, so padding with
			// newlines makes a valid key of any size.
			b := append(append([]byte{}, good...), bytes.Repeat([]byte("\n"), tt.size-len(good))...)
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadSigner(context.Background(), path)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "limit") {
					t.Fatalf("err = %v, want a size limit error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
		})
	}
	big := filepath.Join(dir, "big.pub")
	if err := os.WriteFile(big, make([]byte, MaxKeyFileBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublic(big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("LoadPublic oversized: err = %v, want a size limit error", err)
	}
}

func TestLoadSignerNotRegular(t *testing.T) {
	_, err := LoadSigner(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v, want not a regular file", err)
	}
}

func TestURIs(t *testing.T) {
	abs, err := filepath.Abs(filepath.Join("testdata", "ec-p256.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		uri     string
		wantErr error // nil with ok=false means any error
		ok      bool
		scheme  string // must be named in the error
		errText string // must appear in the error
	}{
		{uri: abs, ok: true},
		{uri: "testdata/ec-p256.pem", ok: true},
		{uri: "./testdata/ec-p256.pem", ok: true},
		{uri: "file://" + abs, ok: true},
		{uri: "file://localhost" + abs, ok: true},
		// Supported schemes, but these references are incomplete: each
		// fails before any I/O (see pkcs11_test.go and kms_test.go).
		{uri: "pkcs11:token=ci;object=publisher", errText: "module-path is required"},
		{uri: "awskms:///arn:aws:kms:eu-west-1:1:key/x", errText: "kms specification"},
		{uri: "gcpkms://projects/p/locations/l/keyRings/r", errText: "kms specification"},
		{uri: "hashivault://publisher", errText: "VAULT_ADDR is not set"},
		{uri: "https://example.com/key.pem", wantErr: ErrUnsupportedURI, scheme: "https"},
		{uri: "file://example.com" + abs, wantErr: ErrUnsupportedURI},
		{uri: "file:relative.pem"},
		{uri: "file://" + abs + "?x=1"},
		{uri: ""},
	}
	t.Setenv("VAULT_ADDR", "")
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			_, err := LoadSigner(context.Background(), tt.uri)
			if tt.ok {
				if err != nil {
					t.Fatalf("LoadSigner: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadSigner succeeded, want error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.scheme != "" && !strings.Contains(err.Error(), `"`+tt.scheme+`"`) {
				t.Errorf("err = %q does not name scheme %q", err, tt.scheme)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("err = %q, want it to mention %q", err, tt.errText)
			}
			if _, perr := LoadPublic(tt.uri); perr == nil {
				t.Error("LoadPublic accepted the uri LoadSigner refused")
			}
		})
	}
}

func TestLoadSignerCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LoadSigner(ctx, "testdata/ec-p256.pem"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestParsePublicPEM(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr error
		errText string
		ok      bool
	}{
		{name: "p256", in: read("ec-p256.pub"), ok: true},
		{name: "ed25519", in: read("ed25519.pub"), ok: true},
		{name: "rsa2048", in: read("rsa2048.pub"), ok: true},
		{name: "p384", in: read("ec-p384.pub"), wantErr: ErrUnsupportedKey, errText: "P-384"},
		{name: "private key", in: read("ec-p256.pem"), errText: `PEM type "PRIVATE KEY"`},
		{name: "garbage", in: []byte("ssh-ed25519 AAAA..."), errText: "no PEM block"},
		{name: "empty", in: nil, errText: "no PEM block"},
		{name: "two blocks", in: append(read("ec-p256.pub"), read("ed25519.pub")...), errText: "after the PEM block"},
		{name: "bad DER", in: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), errText: "parsing public key"},
		{name: "oversized", in: bytes.Repeat([]byte(" "), MaxKeyFileBytes+1), errText: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := ParsePublicPEM(tt.in)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParsePublicPEM: %v", err)
				}
				out, err := MarshalPublicPEM(pub)
				if err != nil {
					t.Fatalf("MarshalPublicPEM: %v", err)
				}
				if !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(tt.in)) {
					t.Fatalf("re-encoded key differs from openssl's:\n%s\nvs\n%s", out, tt.in)
				}
				return
			}
			if err == nil {
				t.Fatal("ParsePublicPEM succeeded, want error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("err = %q, want it to mention %q", err, tt.errText)
			}
		})
	}
}

func TestMarshalPublicPEMRejects(t *testing.T) {
	tests := []struct {
		name string
		pub  crypto.PublicKey
	}{
		{"nil", nil},
		{"bytes", []byte("key")},
		{"nil ecdsa", (*ecdsa.PublicKey)(nil)},
		{"short ed25519", ed25519.PublicKey{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := MarshalPublicPEM(tt.pub); !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("err = %v, want ErrUnsupportedKey", err)
			}
		})
	}
}

func assertPEMType(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != want || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: want a single PEM %q block, got %q", path, want, b)
	}
}

// unsetEnv unsets an environment variable for the duration of the test and
// restores it afterwards (t.Setenv records the old value).
func unsetEnv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "")
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}
