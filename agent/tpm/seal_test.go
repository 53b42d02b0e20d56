package tpm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// transientObjects counts the objects loaded in the TPM's transient
// slots.
func transientObjects(t *testing.T, tp transport.TPM) int {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(tpm2.TPMHTTransient) << 24, PropertyCount: 16}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	h, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	return len(h.Handle)
}

// TestSealOnSwtpm: a secret sealed on one TPM comes back from its blob
// file after the TPM restarts, leaves nothing loaded, fits beside a loaded
// key on swtpm's three slots, and does not come back on another TPM or
// from a tampered blob.
func TestSealOnSwtpm(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	tp := openSwtpm(t, sw)

	secret := []byte("s1p-p4ssw0rd!")
	blob, err := Seal(tp, secret)
	if err != nil {
		t.Fatal(err)
	}
	if n := transientObjects(t, tp); n != 0 {
		t.Fatalf("Seal left %d objects loaded", n)
	}
	if bytes.Contains(blob.Marshal(), secret) {
		t.Fatal("the blob holds the secret in the clear")
	}
	file := filepath.Join(t.TempDir(), "sip-password.sealed")
	if err := blob.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed file mode %v, %v; want 0600", fi.Mode(), err)
	}

	// A reboot: the secret comes back from the file.
	tp.Close()
	sw.Kill()
	sw.Start()
	tp = openSwtpm(t, sw)
	blob, err = ReadSealedBlob(file)
	if err != nil {
		t.Fatal(err)
	}
	// With the device key loaded (one of swtpm's three slots taken), as
	// when a TLS handshake runs beside it.
	dk, err := LoadDeviceKey(tp, createDeviceKey(t, tp))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unseal(tp, blob)
	if err != nil {
		t.Fatalf("unsealing after a restart: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("unsealed %q, want %q", got, secret)
	}
	dk.Close()
	if n := transientObjects(t, tp); n != 0 {
		t.Fatalf("Unseal left %d objects loaded", n)
	}

	// The longest secret the TPM takes, and the size limits.
	long := bytes.Repeat([]byte{0xa5}, MaxSealedSecret)
	lb, err := Seal(tp, long)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Unseal(tp, lb); err != nil || !bytes.Equal(got, long) {
		t.Fatalf("unsealing %d bytes: %x, %v", len(long), got, err)
	}
	for _, s := range [][]byte{nil, make([]byte, MaxSealedSecret+1)} {
		if _, err := Seal(tp, s); !errors.Is(err, ErrSecretSize) {
			t.Errorf("sealing %d bytes: %v, want ErrSecretSize", len(s), err)
		}
	}

	// Another phone's TPM cannot load the blob.
	other := openSwtpm(t, testutil.StartSwtpm(t))
	if got, err := Unseal(other, blob); err == nil {
		t.Fatalf("another TPM unsealed %q", got)
	}
	if n := transientObjects(t, other); n != 0 {
		t.Fatalf("a failed Unseal left %d objects loaded", n)
	}

	// A flipped bit of the private part: the TPM's integrity check fails.
	bad := SealedBlob{Public: blob.Public, Private: bytes.Clone(blob.Private)}
	bad.Private[len(bad.Private)-1] ^= 1
	if _, err := Unseal(tp, bad); err == nil {
		t.Fatal("a tampered private part unsealed")
	}
	// A public area that is not a sealed object is refused before the TPM.
	signing := SealedTemplate
	signing.ObjectAttributes.SignEncrypt = true
	if _, err := Unseal(tp, SealedBlob{Public: tpm2.Marshal(signing), Private: blob.Private}); !errors.Is(err, ErrSealedBlob) {
		t.Fatalf("unsealing a signing key's blob: %v, want ErrSealedBlob", err)
	}
}

// TestSealSecretOnTheWire: the secret never crosses the TPM's transport in
// the clear, in either direction (the sessions encrypt it).
func TestSealSecretOnTheWire(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	tp := &recording{TPM: openSwtpm(t, sw)}
	secret := []byte("wire-" + strings.Repeat("x", 40))
	blob, err := Seal(tp, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unseal(tp, blob)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	if bytes.Contains(tp.seen.Bytes(), secret) {
		t.Fatal("the secret crossed the TPM transport in the clear")
	}
	if tp.seen.Len() == 0 {
		t.Fatal("nothing recorded")
	}
}

// recording keeps every command and response that crosses it.
type recording struct {
	transport.TPM
	seen bytes.Buffer
}

func (r *recording) Send(in []byte) ([]byte, error) {
	r.seen.Write(in)
	out, err := r.TPM.Send(in)
	r.seen.Write(out)
	return out, err
}

func TestUnmarshalSealedBlob(t *testing.T) {
	good := SealedBlob{Public: tpm2.Marshal(SealedTemplate), Private: []byte{1, 2, 3, 4}}
	enc := good.Marshal()
	b, err := UnmarshalSealedBlob(enc)
	if err != nil || !bytes.Equal(b.Public, good.Public) || !bytes.Equal(b.Private, good.Private) {
		t.Fatalf("round trip = %+v, %v", b, err)
	}
	key := DeviceKeyTemplate
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"device key magic", append([]byte("DTDK\x01"), enc[len(sealedFormat.magic):]...)},
		{"trailing byte", append(bytes.Clone(enc), 0)},
		{"truncated", enc[:len(enc)-1]},
		{"empty private part", SealedBlob{Public: good.Public}.Marshal()},
		{"oversized public", append(bytes.Clone(sealedFormat.magic), 0xff, 0xff)},
		{"a device key", SealedBlob{Public: tpm2.Marshal(key), Private: good.Private}.Marshal()},
		{"public with trailing bytes", SealedBlob{Public: append(tpm2.Marshal(SealedTemplate), 0), Private: good.Private}.Marshal()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := UnmarshalSealedBlob(tc.data); !errors.Is(err, ErrSealedBlob) {
				t.Fatalf("Unmarshal = %v, want ErrSealedBlob", err)
			}
		})
	}
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, sealedFormat.maxFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSealedBlob(big); !errors.Is(err, ErrSealedBlob) {
		t.Fatalf("reading an oversized file = %v, want ErrSealedBlob", err)
	}
	if _, err := ReadSealedBlob(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reading a missing file = %v, want ErrNotExist", err)
	}
}

func FuzzUnmarshalSealedBlob(f *testing.F) {
	f.Add(SealedBlob{Public: tpm2.Marshal(SealedTemplate), Private: []byte{1, 2, 3}}.Marshal())
	f.Add(SealedBlob{Public: tpm2.Marshal(DeviceKeyTemplate), Private: []byte{1}}.Marshal())
	f.Add([]byte("DTSL\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := UnmarshalSealedBlob(data)
		if err != nil {
			return
		}
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatalf("accepted %x, which does not marshal back", data)
		}
		if checkSealedPublic(b.Public) != nil {
			t.Fatalf("accepted a public area that is not a sealed object: %x", b.Public)
		}
	})
}
