package firmware

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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

// FuzzRead drives the bundle reader with bundles assembled from a fuzzed
// manifest, a pool of payload bytes, a layout word choosing one structural
// fault (reordering, dropped, extra or renamed entries, other entry types,
// tar formats, truncation, a flipped byte) and bytes appended after the
// archive. Keeping the inputs small and structured lets the fuzzer reach
// deep into Read quickly; FuzzBundleBytes covers raw tar bytes.
func FuzzRead(f *testing.F) {
	kernel := testPayload{"kernel.bin", []byte("kernel")}
	// Small values keep minimization, which is quadratic in input size,
	// from eating the fuzzing time.
	rootfs := testPayload{"rootfs.img", bytes.Repeat([]byte{0xa5}, 20)}
	mj := mustJSON(f, manifestFor([]testPayload{kernel, rootfs}))
	data := append(bytes.Clone(kernel.data), rootfs.data...)
	for _, layout := range []uint64{0, 1, 2, 3, 4, 5, 6 | 1<<12, 7 | 2<<12, 2 << 4, 3 << 4, 1 << 6, 2 << 6, 3<<6 | 1900<<16, 1<<40 | 3<<41} {
		f.Add(mj, data, layout, []byte(nil))
	}
	f.Add(mj, data, uint64(0), make([]byte, 600))
	f.Add(mj, data, uint64(0), []byte("garbage"))
	f.Add(mustJSON(f, manifestFor([]testPayload{{"a", nil}})), []byte{}, uint64(0), []byte(nil))
	src, err := os.ReadFile(filepath.Join("testdata", "src", "manifest.json"))
	if err != nil {
		f.Fatal(err)
	}
	k, _ := os.ReadFile(filepath.Join("testdata", "src", "kernel.bin"))
	r, _ := os.ReadFile(filepath.Join("testdata", "src", "rootfs.img"))
	f.Add(src, append(k, r...), uint64(2<<4), []byte(nil))

	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, manifest, data []byte, layout uint64, tail []byte) {
		raw, contents, pristine, ok := assembleBundle(manifest, data, layout, tail)
		if !ok {
			return // archive/tar refused to write this layout
		}
		m, got, err := checkRead(t, raw, lim)
		want, merr := ReadManifest(manifest, lim)
		if pristine && merr == nil && contentsMatch(want, contents) {
			// A well-formed bundle must be accepted, whatever tar format
			// archive/tar chose to write it in.
			if err != nil {
				t.Fatalf("valid bundle refused: %v", err)
			}
		}
		if err != nil {
			return
		}
		if merr != nil {
			t.Fatalf("Read accepted a manifest ReadManifest refuses: %v", merr)
		}
		if !bytes.Equal(mustJSON(t, m), mustJSON(t, want)) {
			t.Fatalf("Read returned manifest %+v, the entry holds %+v", m, want)
		}
		for i, p := range m.Payloads {
			if sum := sha256.Sum256(got[i]); int64(len(got[i])) != p.Size || hex.EncodeToString(sum[:]) != p.SHA256 {
				t.Fatalf("payload %q: callback saw bytes that do not match the manifest", p.Name)
			}
		}
	})
}

// FuzzBundleBytes feeds raw bytes to Read. Tar streams are kilobytes of
// mostly zero blocks, and Go's minimizer spends up to -fuzzminimizetime
// (60s) on each new input of that size, so run it with a small
// -fuzzminimizetime (e.g. 1000x) for useful throughput.
func FuzzBundleBytes(f *testing.F) {
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
		f.Add(trimZeroPadding(b))
	}
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, in []byte) {
		checkRead(t, in, lim)
	})
}

func fuzzLimits() Limits {
	return Limits{MaxManifestBytes: 4 << 10, MaxPayloads: 4, MaxPayloadBytes: 1 << 20, MaxBundleBytes: 4 << 20}
}

