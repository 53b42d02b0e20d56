// Package keys owns key generation and loading by URI.
//
// A key URI is one of:
//
//   - a plain filesystem path or a file:// URI with an absolute path: a PEM
//     private key, optionally passphrase-encrypted (the passphrase comes from
//     the DIALTONE_KEY_PASSPHRASE environment variable, never a flag);
//   - a pkcs11: URI (RFC 7512) naming an ECDSA P-256 key in a PKCS#11 token,
//     such as pkcs11:token=dialtone;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so
//     (the PIN comes from pin-value, pin-source or DIALTONE_PKCS11_PIN). This
//     needs a cgo build; without cgo such URIs fail with ErrUnsupportedURI;
//   - a cloud KMS reference handled by sigstore's KMS providers: awskms://,
//     gcpkms://, azurekms:// and hashivault://, configured and authenticated
//     the way those providers document (AWS_*, GOOGLE_APPLICATION_CREDENTIALS,
//     AZURE_*, VAULT_ADDR and VAULT_TOKEN environment variables).
//
// Any other scheme is rejected with ErrUnsupportedURI, so that a typo never
// silently falls back to a file of the same name.
//
// Private key files are PEM-encoded PKCS#8 ("PRIVATE KEY"); SEC 1 ("EC
// PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY") files are accepted too because
// that is what openssl writes by default. Encrypted keys are PKCS#8
// "ENCRYPTED PRIVATE KEY" (PBES2, as written by openssl genpkey -aes-256-cbc
// or openssl pkcs8 -topk8 -v2 aes-256-cbc) or cosign's "ENCRYPTED SIGSTORE
// PRIVATE KEY". Public keys are PEM-encoded PKIX ("PUBLIC KEY"), the format
// cosign reads with --key. ECDSA keys must be on P-256: the publisher
// signature is defined as ECDSA P-256 over SHA-256, and a key on another
// curve would pair with a different hash in cosign.
package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/sigstore/sigstore/pkg/signature"
)

// MaxKeyFileBytes bounds every key file read: real keys are a few KiB at
// most, so anything larger is a wrong path (an image, a log), not a key.
const MaxKeyFileBytes = 64 << 10

// minRSABits is the smallest RSA modulus accepted; smaller keys are
// factorable by well-funded attackers.
const minRSABits = 2048

// Errors callers test with errors.Is.
var (
	// ErrUnsupportedURI reports a key URI whose scheme keys does not know
	// (or, for pkcs11:, not compiled into this build).
	ErrUnsupportedURI = errors.New("unsupported key uri")
	// ErrUnsupportedKey reports a well-formed key of a type, curve or size
	// that Dialtone does not sign or verify with.
	ErrUnsupportedKey = errors.New("unsupported key type")
	// ErrPassphraseRequired reports an encrypted key file loaded while
	// DIALTONE_KEY_PASSPHRASE is unset or empty.
	ErrPassphraseRequired = errors.New("passphrase required")
	// ErrWrongPassphrase reports an encrypted key file that the passphrase
	// does not decrypt.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrWrongPIN reports a PKCS#11 login refused for an incorrect PIN.
	ErrWrongPIN = errors.New("wrong PIN")
	// ErrKeyNotFound reports a key URI that names no key in its token.
	ErrKeyNotFound = errors.New("key not found")
)

// Generate writes a new ECDSA P-256 private key to path (PEM "PRIVATE KEY",
// PKCS#8, mode 0600) and its public half to path+".pub" (PEM "PUBLIC KEY",
// PKIX, mode 0644). Each file appears atomically and is fsynced, so a crash
// never leaves a truncated key behind. It refuses to overwrite either file:
// the error wraps fs.ErrExist. Losing a signing key that is pinned in TUF
// metadata means a key rotation, so clobbering one must never be a default.
func Generate(path string) error {
	_, err := generateFile(path, nil)
	return err
}

// generateFile is Generate, and GenerateEncrypted when passphrase is not
// empty. It returns the new public key.
func generateFile(path string, passphrase []byte) (crypto.PublicKey, error) {
	pubPath := path + ".pub"
	for _, p := range []string{path, pubPath} {
		if _, statErr := os.Lstat(p); statErr == nil {
			return nil, fmt.Errorf("generating key: %q: %w", p, fs.ErrExist)
		} else if !errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("generating key: %w", statErr)
		}
	}

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	var privPEM []byte
	if len(passphrase) == 0 {
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("generating key: encoding private key: %w", err)
		}
		privPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	} else {
		privPEM, err = encryptPKCS8PEM(priv, passphrase)
		if err != nil {
			return nil, fmt.Errorf("generating key: %w", err)
		}
	}
	pubPEM, err := MarshalPublicPEM(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}

	if err := writeNewFile(path, privPEM, 0o600); err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	if err := writeNewFile(pubPath, pubPEM, 0o644); err != nil {
		// A private key without its public half is only half a result,
		// and we created it a moment ago, so nobody depends on it yet.
		_ = os.Remove(path)
		return nil, fmt.Errorf("generating key: %w", err)
	}
	return priv.Public(), nil
}

