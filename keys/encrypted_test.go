package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
)

func TestLoadSignerEncryptedFixtures(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		file       string
		pub        string // matching public key file, if any
		passphrase *string
		wantErr    error
		errText    string
	}{
		{file: "ec-p256-encrypted.pem", pub: "ec-p256.pub", passphrase: ptr("secret")},
		{file: "ec-p256-genpkey-aes.pem", pub: "ec-p256-genpkey-aes.pub", passphrase: ptr("secret")},
		{file: "ec-p256-encrypted-scrypt.pem", pub: "ec-p256.pub", passphrase: ptr("secret")},
		{file: "ed25519-encrypted.pem", pub: "ed25519.pub", passphrase: ptr("secret")},
		{file: "ec-p256-sigstore.pem", pub: "ec-p256-sigstore.pub", passphrase: ptr("secret")},

		{file: "ec-p256-encrypted.pem", passphrase: ptr("Secret"), wantErr: ErrWrongPassphrase, errText: PassphraseEnv},
		{file: "ec-p256-encrypted-scrypt.pem", passphrase: ptr("hunter3"), wantErr: ErrWrongPassphrase, errText: "wrong passphrase"},
		{file: "ec-p256-encrypted.pem", passphrase: nil, wantErr: ErrPassphraseRequired, errText: "set the passphrase in the environment variable " + PassphraseEnv},
		{file: "ec-p256-encrypted.pem", passphrase: ptr(""), wantErr: ErrPassphraseRequired, errText: PassphraseEnv + " is empty"},
		{file: "ec-p256-sigstore.pem", passphrase: ptr("hunter3"), wantErr: ErrWrongPassphrase, errText: PassphraseEnv},
		{file: "ec-p256-sigstore.pem", passphrase: nil, wantErr: ErrPassphraseRequired, errText: PassphraseEnv},

		{file: "ec-p256-legacy-encrypted.pem", passphrase: ptr("secret"), wantErr: ErrUnsupportedKey, errText: "openssl pkcs8 -topk8"},
		{file: "ec-p256-pbes1.pem", passphrase: ptr("secret"), wantErr: ErrUnsupportedKey, errText: "PBES2"},
		// A passphrase in the environment changes nothing for plain keys.
		{file: "ec-p256.pem", pub: "ec-p256.pub", passphrase: ptr("secret")},
	}
	for _, tt := range tests {
		name := tt.file + "/"
		if tt.passphrase == nil {
			name += "unset"
		} else {
			name += "pass=" + *tt.passphrase
		}
		t.Run(name, func(t *testing.T) {
			if tt.passphrase == nil {
				unsetEnv(t, PassphraseEnv)
			} else {
				t.Setenv(PassphraseEnv, *tt.passphrase)
			}
			path := filepath.Join("testdata", tt.file)
			sv, err := LoadSigner(ctx, path)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadSigner: %v", err)
				}
				checkSignerRoundTrip(t, sv, tt.pub)
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("err = %q, want it to mention %q", err, tt.errText)
			}
			if tt.passphrase != nil && *tt.passphrase != "" && strings.Contains(err.Error(), *tt.passphrase) {
				t.Errorf("err = %q quotes the passphrase", err)
			}
		})
	}
}

func TestGenerateEncrypted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "root.key")
	const pass = "correct horse battery staple"
	if err := GenerateEncrypted(path, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	assertPEMType(t, path, pemEncryptedPKCS8)
	assertPEMType(t, path+".pub", "PUBLIC KEY")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", fi, err)
	}
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte(pass)) {
		t.Fatal("the key file contains the passphrase")
	}

	t.Setenv(PassphraseEnv, pass)
	sv, err := LoadSigner(context.Background(), path)
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	filePub, err := LoadPublic(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	checkSignsFor(t, sv, filePub)

	// openssl must read it too, and find the same public key.
	openssl := requireOpenSSL(t)
	cmd := exec.Command(openssl, "pkey", "-in", path, "-passin", "env:"+PassphraseEnv, "-pubout")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl cannot read the encrypted key: %v", err)
	}
	want, _ := os.ReadFile(path + ".pub")
	if !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(want)) {
		t.Fatalf("openssl derives another public key:\n%s\nwant\n%s", out, want)
	}
	cmd = exec.Command(openssl, "pkey", "-in", path, "-passin", "pass:wrong", "-noout")
	if err := cmd.Run(); err == nil {
		t.Fatal("openssl accepted a wrong passphrase")
	}

	t.Run("refuses overwrite", func(t *testing.T) {
		if err := GenerateEncrypted(path, []byte(pass)); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("err = %v, want fs.ErrExist", err)
		}
	})
	t.Run("empty passphrase", func(t *testing.T) {
		p := filepath.Join(dir, "empty.key")
		if err := GenerateEncrypted(p, nil); !errors.Is(err, ErrPassphraseRequired) {
			t.Fatalf("err = %v, want ErrPassphraseRequired", err)
		}
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a key was written anyway")
		}
	})
}

