// Package quotetest makes quotes with a software attestation key: the load
// generator of the benchmarks and the policy tests, where a TPM process per
// simulated phone would measure the TPM rather than the verifier. Tests of
// the TPM path itself use swtpm.
package quotetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/dialtone-dev/dialtone/internal/quote"
)

// AK is a software attestation key shaped like agent/tpm.AKTemplate.
type AK struct {
	key    *ecdsa.PrivateKey
	public []byte
}

// NewAK makes a fresh key.
func NewAK() *AK {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	pt, err := k.PublicKey.ECDH()
	if err != nil {
		panic(err)
	}
	raw := pt.Bytes() // 0x04 || X || Y
	pub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
		}),
	}
	return &AK{key: k, public: tpm2.Marshal(pub)}
}

// Public is the key's TPMT_PUBLIC, marshalled.
func (a *AK) Public() []byte { return a.public }

// Key is the public key, for a bare signature check.
func (a *AK) Key() *ecdsa.PublicKey { return &a.key.PublicKey }

// Sign signs digest as the AK would.
func (a *AK) Sign(digest []byte) (r, s []byte) {
	ri, si, err := ecdsa.Sign(rand.Reader, a.key, digest)
	if err != nil {
		panic(err)
	}
	return ri.FillBytes(make([]byte, 32)), si.FillBytes(make([]byte, 32))
}

// Quote makes the quote a TPM with these SHA-256 PCR values would.
func (a *AK) Quote(nonce []byte, pcrs map[uint][32]byte) quote.Quote {
	idx := slices.Sorted(func(yield func(uint) bool) {
		for p := range pcrs {
			if !yield(p) {
				return
			}
		}
	})
	h := sha256.New()
	for _, p := range idx {
		v := pcrs[p]
		h.Write(v[:])
	}
	att := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: quote.Name(a.public)},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(idx...)},
			}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	}
	b := tpm2.Marshal(att)
	d := sha256.Sum256(b)
	r, s := a.Sign(d[:])
	sig := tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s}})}
	return quote.Quote{Attest: b, Signature: tpm2.Marshal(sig)}
}
