package quote_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/quote/quotetest"
)

// devicePublic is the TPMT_PUBLIC a TPM would give for a device key with
// public point k, after edit.
func devicePublic(t testing.TB, k *ecdsa.PublicKey, edit func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	pt, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	raw := pt.Bytes()
	pub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, NoDA: true, SignEncrypt: true},
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
	if edit != nil {
		edit(&pub)
	}
	return tpm2.Marshal(pub)
}

// certify makes the certification a TPM with AK ak would make of the key
// named name; att edits the structure before it is signed.
func certify(ak *quotetest.AK, nonce, name []byte, edit func(*tpm2.TPMSAttest)) quote.Certification {
	att := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestCertify,
		QualifiedSigner: tpm2.TPM2BName{Buffer: quote.Name(ak.Public())},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
			Name:          tpm2.TPM2BName{Buffer: name},
			QualifiedName: tpm2.TPM2BName{Buffer: name},
		}),
	}
	if edit != nil {
		edit(&att)
	}
	return sign(ak, tpm2.Marshal(att))
}

func sign(ak *quotetest.AK, b []byte) quote.Certification {
	d := sha256.Sum256(b)
	r, s := ak.Sign(d[:])
	sig := tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
		Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s}})}
	return quote.Certification{Attest: b, Signature: tpm2.Marshal(sig)}
}

func TestVerifyCertify(t *testing.T) {
	ak, other := quotetest.NewAK(), quotetest.NewAK()
	dk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := devicePublic(t, &dk.PublicKey, nil)
	nonce := []byte("server nonce 0123456789abcdef")
	good := certify(ak, nonce, quote.Name(pub), nil)

	got, err := quote.VerifyCertify(ak.Key(), good, nonce, pub)
	if err != nil {
		t.Fatalf("genuine certification refused: %v", err)
	}
	if !got.Equal(&dk.PublicKey) {
		t.Fatal("VerifyCertify returned another key")
	}

	flipped := quote.Certification{Attest: bytes.Clone(good.Attest), Signature: good.Signature}
	flipped.Attest[len(flipped.Attest)-1] ^= 1
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	withAttrs := func(edit func(*tpm2.TPMAObject)) []byte {
		return devicePublic(t, &dk.PublicKey, func(p *tpm2.TPMTPublic) { edit(&p.ObjectAttributes) })
	}
	type tc struct {
		name   string
		ak     *ecdsa.PublicKey
		c      quote.Certification
		nonce  []byte
		pub    []byte
		reason error
	}
	cases := []tc{
		{"another nonce", ak.Key(), good, []byte("old nonce"), pub, quote.ErrNonce},
		{"attest edited", ak.Key(), flipped, nonce, pub, quote.ErrSignature},
		{"AK of another TPM", other.Key(), good, nonce, pub, quote.ErrSignature},
		{"signed by another AK", ak.Key(), certify(other, nonce, quote.Name(pub), nil), nonce, pub, quote.ErrSignature},
		{"another key's public area", ak.Key(), good, nonce, devicePublic(t, &p384.PublicKey, nil), quote.ErrCertifiedName},
		{"signature with trailing bytes", ak.Key(), quote.Certification{Attest: good.Attest, Signature: append(bytes.Clone(good.Signature), 0)}, nonce, pub, quote.ErrMalformed},
		{"empty signature", ak.Key(), quote.Certification{Attest: good.Attest}, nonce, pub, quote.ErrMalformed},
		{"signed attest with trailing bytes", ak.Key(), sign(ak, append(bytes.Clone(good.Attest), 0)), nonce, pub, quote.ErrMalformed},
		{"not TPM-generated", ak.Key(), certify(ak, nonce, quote.Name(pub), func(a *tpm2.TPMSAttest) { a.Magic = 0x12345678 }), nonce, pub, quote.ErrMalformed},
		{"a quote, not a certification", ak.Key(), quote.Certification(ak.Quote(nonce, map[uint][32]byte{14: {}})), nonce, pub, quote.ErrMalformed},
	}
	// Keys whose certification is genuine but which are not device keys.
	for _, k := range []struct {
		name string
		pub  []byte
	}{
		{"restricted key", withAttrs(func(a *tpm2.TPMAObject) { a.Restricted = true })},
		{"decrypt key", withAttrs(func(a *tpm2.TPMAObject) { a.Decrypt = true })},
		{"sign and decrypt key", withAttrs(func(a *tpm2.TPMAObject) { a.Decrypt, a.SignEncrypt = true, true })},
		{"not a signing key", withAttrs(func(a *tpm2.TPMAObject) { a.SignEncrypt = false })},
		{"exportable (not fixedTPM)", withAttrs(func(a *tpm2.TPMAObject) { a.FixedTPM = false })},
		{"duplicable (not fixedParent)", withAttrs(func(a *tpm2.TPMAObject) { a.FixedParent = false })},
		{"imported (not sensitiveDataOrigin)", withAttrs(func(a *tpm2.TPMAObject) { a.SensitiveDataOrigin = false })},
		{"SHA-1 names", devicePublic(t, &dk.PublicKey, func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 })},
		{"P-384", devicePublic(t, &p384.PublicKey, func(p *tpm2.TPMTPublic) {
			d, _ := p.Parameters.ECCDetail()
			d.CurveID = tpm2.TPMECCNistP384
		})},
		{"SHA-384 scheme", devicePublic(t, &dk.PublicKey, func(p *tpm2.TPMTPublic) {
			d, _ := p.Parameters.ECCDetail()
			d.Scheme.Details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA384})
		})},
		{"no scheme", devicePublic(t, &dk.PublicKey, func(p *tpm2.TPMTPublic) {
			d, _ := p.Parameters.ECCDetail()
			d.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
		})},
		{"point off the curve", devicePublic(t, &dk.PublicKey, func(p *tpm2.TPMTPublic) {
			pt, _ := p.Unique.ECC()
			pt.Y.Buffer = bytes.Clone(pt.Y.Buffer)
			pt.Y.Buffer[31] ^= 1
		})},
		{"short coordinate", devicePublic(t, &dk.PublicKey, func(p *tpm2.TPMTPublic) {
			pt, _ := p.Unique.ECC()
			pt.X.Buffer = pt.X.Buffer[1:]
		})},
	} {
		cases = append(cases, tc{k.name, ak.Key(), certify(ak, nonce, quote.Name(k.pub), nil), nonce, k.pub, quote.ErrCertifiedKey})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if k, err := quote.VerifyCertify(c.ak, c.c, c.nonce, c.pub); !errors.Is(err, c.reason) {
				t.Fatalf("VerifyCertify = %v, %v; want %v", k, err, c.reason)
			}
		})
	}
}

