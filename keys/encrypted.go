package keys

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/youmark/pkcs8"
)

// PassphraseEnv names the environment variable that holds the passphrase of
// encrypted key files. There is deliberately no flag: a flag would end up in
// shell history and in the process list.
const PassphraseEnv = "DIALTONE_KEY_PASSPHRASE"

// PEM types of encrypted private keys.
const (
	// pemEncryptedPKCS8 is RFC 5958 EncryptedPrivateKeyInfo (PKCS#8 with
	// PBES2), what openssl writes.
	pemEncryptedPKCS8 = "ENCRYPTED PRIVATE KEY"
	// pemEncryptedSigstore is cosign's format: a JSON envelope (scrypt and
	// NaCl secretbox) around a PKCS#8 key, as written by cosign
	// generate-key-pair. pemEncryptedCosign is its name before cosign 2.
	pemEncryptedSigstore = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemEncryptedCosign   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// Key derivation settings for GenerateEncrypted: PBKDF2-HMAC-SHA256 with
// OWASP's 2023 iteration count, and AES-256-CBC, which openssl 1.1 and 3
// read.
const (
	generatePBKDF2Iterations = 600_000
	generateSaltBytes        = 16
)

// Limits on the key derivation cost an encrypted key file may ask for, so
// that a hostile or corrupt file cannot pin a CPU or exhaust memory.
const (
	maxPBKDF2Iterations = 10_000_000
	maxScryptMemory     = 256 << 20 // 128 * N * r bytes
)

// GenerateEncrypted is Generate, but the private key file is encrypted with
// passphrase: PEM "ENCRYPTED PRIVATE KEY" (PKCS#8, PBES2 with
// PBKDF2-HMAC-SHA256 and AES-256-CBC), the standard form that openssl reads.
// LoadSigner decrypts it with the passphrase in DIALTONE_KEY_PASSPHRASE. An
// empty passphrase is refused.
//
// cosign (v2.6) reads neither this form with --key nor with
// import-key-pair, only its own "ENCRYPTED SIGSTORE PRIVATE KEY" (which
// LoadSigner reads too). To hand such a key to cosign, decrypt it with
// openssl pkcs8 and run cosign import-key-pair on the result.
func GenerateEncrypted(path string, passphrase []byte) error {
	if len(passphrase) == 0 {
		return fmt.Errorf("generating key: %w: empty passphrase", ErrPassphraseRequired)
	}
	_, err := generateFile(path, passphrase)
	return err
}

// passphraseFromEnv is the passFunc of LoadSigner.
func passphraseFromEnv() ([]byte, error) {
	v, ok := os.LookupEnv(PassphraseEnv)
	if !ok {
		return nil, fmt.Errorf("%w: the key file is encrypted; set the passphrase in the environment variable %s",
			ErrPassphraseRequired, PassphraseEnv)
	}
	if v == "" {
		return nil, fmt.Errorf("%w: the key file is encrypted and the environment variable %s is empty",
			ErrPassphraseRequired, PassphraseEnv)
	}
	return []byte(v), nil
}

// encryptPKCS8PEM encodes priv as PEM "ENCRYPTED PRIVATE KEY".
func encryptPKCS8PEM(priv crypto.PrivateKey, passphrase []byte) ([]byte, error) {
	der, err := pkcs8.MarshalPrivateKey(priv, passphrase, &pkcs8.Opts{
		Cipher: pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{
			SaltSize:       generateSaltBytes,
			IterationCount: generatePBKDF2Iterations,
			HMACHash:       crypto.SHA256,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("encrypting private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemEncryptedPKCS8, Bytes: der}), nil
}

// decryptPrivateKey decrypts an encrypted PEM block of one of the
// pemEncrypted* types and parses the PKCS#8 key inside.
func decryptPrivateKey(block *pem.Block, pass passFunc) (any, error) {
	if pass == nil {
		return nil, fmt.Errorf("%w: the key (PEM type %q) is encrypted", ErrPassphraseRequired, block.Type)
	}
	passphrase, err := pass()
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case pemEncryptedPKCS8:
		return decryptPKCS8(block.Bytes, passphrase)
	default: // pemEncryptedSigstore, pemEncryptedCosign
		der, err := encrypted.Decrypt(block.Bytes, passphrase)
		if err != nil {
			if strings.Contains(err.Error(), "decryption failed") {
				return nil, fmt.Errorf("decrypting %s: %w (from %s)", block.Type, ErrWrongPassphrase, PassphraseEnv)
			}
			return nil, fmt.Errorf("decrypting %s: %w", block.Type, err)
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("parsing decrypted %s: %w", block.Type, err)
		}
		return key, nil
	}
}

// decryptPKCS8 decrypts and parses an EncryptedPrivateKeyInfo.
func decryptPKCS8(der, passphrase []byte) (key any, err error) {
	if err := checkPKCS8Cost(der); err != nil {
		return nil, fmt.Errorf("decrypting %s: %w", pemEncryptedPKCS8, err)
	}
	// The library decrypts CBC without checking that the ciphertext and IV
	// are whole blocks, which panics in crypto/cipher on a corrupt file.
	defer func() {
		if r := recover(); r != nil {
			key, err = nil, fmt.Errorf("decrypting %s: corrupt encrypted key (%v)", pemEncryptedPKCS8, r)
		}
	}()
	key, err = pkcs8.ParsePKCS8PrivateKey(der, passphrase)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "incorrect password"):
			return nil, fmt.Errorf("decrypting %s: %w (from %s)", pemEncryptedPKCS8, ErrWrongPassphrase, PassphraseEnv)
		case strings.Contains(msg, "only PBES2"), strings.Contains(msg, "only PKCS #5 v2.0"):
			return nil, fmt.Errorf("%w: %s: %v; re-encrypt it with: openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW",
				ErrUnsupportedKey, pemEncryptedPKCS8, err)
		}
		return nil, fmt.Errorf("decrypting %s: %w", pemEncryptedPKCS8, err)
	}
	return key, nil
}

// OIDs of the PBES2 key derivation functions (RFC 8018, RFC 7914).
var (
	oidPBES2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
)

// checkPKCS8Cost reads the key derivation parameters of an
// EncryptedPrivateKeyInfo and refuses costs above the limits. Structures it
// cannot read are left for the decryption library to report.
func checkPKCS8Cost(der []byte) error {
	var info struct {
		Algo pkix.AlgorithmIdentifier
		Data []byte
	}
	if _, err := asn1.Unmarshal(der, &info); err != nil || !info.Algo.Algorithm.Equal(oidPBES2) {
		return nil
	}
	var params struct {
		KDF    pkix.AlgorithmIdentifier
		Scheme pkix.AlgorithmIdentifier
	}
	if _, err := asn1.Unmarshal(info.Algo.Parameters.FullBytes, &params); err != nil {
		return nil
	}
	switch {
	case params.KDF.Algorithm.Equal(oidPBKDF2):
		var p struct {
			Salt       []byte
			Iterations int64
			Rest       asn1.RawValue `asn1:"optional"`
		}
		if _, err := asn1.Unmarshal(params.KDF.Parameters.FullBytes, &p); err != nil {
			return nil
		}
		if p.Iterations < 1 || p.Iterations > maxPBKDF2Iterations {
			return fmt.Errorf("PBKDF2 iteration count %d is outside 1..%d", p.Iterations, maxPBKDF2Iterations)
		}
	case params.KDF.Algorithm.Equal(oidScrypt):
		var p struct {
			Salt []byte
			N    int64
			R    int64
			P    int64
			Rest asn1.RawValue `asn1:"optional"`
		}
		if _, err := asn1.Unmarshal(params.KDF.Parameters.FullBytes, &p); err != nil {
			return nil
		}
		if p.N < 2 || p.R < 1 || p.P < 1 || p.P > 16 || p.R > maxScryptMemory/128 || p.N > maxScryptMemory/(128*p.R) {
			return fmt.Errorf("scrypt parameters N=%d r=%d p=%d exceed the limit of %d MiB and p <= 16",
				p.N, p.R, p.P, maxScryptMemory>>20)
		}
	}
	return nil
}