// LoadSigner loads a private key by URI and returns a SignerVerifier that
// hashes with SHA-256 (see the package documentation for the URI forms).
// ECDSA P-256, Ed25519 and RSA (2048 bits or more) keys are supported in
// files and KMS; PKCS#11 keys must be ECDSA P-256. An encrypted key file is
// decrypted with the passphrase in DIALTONE_KEY_PASSPHRASE.
//
// A PKCS#11 SignerVerifier holds a session with the token; it also
// implements io.Closer, which callers that load keys repeatedly should call
// once done. ctx bounds KMS calls made while loading.
func LoadSigner(ctx context.Context, uri string) (signature.SignerVerifier, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("loading key %q: %w", RedactURI(uri), err)
	}
	switch kind, scheme := classifyURI(uri); kind {
	case uriPKCS11:
		sv, err := loadPKCS11Signer(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("loading key %q: %w", RedactURI(uri), err)
		}
		return sv, nil
	case uriKMS:
		sv, err := loadKMSSigner(ctx, scheme, uri)
		if err != nil {
			return nil, fmt.Errorf("loading key %q: %w", uri, err)
		}
		return sv, nil
	}
	path, err := pathFromURI(uri)
	if err != nil {
		return nil, fmt.Errorf("loading key %q: %w", uri, err)
	}
	b, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("loading key %q: %w", uri, err)
	}
	priv, err := parsePrivatePEM(b, passphraseFromEnv)
	if err != nil {
		return nil, fmt.Errorf("loading key %q: %w", uri, err)
	}
	sv, err := signature.LoadSignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("loading key %q: %w", uri, err)
	}
	return sv, nil
}

// LoadPublic reads a PEM public key file (PKIX) by path or file:// URI.
// A pkcs11: or KMS key's public half comes from LoadSigner's PublicKey
// method instead: this function reads files only.
func LoadPublic(uri string) (crypto.PublicKey, error) {
	if kind, scheme := classifyURI(uri); kind != uriFile {
		return nil, fmt.Errorf("loading public key %q: %w: scheme %q: LoadPublic reads files; "+
			"use the PublicKey method of the key LoadSigner returns", RedactURI(uri), ErrUnsupportedURI, scheme)
	}
	path, err := pathFromURI(uri)
	if err != nil {
		return nil, fmt.Errorf("loading public key %q: %w", uri, err)
	}
	b, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("loading public key %q: %w", uri, err)
	}
	pub, err := ParsePublicPEM(b)
	if err != nil {
		return nil, fmt.Errorf("loading public key %q: %w", uri, err)
	}
	return pub, nil
}

// ParsePublicPEM parses exactly one PEM "PUBLIC KEY" block (PKIX). It
// returns *ecdsa.PublicKey (P-256 only), ed25519.PublicKey or
// *rsa.PublicKey.
func ParsePublicPEM(b []byte) (crypto.PublicKey, error) {
	if len(b) > MaxKeyFileBytes {
		return nil, fmt.Errorf("parsing public key: %d bytes exceeds the %d byte limit", len(b), MaxKeyFileBytes)
	}
	block, err := decodeSinglePEM(b)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("parsing public key: PEM type %q, want %q", block.Type, "PUBLIC KEY")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	if err := checkPublic(pub); err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	return pub, nil
}

// MarshalPublicPEM encodes pub as a PEM "PUBLIC KEY" block (PKIX), the form
// cosign and openssl read.
func MarshalPublicPEM(pub crypto.PublicKey) ([]byte, error) {
	if err := checkPublic(pub); err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// passFunc supplies the passphrase of an encrypted key, or an error that
// says how to supply one. It is called only for encrypted keys.
type passFunc func() ([]byte, error)

func parsePrivatePEM(b []byte, pass passFunc) (crypto.Signer, error) {
	block, err := decodeSinglePEM(b)
	if err != nil {
		return nil, err
	}
	if len(block.Headers) > 0 {
		// RFC 1421 Proc-Type/DEK-Info headers mean legacy openssl encryption,
		// whose MD5-based key derivation Go deprecated as insecure.
		return nil, fmt.Errorf("%w: legacy passphrase-encrypted PEM (Proc-Type/DEK-Info headers) is not supported; "+
			"convert it with: openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW", ErrUnsupportedKey)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case pemEncryptedPKCS8, pemEncryptedSigstore, pemEncryptedCosign:
		key, err = decryptPrivateKey(block, pass)
		if err != nil {
			return nil, err
		}
	case "PUBLIC KEY":
		return nil, fmt.Errorf("%w: this is a public key; a private key is needed to sign", ErrUnsupportedKey)
	default:
		return nil, fmt.Errorf("%w: PEM type %q, want %q", ErrUnsupportedKey, block.Type, "PRIVATE KEY")
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T cannot sign", ErrUnsupportedKey, key)
	}
	if err := checkPublic(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}

// checkPublic enforces the key policy shared by private and public keys.
func checkPublic(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return fmt.Errorf("%w: empty ECDSA key", ErrUnsupportedKey)
		}
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ECDSA curve %s, want P-256", ErrUnsupportedKey, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: ed25519 key of %d bytes", ErrUnsupportedKey, len(k))
		}
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return fmt.Errorf("%w: empty RSA key", ErrUnsupportedKey)
		}
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("%w: RSA key of %d bits, want at least %d", ErrUnsupportedKey, k.N.BitLen(), minRSABits)
		}
	default:
		return fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
	}
	return nil
}

// decodeSinglePEM insists on one block and nothing but whitespace after it,
// so that a file holding two keys is never read as whichever comes first.
func decodeSinglePEM(b []byte) (*pem.Block, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	return block, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	// Stat alone is not enough: the file may grow between Stat and read.
	b, err := io.ReadAll(io.LimitReader(f, MaxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxKeyFileBytes {
		return nil, fmt.Errorf("file exceeds the %d byte limit for key files", MaxKeyFileBytes)
	}
	return b, nil
}
