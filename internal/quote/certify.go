package quote

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Errors VerifyCertify and DeviceKeyPublic wrap, besides ErrMalformed,
// ErrSignature and ErrNonce.
var (
	// ErrCertifiedKey means the key's public area is not that of a
	// TPM-generated, TPM-bound, unrestricted ECDSA P-256 signing key.
	ErrCertifiedKey = errors.New("not an acceptable device key")
	// ErrCertifiedName means the certification names another key than the
	// public area offered with it.
	ErrCertifiedName = errors.New("certification is for another key")
)

// Certification is what a phone sends to have its device key certified:
// the TPMS_ATTEST of a TPM2_Certify of the key by the AK, and the AK's
// TPMT_SIGNATURE over it, both marshalled.
type Certification struct {
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
}

// DeviceKeyPublic parses a marshalled TPMT_PUBLIC and checks that it is a
// device key as agent/tpm creates them: an ECDSA P-256 / SHA-256 signing
// key the TPM generated (sensitiveDataOrigin) and can never export
// (fixedTPM, fixedParent), unrestricted so that it signs outside data such
// as TLS handshakes, and unable to decrypt. It returns the key.
func DeviceKeyPublic(b []byte) (*ecdsa.PublicKey, error) {
	pub, err := strict[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertifiedKey, err)
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgECC || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: want an ECC key with SHA-256 names", ErrCertifiedKey)
	}
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, fmt.Errorf("%w: the key is not TPM-generated and bound to its TPM", ErrCertifiedKey)
	}
	if !a.SignEncrypt || a.Decrypt || a.Restricted {
		return nil, fmt.Errorf("%w: want an unrestricted signing-only key", ErrCertifiedKey)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertifiedKey, err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 || parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, fmt.Errorf("%w: want ECDSA on P-256", ErrCertifiedKey)
	}
	if s, err := parms.Scheme.Details.ECDSA(); err != nil || s.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: want the scheme fixed to ECDSA with SHA-256", ErrCertifiedKey)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertifiedKey, err)
	}
	// The key goes into an X.509 certificate: refuse a point off the curve
	// here rather than leave it to whoever parses that certificate.
	if len(point.X.Buffer) != 32 || len(point.Y.Buffer) != 32 {
		return nil, fmt.Errorf("%w: coordinates of %d and %d bytes", ErrCertifiedKey, len(point.X.Buffer), len(point.Y.Buffer))
	}
	raw := append(append([]byte{4}, point.X.Buffer...), point.Y.Buffer...)
	if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertifiedKey, err)
	}
	k, err := tpm2.ECDSAPub(parms, point)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertifiedKey, err)
	}
	return k, nil
}

// VerifyCertify checks that the AK certified, over the verifier's nonce,
// the key whose marshalled TPMT_PUBLIC is keyPublic, and that this is an
// acceptable device key (DeviceKeyPublic). It returns the device's public
// key.
//
// The AK being a restricted key of a TPM the verifier enrolled, its
// signature over a TPM_ST_ATTEST_CERTIFY structure means that TPM holds the
// private part of the key with this name; the name (a digest of the whole
// public area) binds the attributes checked here.
func VerifyCertify(ak *ecdsa.PublicKey, c Certification, nonce []byte, keyPublic []byte) (*ecdsa.PublicKey, error) {
	if err := verifySignature(ak, c.Attest, c.Signature); err != nil {
		return nil, err
	}
	// Signed by the AK, so made by the TPM; strict all the same, since a
	// TPM writes the canonical form and nothing after it.
	att, err := strict[tpm2.TPMSAttest](c.Attest)
	if err != nil {
		return nil, fmt.Errorf("%w: attest: %v", ErrMalformed, err)
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, fmt.Errorf("%w: magic %#x, not TPM-generated", ErrMalformed, uint32(att.Magic))
	}
	if att.Type != tpm2.TPMSTAttestCertify {
		return nil, fmt.Errorf("%w: attestation of type %#x, not a certification", ErrMalformed, uint16(att.Type))
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		return nil, ErrNonce
	}
	info, err := att.Attested.Certify()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(info.Name.Buffer, Name(keyPublic)) {
		return nil, ErrCertifiedName
	}
	return DeviceKeyPublic(keyPublic)
}

// verifySignature checks an ECDSA / SHA-256 TPMT_SIGNATURE by key over
// msg.
func verifySignature(key *ecdsa.PublicKey, msg, signature []byte) error {
	rb, sb, err := parseECDSASignature(signature)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(msg)
	r, s := new(big.Int).SetBytes(rb), new(big.Int).SetBytes(sb)
	if key == nil || !ecdsa.Verify(key, digest[:], r, s) {
		return ErrSignature
	}
	return nil
}
