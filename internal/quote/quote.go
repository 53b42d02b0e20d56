// Package quote owns checking a TPM 2.0 quote: that the attestation key
// signed it, over the nonce the verifier chose, and over the PCR values the
// verifier expects. The server's attestation uses it on what phones send;
// the agent's tests use it on what their swtpm produced.
//
// Everything here parses outside data: each parser refuses trailing bytes
// and anything but the one key type and structure Dialtone uses.
package quote

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Errors Verify wraps, for callers to tell the reasons apart.
var (
	ErrMalformed = errors.New("malformed quote")
	ErrKey       = errors.New("not an acceptable attestation key")
	ErrSignature = errors.New("quote signature does not verify")
	ErrNonce     = errors.New("quote is not over this nonce")
	ErrSelection = errors.New("quote covers other PCRs")
	ErrPCRs      = errors.New("quoted PCR values differ")
)

// Quote is what a phone sends: the TPMS_ATTEST its TPM produced and the
// TPMT_SIGNATURE over it, both marshalled.
type Quote struct {
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
}

// AKPublic parses a marshalled TPMT_PUBLIC and checks that it is an
// attestation key as agent/tpm.AKTemplate makes them: a restricted,
// TPM-resident ECDSA P-256 / SHA-256 signing key. It returns the key.
func AKPublic(b []byte) (*ecdsa.PublicKey, error) {
	pub, err := strict[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgECC || pub.NameAlg != tpm2.TPMAlgSHA256 || !a.Restricted || !a.SignEncrypt || a.Decrypt ||
		!a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, fmt.Errorf("%w: want a restricted, TPM-generated, fixed ECC signing key with SHA-256 names", ErrKey)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 || parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, fmt.Errorf("%w: want ECDSA on P-256", ErrKey)
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	k, err := tpm2.ECDSAPub(parms, point)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	return k, nil
}

// Name is the TPM name of a marshalled TPMT_PUBLIC with a SHA-256 name
// algorithm: what MakeCredential binds a credential to.
func Name(public []byte) []byte {
	d := sha256.Sum256(public)
	return append([]byte{byte(tpm2.TPMAlgSHA256 >> 8), byte(tpm2.TPMAlgSHA256)}, d[:]...)
}

// strict unmarshals b as a T and refuses bytes left over or a value that
// does not marshal back to b.
func strict[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (*T, error) {
	v, err := tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(*v), b) {
		return nil, errors.New("trailing or non-canonical bytes")
	}
	return v, nil
}

// Verify checks q against the AK (marshalled TPMT_PUBLIC), the nonce the
// verifier issued, and the SHA-256 PCR values it expects, which must be
// exactly the selection quoted. It returns the parsed attestation.
func Verify(akPublic []byte, q Quote, nonce []byte, pcrs map[uint][32]byte) (*tpm2.TPMSAttest, error) {
	key, err := AKPublic(akPublic)
	if err != nil {
		return nil, err
	}
	return VerifyKey(key, q, nonce, pcrs)
}

// VerifyKey is Verify with the AK already parsed by AKPublic: a verifier
// parses a device's AK once, at enrollment.
func VerifyKey(key *ecdsa.PublicKey, q Quote, nonce []byte, pcrs map[uint][32]byte) (*tpm2.TPMSAttest, error) {
	if err := verifySignature(key, q.Attest, q.Signature); err != nil {
		return nil, err
	}
	// Signed by the AK, a restricted key: these bytes came from the TPM
	// as they are, so parsing them needs no canonical-form check.
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil {
		return nil, fmt.Errorf("%w: attest: %v", ErrMalformed, err)
	}
	if att.Type != tpm2.TPMSTAttestQuote {
		return nil, fmt.Errorf("%w: attestation of type %#x, not a quote", ErrMalformed, att.Type)
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		return nil, ErrNonce
	}
	info, err := att.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	want := slices.Sorted(func(yield func(uint) bool) {
		for p := range pcrs {
			if !yield(p) {
				return
			}
		}
	})
	if got := selected(info.PCRSelect); !slices.Equal(got, want) {
		return nil, fmt.Errorf("%w: quoted %v, want %v", ErrSelection, got, want)
	}
	h := sha256.New()
	for _, p := range want {
		v := pcrs[p]
		h.Write(v[:])
	}
	if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
		return nil, ErrPCRs
	}
	return att, nil
}

// maxECDSAScalar bounds r and s: a P-521 scalar's bytes (the AK is P-256,
// whose scalars take 32).
const maxECDSAScalar = 66

// parseECDSASignature reads a TPMT_SIGNATURE that must be ECDSA over
// SHA-256 — sigAlg, hash, then r and s as TPM2B buffers, and nothing after
// them — and returns r and s. The layout is fixed, so it is read by hand:
// go-tpm's reflective unmarshalling (and marshalling back, to refuse
// non-canonical input) cost a third of a whole attestation's verification.
// FuzzParseECDSASignature holds it to go-tpm's reading.
func parseECDSASignature(b []byte) (r, s []byte, err error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("%w: signature: %d bytes", ErrMalformed, len(b))
	}
	if alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(b)); alg != tpm2.TPMAlgECDSA {
		return nil, nil, fmt.Errorf("%w: signature algorithm %#x", ErrSignature, alg)
	}
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("%w: signature: no hash algorithm", ErrMalformed)
	}
	if h := tpm2.TPMAlgID(binary.BigEndian.Uint16(b[2:])); h != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("%w: want an ECDSA SHA-256 signature, not hash %#x", ErrSignature, h)
	}
	rest := b[4:]
	buf := func() ([]byte, error) {
		if len(rest) < 2 {
			return nil, fmt.Errorf("%w: signature: truncated", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(rest))
		if n > maxECDSAScalar || len(rest)-2 < n {
			return nil, fmt.Errorf("%w: signature: scalar of %d bytes", ErrMalformed, n)
		}
		v := rest[2 : 2+n]
		rest = rest[2+n:]
		return v, nil
	}
	if r, err = buf(); err != nil {
		return nil, nil, err
	}
	if s, err = buf(); err != nil {
		return nil, nil, err
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: signature: %d trailing bytes", ErrMalformed, len(rest))
	}
	return r, s, nil
}

// selected lists the SHA-256 PCRs a selection names, ascending; a selection
// of another bank makes it nil, which matches no expectation.
func selected(sel tpm2.TPMLPCRSelection) []uint {
	var out []uint
	for _, s := range sel.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			return nil
		}
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					out = append(out, uint(i*8+bit))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
