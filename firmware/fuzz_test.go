package firmware

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// isBundleError reports whether err carries one of Read's input sentinels.
func isBundleError(err error) bool {
	return errors.Is(err, ErrManifest) || errors.Is(err, ErrPayloadMismatch) || errors.Is(err, ErrBundleLayout)
}

func FuzzRead(f *testing.F) {
	kernel := testPayload{"kernel.bin", []byte("kernel")}
	rootfs := testPayload{"rootfs.img", bytes.Repeat([]byte{0xa5}, 700)}
	mj := mustJSON(f, manifestFor([]testPayload{kernel, rootfs}))
	good := bundleOf(f, mj, kernel, rootfs)
	f.Add(good)
	f.Add(good[:len(good)-tarEndSize])
	f.Add(append(bytes.Clone(good), "junk"...))
	f.Add(bundleOf(f, mj, rootfs, kernel))
	f.Add(bundleOf(f, mj, kernel))
	f.Add(bundleOf(f, mustJSON(f, manifestFor([]testPayload{{"a", nil}})), testPayload{"a", nil}))
	f.Add(makeTar(f, tarEntry{name: kernel.name, data: kernel.data}))
	f.Add([]byte{})
	for _, name := range []string{"gnu-posix.bundle", "gnu-gnu.bundle"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		// Only the archive, not GNU tar's zero padding to 10 KiB: small
		// seeds keep the fuzzer's minimization fast.
		f.Add(trimZeroPadding(b))
	}

	lim := Limits{MaxManifestBytes: 4 << 10, MaxPayloads: 4, MaxPayloadBytes: 1 << 20, MaxBundleBytes: 4 << 20}
	f.Fuzz(func(t *testing.T, in []byte) {
		var seen []Payload
		m, err := Read(context.Background(), bytes.NewReader(in), lim, func(p Payload, r io.Reader) error {
			seen = append(seen, p)
			// Odd-sized reads exercise the hashing reader's bookkeeping.
			_, err := io.CopyBuffer(io.Discard, readerOnly{r}, make([]byte, 7))
			return err
		})
		if err != nil {
			if !isBundleError(err) {
				t.Fatalf("Read error without a sentinel: %v", err)
			}
			return
		}
		if len(seen) != len(m.Payloads) {
			t.Fatalf("callback ran %d times for %d payloads", len(seen), len(m.Payloads))
		}
		if _, err := ReadManifest(mustJSON(t, m), lim); err != nil {
			t.Fatalf("accepted manifest does not validate again: %v", err)
		}
		// An accepted bundle is accepted the same way without a callback.
		if _, err := Verify(context.Background(), bytes.NewReader(in), lim); err != nil {
			t.Fatalf("Read accepted what Verify refuses: %v", err)
		}
	})
}

func FuzzReadManifest(f *testing.F) {
	f.Add(mustJSON(f, manifestFor(defaultPayloads())))
	f.Add(mustJSON(f, manifestFor([]testPayload{{"a", nil}})))
	b, err := os.ReadFile(filepath.Join("testdata", "src", "manifest.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"schema":1,"schema":1}`))
	f.Add([]byte(`{"Schema":1}`))
	f.Add([]byte(`{"payloads":[{"name":"a","size":-1}]}`))
	f.Add([]byte(`[[[[[[[[[[[[`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"schema":1,"model":"m","version":"1.0.0-0a.b-c","hardware":["x"],"payloads":[{"name":"a","size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}],"created":"2000-01-01T00:00:00+14:00"}`))

	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ReadManifest(in, DefaultLimits())
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error without ErrManifest: %v", err)
			}
			return
		}
		// What we accept, we must be able to write and accept again
		// unchanged: Build relies on this.
		out, err := marshalManifest(m)
		if err != nil {
			t.Fatalf("accepted manifest does not encode: %v", err)
		}
		m2, err := ReadManifest(out, DefaultLimits())
		if err != nil {
			t.Fatalf("re-encoded manifest is refused: %v\n%s", err, out)
		}
		if !m2.Created.Equal(m.Created) {
			t.Fatalf("created changed: %v -> %v", m.Created, m2.Created)
		}
		m2.Created = m.Created
		a, b := mustJSON(t, m), mustJSON(t, m2)
		if !bytes.Equal(a, b) {
			t.Fatalf("manifest changed on a round trip:\n%s\n%s", a, b)
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	pemBytes, err := os.ReadFile(filepath.Join("testdata", "publisher.pub"))
	if err != nil {
		f.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	pubAny, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	pub := pubAny.(*ecdsa.PublicKey)
	bundle, err := os.ReadFile(filepath.Join("testdata", "gnu-posix.bundle"))
	if err != nil {
		f.Fatal(err)
	}
	sig, err := os.ReadFile(filepath.Join("testdata", "gnu-posix.bundle.sig"))
	if err != nil {
		f.Fatal(err)
	}
	digest := sha256.Sum256(bundle)

	f.Add(sig)
	f.Add(append(bytes.Clone(sig), '\n'))
	f.Add([]byte(" \r\n" + string(sig) + "\r\n"))
	f.Add(sig[:len(sig)-4])
	f.Add([]byte(strings.Repeat("A", 96)))
	f.Add([]byte("MEUCIQ=="))
	f.Add([]byte{})
	f.Add([]byte("\x00\xff"))

	f.Fuzz(func(t *testing.T, in []byte) {
		err := VerifySignatureDigest(pub, digest[:], in)
		if err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("error without ErrSignature: %v", err)
		}
		// Agree with the reference: base64 then crypto/ecdsa.
		der, derr := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(in)))
		want := derr == nil && len(bytes.TrimSpace(in)) <= maxSignatureText && ecdsa.VerifyASN1(pub, digest[:], der)
		if (err == nil) != want {
			t.Fatalf("VerifySignatureDigest = %v, reference says valid=%v", err, want)
		}
		if serr := VerifySignature(pub, bytes.NewReader(bundle), in); (serr == nil) != (err == nil) {
			t.Fatalf("VerifySignature = %v but VerifySignatureDigest = %v", serr, err)
		}
	})
}

// trimZeroPadding keeps a tar stream up to its end-of-archive marker.
func trimZeroPadding(b []byte) []byte {
	end := len(bytes.TrimRight(b, "\x00"))
	end = (end+tarBlockSize-1)/tarBlockSize*tarBlockSize + tarEndSize
	return b[:min(end, len(b))]
}
