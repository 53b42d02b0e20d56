package firmware

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// maxSignatureText bounds the base64 signature accepted: an RSA-8192
// signature is 1366 base64 characters, an ECDSA P-256 one at most 96.
const maxSignatureText = 4096

// minRSABits matches the keys package: smaller moduli are factorable.
const minRSABits = 2048

// Sign hashes r with SHA-256 as it streams and signs the digest with signer,
// returning the base64 (standard encoding, no newline) text that
// `cosign sign-blob --key` writes. The signer must accept a precomputed
// SHA-256 digest (ECDSA P-256 or RSA PKCS#1 v1.5 keys); Ed25519 signs whole
// messages and cannot sign a streamed bundle. The new signature is verified
// before it is returned, so a faulty signer (or a KMS that ignored the
// digest) never yields an unverifiable release.
func Sign(ctx context.Context, signer signature.Signer, r io.Reader) ([]byte, error) {
	if signer == nil {
		return nil, errors.New("signing bundle: nil signer")
	}
	pub, err := signer.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("signing bundle: getting public key: %w", err)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("signing bundle: %w", err)
	}
	digest, err := hashStream(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("signing bundle: hashing: %w", err)
	}
	sig, err := signer.SignMessage(bytes.NewReader(nil),
		options.WithDigest(digest),
		options.WithCryptoSignerOpts(crypto.SHA256),
		options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("signing bundle: %w", err)
	}
	if err := verifyDigest(pub, digest, sig); err != nil {
		return nil, fmt.Errorf("signing bundle: signer produced a signature that does not verify: %w", err)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out, nil
}

// SignFile signs the file at path; see Sign.
func SignFile(ctx context.Context, signer signature.Signer, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", path, err)
	}
	defer f.Close()
	sig, err := Sign(ctx, signer, f)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", path, err)
	}
	return sig, nil
}

// VerifySignature checks sigB64, a base64 signature as cosign writes it
// (surrounding whitespace, such as a trailing newline, is ignored), over the
// SHA-256 of everything read from r. The signature and key are checked
// before r is read, so a malformed signature costs nothing. Verification
// failures wrap ErrSignature; an error reading r does not, so callers can
// tell tampering from a broken download.
func VerifySignature(pub crypto.PublicKey, r io.Reader, sigB64 []byte) error {
	sig, err := decodeSignature(sigB64)
	if err != nil {
		return err
	}
	if err := checkPublicKey(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	digest, err := hashStream(context.Background(), r)
	if err != nil {
		return fmt.Errorf("verifying signature: hashing: %w", err)
	}
	if err := verifyDigest(pub, digest, sig); err != nil {
		return err
	}
	return nil
}

// VerifySignatureDigest is VerifySignature for a caller that already has
// the SHA-256 of the bundle, typically from hashing the download once for
// TUF, the signature and Read together.
func VerifySignatureDigest(pub crypto.PublicKey, digest []byte, sigB64 []byte) error {
	if len(digest) != sha256.Size {
		return fmt.Errorf("%w: digest is %d bytes, want a %d byte SHA-256", ErrSignature, len(digest), sha256.Size)
	}
	sig, err := decodeSignature(sigB64)
	if err != nil {
		return err
	}
	return verifyDigest(pub, digest, sig)
}

func decodeSignature(sigB64 []byte) ([]byte, error) {
	text := bytes.TrimSpace(sigB64)
	if len(text) == 0 {
		return nil, fmt.Errorf("%w: empty signature", ErrSignature)
	}
	if len(text) > maxSignatureText {
		return nil, fmt.Errorf("%w: signature of %d bytes exceeds the %d byte limit", ErrSignature, len(text), maxSignatureText)
	}
	sig := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(sig, text)
	if err != nil {
		return nil, fmt.Errorf("%w: decoding base64: %w", ErrSignature, err)
	}
	return sig[:n], nil
}

// checkPublicKey admits the key types whose signatures are defined over a
// SHA-256 digest, with the same size policy as the keys package.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		// A zero PublicKey makes crypto/ecdsa's own Bytes and Verify panic,
		// so the raw coordinates are the only way to refuse it first.
		//lint:ignore SA1019 checking for nil, not using the coordinates
		if k == nil || k.X == nil || k.Y == nil {
			return errors.New("empty ECDSA public key")
		}
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA curve %s, want P-256", k.Params().Name)
		}
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("empty RSA public key")
		}
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
	case ed25519.PublicKey:
		return errors.New("ed25519 keys sign whole messages, not a SHA-256 digest; use an ECDSA P-256 key")
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// verifyDigest accepts only ASN.1 DER for ECDSA, which is what cosign and
// openssl write; the raw r||s form the sigstore verifier also tolerates
// is refused so that each signature has one encoding.
func verifyDigest(pub crypto.PublicKey, digest, sig []byte) error {
	if err := checkPublicKey(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return fmt.Errorf("%w: ECDSA signature does not match", ErrSignature)
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig); err != nil {
			return fmt.Errorf("%w: RSA signature does not match: %w", ErrSignature, err)
		}
	}
	return nil
}

func hashStream(ctx context.Context, r io.Reader) ([]byte, error) {
	bp := getBuf()
	defer putBuf(bp)
	h := sha256.New()
	if _, err := io.CopyBuffer(h, readerOnly{ctxReader{ctx, r}}, *bp); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
