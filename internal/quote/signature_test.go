package quote

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func ecdsaSig(hash tpm2.TPMAlgID, r, s []byte) []byte {
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash: hash, SignatureR: tpm2.TPM2BECCParameter{Buffer: r}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s},
		}),
	})
}

func TestParseECDSASignature(t *testing.T) {
	r, s := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	good := ecdsaSig(tpm2.TPMAlgSHA256, r, s)
	rsa := tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
		&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}})})
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"good", good, nil},
		{"empty", nil, ErrMalformed},
		{"one byte", []byte{0}, ErrMalformed},
		{"RSA", rsa, ErrSignature},
		{"SHA-1", ecdsaSig(tpm2.TPMAlgSHA1, r, s), ErrSignature},
		{"no hash", good[:2], ErrMalformed},
		{"truncated r", good[:10], ErrMalformed},
		{"no s", good[:4+2+32], ErrMalformed},
		{"trailing byte", append(bytes.Clone(good), 0), ErrMalformed},
		{"oversized scalar", ecdsaSig(tpm2.TPMAlgSHA256, make([]byte, maxECDSAScalar+1), s), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gr, gs, err := parseECDSASignature(tc.in)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && (!bytes.Equal(gr, r) || !bytes.Equal(gs, s)) {
				t.Fatalf("r, s = %x, %x", gr, gs)
			}
		})
	}
}

// FuzzParseECDSASignature holds the hand-written parser to go-tpm's
// reading: whatever one accepts as an ECDSA SHA-256 signature, canonically
// encoded, the other accepts with the same r and s.
func FuzzParseECDSASignature(f *testing.F) {
	f.Add(ecdsaSig(tpm2.TPMAlgSHA256, bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)))
	f.Add(ecdsaSig(tpm2.TPMAlgSHA256, nil, []byte{7}))
	f.Add(ecdsaSig(tpm2.TPMAlgSHA384, []byte{1}, []byte{2}))
	f.Add([]byte{0x00, 0x18, 0x00, 0x0b, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, s, err := parseECDSASignature(b)
		ref, rerr := strict[tpm2.TPMTSignature](b)
		var refOK bool
		var ecc *tpm2.TPMSSignatureECC
		if rerr == nil && ref.SigAlg == tpm2.TPMAlgECDSA {
			if e, err := ref.Signature.ECDSA(); err == nil && e.Hash == tpm2.TPMAlgSHA256 &&
				len(e.SignatureR.Buffer) <= maxECDSAScalar && len(e.SignatureS.Buffer) <= maxECDSAScalar {
				refOK, ecc = true, e
			}
		}
		if (err == nil) != refOK {
			t.Fatalf("ours: %v; go-tpm: ok %v (%v)", err, refOK, rerr)
		}
		if err == nil && (!bytes.Equal(r, ecc.SignatureR.Buffer) || !bytes.Equal(s, ecc.SignatureS.Buffer)) {
			t.Fatalf("ours r=%x s=%x; go-tpm r=%x s=%x", r, s, ecc.SignatureR.Buffer, ecc.SignatureS.Buffer)
		}
	})
}