func TestGenerateURIFile(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()

	unsetEnv(t, PassphraseEnv)
	plain := filepath.Join(dir, "plain.key")
	pub, err := GenerateURI(ctx, "file://"+plain)
	if err != nil {
		t.Fatal(err)
	}
	assertPEMType(t, plain, "PRIVATE KEY")
	filePub, err := LoadPublic(plain + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if !filePub.(*ecdsa.PublicKey).Equal(pub) {
		t.Fatal("GenerateURI returned another public key than it wrote")
	}

	t.Setenv(PassphraseEnv, "s3cret")
	enc := filepath.Join(dir, "enc.key")
	if _, err := GenerateURI(ctx, enc); err != nil {
		t.Fatal(err)
	}
	// Encrypted with the passphrase: TestGenerateEncrypted decrypts such
	// files, which is slow enough under -race not to do it twice.
	assertPEMType(t, enc, pemEncryptedPKCS8)
	if _, err := GenerateURI(ctx, enc); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second GenerateURI: err = %v, want fs.ErrExist", err)
	}
	if _, err := GenerateURI(ctx, "https://example.com/k"); !errors.Is(err, ErrUnsupportedURI) {
		t.Fatalf("GenerateURI https: err = %v, want ErrUnsupportedURI", err)
	}
}

// TestDecryptHostileFiles feeds encrypted keys that are corrupt or ask for
// absurd key derivation costs: each must fail quickly, without a panic.
func TestDecryptHostileFiles(t *testing.T) {
	good := readPEMBlock(t, "ec-p256-encrypted.pem")
	var info struct {
		Algo pkix.AlgorithmIdentifier
		Data []byte
	}
	if _, err := asn1.Unmarshal(good, &info); err != nil {
		t.Fatal(err)
	}
	reencode := func(algo pkix.AlgorithmIdentifier, data []byte) []byte {
		b, err := asn1.Marshal(struct {
			Algo pkix.AlgorithmIdentifier
			Data []byte
		}{algo, data})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	kdf := func(oid asn1.ObjectIdentifier, params any) []byte {
		p, err := asn1.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		var pb struct {
			KDF    pkix.AlgorithmIdentifier
			Scheme pkix.AlgorithmIdentifier
		}
		if _, err := asn1.Unmarshal(info.Algo.Parameters.FullBytes, &pb); err != nil {
			t.Fatal(err)
		}
		pb.KDF = pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.RawValue{FullBytes: p}}
		full, err := asn1.Marshal(pb)
		if err != nil {
			t.Fatal(err)
		}
		return reencode(pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: full}}, info.Data)
	}
	tests := []struct {
		name    string
		der     []byte
		errText string
	}{
		{"ciphertext not whole blocks", reencode(info.Algo, info.Data[:len(info.Data)-3]), "corrupt"},
		{"empty ciphertext", reencode(info.Algo, nil), ""},
		{"pbkdf2 2^40 iterations", kdf(oidPBKDF2, struct {
			Salt []byte
			N    int64
		}{[]byte("saltsalt"), 1 << 40}), "iteration count"},
		{"scrypt 2^30", kdf(oidScrypt, struct {
			Salt    []byte
			N, R, P int64
		}{[]byte("saltsalt"), 1 << 30, 8, 1}), "scrypt parameters"},
		{"not asn1", []byte("garbage"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decryptPKCS8(tt.der, []byte("secret"))
			if err == nil {
				t.Fatal("decrypted a hostile key")
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.errText)
			}
		})
	}
}

// FuzzParsePrivatePEM checks that no key file, encrypted or not, panics the
// loader.
func FuzzParsePrivatePEM(f *testing.F) {
	for _, name := range []string{"ec-p256.pem", "ec-p256-encrypted.pem", "ec-p256-legacy-encrypted.pem", "rsa2048.pem"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	pass := func() ([]byte, error) { return []byte("secret"), nil }
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parsePrivatePEM(b, pass)
		// The DER inside an encrypted block, straight to the decrypter.
		if block, _ := pem.Decode(b); block != nil && block.Type == pemEncryptedPKCS8 {
			_, _ = decryptPKCS8(block.Bytes, []byte("secret"))
		}
	})
}

func readPEMBlock(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	return block.Bytes
}

// checkSignsFor signs with sv and verifies the signature over SHA-256 with
// pub, an ECDSA key that did not come from sv.
func checkSignsFor(t *testing.T, sv signature.SignerVerifier, pub crypto.PublicKey) {
	t.Helper()
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, want ECDSA", pub)
	}
	msg := []byte("dialtone firmware 7.0")
	sig, err := sv.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("SignMessage: %v", err)
	}
	sum := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(ec, sum[:], sig) {
		t.Fatal("signature does not verify with the public key")
	}
	if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader(append(msg, '!'))); err == nil {
		t.Fatal("VerifySignature accepted a signature over another message")
	}
}

func requireOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: install with: make deps (apt-get install openssl)")
	}
	return p
}

func ptr(s string) *string { return &s }