// checkRead runs Read over in and checks the invariants that hold for any
// input; it returns what the callback saw.
func checkRead(t *testing.T, in []byte, lim Limits) (Manifest, [][]byte, error) {
	t.Helper()
	var seen []Payload
	var got [][]byte
	m, err := Read(context.Background(), bytes.NewReader(in), lim, func(p Payload, r io.Reader) error {
		seen = append(seen, p)
		// Odd-sized reads exercise the hashing reader's bookkeeping.
		var b bytes.Buffer
		_, err := io.CopyBuffer(&b, readerOnly{r}, make([]byte, 7))
		got = append(got, b.Bytes())
		return err
	})
	if err != nil {
		if !isBundleError(err) {
			t.Fatalf("Read error without a sentinel: %v", err)
		}
		return m, got, err
	}
	if len(seen) != len(m.Payloads) {
		t.Fatalf("callback ran %d times for %d payloads", len(seen), len(m.Payloads))
	}
	if _, err := ReadManifest(mustJSON(t, m), lim); err != nil {
		t.Fatalf("accepted manifest does not validate again: %v", err)
	}
	if _, err := Verify(context.Background(), bytes.NewReader(in), lim); err != nil {
		t.Fatalf("Read accepted what Verify refuses: %v", err)
	}
	return m, got, nil
}

func contentsMatch(m Manifest, contents [][]byte) bool {
	if len(contents) != len(m.Payloads) {
		return false
	}
	for i, p := range m.Payloads {
		sum := sha256.Sum256(contents[i])
		if int64(len(contents[i])) != p.Size || hex.EncodeToString(sum[:]) != p.SHA256 {
			return false
		}
	}
	return true
}

// assembleBundle writes manifest and payload entries cut from data (sized
// as the manifest claims, as far as data lasts), applies the fault layout
// selects, and appends tail. pristine reports that no fault was applied and
// tail is zero padding.
func assembleBundle(manifest, data []byte, layout uint64, tail []byte) (raw []byte, contents [][]byte, pristine, ok bool) {
	var lm struct {
		Payloads []struct {
			Name string
			Size int64
		}
	}
	_ = json.Unmarshal(manifest, &lm) // a broken manifest still gets entries
	entries := []*tarEntry{{name: ManifestName, data: manifest}}
	off := 0
	for i, p := range lm.Payloads {
		if i == 8 {
			break
		}
		n := int(min(max(p.Size, 0), int64(len(data)-off)))
		entries = append(entries, &tarEntry{name: p.Name, data: data[off : off+n]})
		contents = append(contents, data[off:off+n])
		off += n
	}

	op := layout & 7
	pick := int(layout>>8) & 0xf
	variant := int(layout>>12) & 7
	switch op {
	case 1:
		if len(entries) > 1 {
			entries = entries[:len(entries)-1]
		}
	case 2:
		entries = append(entries, &tarEntry{name: "extra.bin", data: data[off:]})
	case 3:
		if len(entries) > 1 {
			entries = append(entries, entries[1])
		}
	case 4:
		if len(entries) > 2 {
			entries[1], entries[2] = entries[2], entries[1]
		}
	case 5:
		if len(entries) > 1 {
			entries[0], entries[1] = entries[1], entries[0]
		}
	case 6:
		e := entries[pick%len(entries)]
		e.name = []string{"../" + e.name, "d/" + e.name, strings.ToUpper(e.name), e.name + "/", "./" + e.name, "", "..", e.name + " "}[variant]
	case 7:
		e := entries[pick%len(entries)]
		e.hdr = &tar.Header{
			Typeflag: []byte{tar.TypeSymlink, tar.TypeLink, tar.TypeDir, tar.TypeFifo, tar.TypeChar, tar.TypeBlock, tar.TypeCont, tar.TypeXGlobalHeader}[variant],
			Name:     e.name, Linkname: "target", Mode: 0o644, ModTime: testCreated,
		}
		if e.hdr.Typeflag == tar.TypeCont {
			e.hdr.Size = int64(len(e.data))
		} else {
			e.data = nil
		}
	}

	format := []tar.Format{tar.FormatUnknown, tar.FormatUSTAR, tar.FormatPAX, tar.FormatGNU}[(layout>>4)&3]
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if hdr == nil {
			hdr = &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o644, ModTime: testCreated}
		}
		hdr.Format = format
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, nil, false, false
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, nil, false, false
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, false, false
	}
	raw = buf.Bytes()

	end := (layout >> 6) & 3
	switch end {
	case 1:
		raw = raw[:len(raw)-tarEndSize]
	case 2:
		raw = raw[:len(raw)-tarBlockSize]
	case 3:
		raw = raw[:int(layout>>16&0xffff)%(len(raw)+1)]
	}
	flip := layout>>40&1 == 1 && len(raw) > 0
	if flip {
		raw[int(layout>>41&0xffff)%len(raw)] ^= byte(layout>>32) | 1
	}
	raw = append(raw, tail...)
	pristine = op == 0 && end == 0 && !flip && len(bytes.Trim(tail, "\x00")) == 0
	return raw, contents, pristine, true
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
