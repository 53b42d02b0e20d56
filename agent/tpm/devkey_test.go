package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

func createDeviceKey(t *testing.T, tp transport.TPM) DeviceKeyBlob {
	t.Helper()
	b, err := CreateDeviceKey(tp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func nonce(t *testing.T) []byte {
	t.Helper()
	n := make([]byte, 32)
	rand.Read(n)
	return n
}

func akKey(t *testing.T, a *Attestor) *ecdsa.PublicKey {
	t.Helper()
	k, err := quote.AKPublic(a.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDeviceKeyOnSwtpm: the device key survives the TPM's restart through
// its blob file, the AK's certification of it verifies, and every way of
// passing off another key, another TPM or another nonce is refused with
// its own reason.
func TestDeviceKeyOnSwtpm(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	tp, err := Open(t.Context(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	blob := createDeviceKey(t, tp)
	file := filepath.Join(t.TempDir(), "device.key")
	if err := blob.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	tp.Close()

	// A reboot of the phone: the key comes back from the file.
	sw.Kill()
	sw.Start()
	tp = openSwtpm(t, sw)
	blob, err = ReadDeviceKeyBlob(file)
	if err != nil {
		t.Fatal(err)
	}
	k, err := LoadDeviceKey(tp, blob)
	if err != nil {
		t.Fatalf("loading the key after a restart: %v", err)
	}
	if !bytes.Equal(k.PublicArea(), blob.Public) {
		t.Fatal("PublicArea differs from the blob's")
	}
	want := k.Public()
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	a := newAttestor(t, tp)
	n := nonce(t)
	c, err := a.Certify(blob, n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := quote.VerifyCertify(akKey(t, a), c, n, blob.Public)
	if err != nil {
		t.Fatalf("genuine certification refused: %v", err)
	}
	if !got.Equal(want) {
		t.Fatal("VerifyCertify returned another key than the one loaded")
	}
	// The Attestor still has its EK after certifying (saved and loaded
	// back): it can certify again and answer a credential challenge.
	if _, err := a.Certify(blob, n); err != nil {
		t.Fatalf("certifying twice: %v", err)
	}
	if _, err := (tpm2.ReadPublic{ObjectHandle: a.ek.ObjectHandle}).Execute(tp); err != nil {
		t.Fatalf("the EK is gone after Certify: %v", err)
	}

	// Keys the TPM certifies as genuinely its own, but which must not
	// become a device identity.
	restricted := AKTemplate
	restricted.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	decrypt := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, NoDA: true, Decrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
	certifiedOdd := func(template tpm2.TPMTPublic) (quote.Certification, []byte) {
		t.Helper()
		var b DeviceKeyBlob
		err := a.withRoom(func() (err error) {
			b, err = createKey(tp, template)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Certify(b, n); !errors.Is(err, ErrKeyBlob) {
			t.Fatalf("Certify of a key that is no device key = %v, want ErrKeyBlob", err)
		}
		c, err := a.certify(b, n)
		if err != nil {
			t.Fatal(err)
		}
		return c, b.Public
	}
	restrictedC, restrictedPub := certifiedOdd(restricted)
	decryptC, decryptPub := certifiedOdd(decrypt)

	other := newAttestor(t, openSwtpm(t, testutil.StartSwtpm(t)))
	otherBlob, err := other.CreateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	otherC, err := other.Certify(otherBlob, n)
	if err != nil {
		t.Fatal(err)
	}
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	softPub := softwarePublic(t, &soft.PublicKey)

	for _, tc := range []struct {
		name   string
		ak     *ecdsa.PublicKey
		c      quote.Certification
		nonce  []byte
		pub    []byte
		reason error
	}{
		{"certification over another nonce", akKey(t, a), c, nonce(t), blob.Public, quote.ErrNonce},
		{"key certified by another TPM's AK", akKey(t, a), otherC, n, otherBlob.Public, quote.ErrSignature},
		{"another TPM's AK offered for this certification", akKey(t, other), c, n, blob.Public, quote.ErrSignature},
		{"software key passed off as the certified one", akKey(t, a), c, n, softPub, quote.ErrCertifiedName},
		{"another TPM's key passed off as the certified one", akKey(t, a), c, n, otherBlob.Public, quote.ErrCertifiedName},
		{"restricted key", akKey(t, a), restrictedC, n, restrictedPub, quote.ErrCertifiedKey},
		{"decrypt key", akKey(t, a), decryptC, n, decryptPub, quote.ErrCertifiedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, err := quote.VerifyCertify(tc.ak, tc.c, tc.nonce, tc.pub); !errors.Is(err, tc.reason) {
				t.Fatalf("VerifyCertify = %v, %v; want %v", k, err, tc.reason)
			}
		})
	}

	t.Run("blob of another TPM does not load", func(t *testing.T) {
		if k, err := LoadDeviceKey(tp, otherBlob); err == nil {
			k.Close()
			t.Fatal("another TPM's key blob loaded")
		}
	})
}

// softwarePublic is the public area a TPM would give a device key with
// point k — a key that was never in a TPM.
func softwarePublic(t *testing.T, k *ecdsa.PublicKey) []byte {
	t.Helper()
	pt, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	raw := pt.Bytes()
	pub := DeviceKeyTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
	})
	b := tpm2.Marshal(pub)
	if _, err := quote.DeviceKeyPublic(b); err != nil {
		t.Fatalf("the forged public area is not even shaped right: %v", err)
	}
	return b
}

func TestDeviceKeyBlobEncoding(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := DeviceKeyBlob{Public: softwarePublic(t, &k.PublicKey), Private: bytes.Repeat([]byte{7}, 126)}
	enc := good.Marshal()
	got, err := UnmarshalDeviceKeyBlob(enc)
	if err != nil || !bytes.Equal(got.Public, good.Public) || !bytes.Equal(got.Private, good.Private) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	restricted := AKTemplate
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"other magic", append([]byte("DTDK\x02"), enc[5:]...)},
		{"trailing byte", append(bytes.Clone(enc), 0)},
		{"truncated", enc[:len(enc)-1]},
		{"no private part", enc[:len(deviceKeyFormat.magic)+2+len(good.Public)]},
		{"empty private part", DeviceKeyBlob{Public: good.Public}.Marshal()},
		{"oversized public", append(bytes.Clone(deviceKeyFormat.magic), 0xff, 0xff)},
		{"not a device key", DeviceKeyBlob{Public: tpm2.Marshal(restricted), Private: good.Private}.Marshal()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := UnmarshalDeviceKeyBlob(tc.data); !errors.Is(err, ErrKeyBlob) {
				t.Fatalf("Unmarshal = %v, want ErrKeyBlob", err)
			}
		})
	}

	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, deviceKeyFormat.maxFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDeviceKeyBlob(big); !errors.Is(err, ErrKeyBlob) {
		t.Fatalf("reading an oversized file = %v, want ErrKeyBlob", err)
	}
	if _, err := ReadDeviceKeyBlob(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading a missing file = %v, want ErrNotExist", err)
	}
}

func FuzzUnmarshalDeviceKeyBlob(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	pt, _ := k.PublicKey.ECDH()
	raw := pt.Bytes()
	pub := DeviceKeyTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
	})
	f.Add(DeviceKeyBlob{Public: tpm2.Marshal(pub), Private: []byte{1, 2, 3}}.Marshal())
	f.Add([]byte("DTDK\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := UnmarshalDeviceKeyBlob(data)
		if err != nil {
			return
		}
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatalf("accepted %x, which does not marshal back", data)
		}
	})
}