func FuzzVerifyCertify(f *testing.F) {
	ak := quotetest.NewAK()
	dk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	pub := devicePublic(f, &dk.PublicKey, nil)
	nonce := []byte("nonce")
	good := certify(ak, nonce, quote.Name(pub), nil)
	f.Add(good.Attest, good.Signature, nonce, pub)
	f.Add(good.Attest, good.Signature, []byte{}, pub)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	q := ak.Quote(nonce, map[uint][32]byte{14: {}})
	f.Add(q.Attest, q.Signature, nonce, ak.Public())
	f.Fuzz(func(t *testing.T, attest, sig, nonce, keyPublic []byte) {
		k, err := quote.VerifyCertify(ak.Key(), quote.Certification{Attest: attest, Signature: sig}, nonce, keyPublic)
		if err != nil {
			return
		}
		// Only what the AK signed passes, and then for that one key.
		if !bytes.Equal(attest, good.Attest) || !bytes.Equal(keyPublic, pub) || !k.Equal(&dk.PublicKey) {
			t.Fatalf("accepted a certification the AK did not make: %x %x", attest, keyPublic)
		}
	})
}

func FuzzDeviceKeyPublic(f *testing.F) {
	dk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(devicePublic(f, &dk.PublicKey, nil))
	f.Add(quotetest.NewAK().Public())
	f.Add([]byte{0, 0x23})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := quote.DeviceKeyPublic(b)
		if err != nil {
			return
		}
		// What passes is canonical and on the curve.
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
		if err != nil || !bytes.Equal(tpm2.Marshal(*pub), b) {
			t.Fatalf("accepted non-canonical %x", b)
		}
		if _, err := k.ECDH(); err != nil {
			t.Fatalf("accepted an invalid point: %v", err)
		}
	})
}
