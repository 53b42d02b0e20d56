package firmware

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBuildReadRoundTrip(t *testing.T) {
	payloads := defaultPayloads()
	bundle, built := buildBundle(t, payloads)

	readers := []struct {
		name string
		read func(r io.Reader) ([]byte, error)
	}{
		{"ReadAll", io.ReadAll},
		{"io.Copy", func(r io.Reader) ([]byte, error) {
			var b bytes.Buffer
			_, err := io.Copy(&b, r)
			return b.Bytes(), err
		}},
		{"one byte at a time", func(r io.Reader) ([]byte, error) { return io.ReadAll(iotest.OneByteReader(r)) }},
	}
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			var got []testPayload
			m, err := Read(context.Background(), bytes.NewReader(bundle), DefaultLimits(), func(p Payload, r io.Reader) error {
				b, err := rd.read(r)
				got = append(got, testPayload{p.Name, b})
				return err
			})
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			assertManifestEqual(t, m, built)
			if len(got) != len(payloads) {
				t.Fatalf("callback ran %d times, want %d", len(got), len(payloads))
			}
			for i := range payloads {
				if got[i].name != payloads[i].name || !bytes.Equal(got[i].data, payloads[i].data) {
					t.Errorf("payload %d: got %q (%d bytes), want %q (%d bytes)", i, got[i].name, len(got[i].data), payloads[i].name, len(payloads[i].data))
				}
			}
		})
	}

	t.Run("Verify", func(t *testing.T) {
		m, err := Verify(context.Background(), iotest.HalfReader(bytes.NewReader(bundle)), Limits{})
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		assertManifestEqual(t, m, built)
	})

	t.Run("callback reads part", func(t *testing.T) {
		_, err := Read(context.Background(), bytes.NewReader(bundle), DefaultLimits(), func(p Payload, r io.Reader) error {
			_, err := io.ReadFull(r, make([]byte, p.Size/2))
			return err
		})
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
	})
}

func assertManifestEqual(t *testing.T, got, want Manifest) {
	t.Helper()
	if !got.Created.Equal(want.Created) {
		t.Errorf("created %v, want %v", got.Created, want.Created)
	}
	got.Created = want.Created
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("manifest\n got %+v\nwant %+v", got, want)
	}
}

// TestReadIndependentTar reads bundles GNU tar wrote, in pax and gnu
// formats, padded to tar's 10 KiB records.
func TestReadIndependentTar(t *testing.T) {
	for _, name := range []string{"gnu-posix.bundle", "gnu-gnu.bundle"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := map[string][]byte{}
			m, err := Read(context.Background(), f, DefaultLimits(), func(p Payload, r io.Reader) error {
				b, err := io.ReadAll(r)
				got[p.Name] = b
				return err
			})
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if m.Model != "dt-100" || m.Version != "2.1.0-rc.1" || len(m.Payloads) != 2 {
				t.Fatalf("unexpected manifest %+v", m)
			}
			for _, p := range m.Payloads {
				want, err := os.ReadFile(filepath.Join("testdata", "src", p.Name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got[p.Name], want) {
					t.Errorf("payload %q differs from testdata/src", p.Name)
				}
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	kernel := testPayload{"kernel.bin", randomBytes(10, 700)}
	rootfs := testPayload{"rootfs.img", randomBytes(11, 1500)}
	two := []testPayload{kernel, rootfs}
	good := manifestFor(two)
	goodJSON := mustJSON(t, good)
	goodBundle := bundleOf(t, goodJSON, kernel, rootfs)

	withManifest := func(edit func(m *Manifest)) []byte {
		m := manifestFor(two)
		edit(&m)
		return bundleOf(t, mustJSON(t, m), kernel, rootfs)
	}
	withJSON := func(s string) []byte { return bundleOf(t, []byte(s), kernel, rootfs) }
	replaceJSON := func(old, new string) []byte {
		s := string(goodJSON)
		if !strings.Contains(s, old) {
			t.Fatalf("manifest JSON lacks %q", old)
		}
		return withJSON(strings.Replace(s, old, new, 1))
	}
	flip := func(b []byte, off int) []byte {
		b = bytes.Clone(b)
		b[off] ^= 0x01
		return b
	}
	// Offsets inside the good bundle: manifest header, manifest data,
	// kernel header, kernel data, ...
	kernelData := tarBlockSize + roundUp(len(goodJSON)) + tarBlockSize
	rootfsData := kernelData + roundUp(len(kernel.data)) + tarBlockSize
	archiveEnd := rootfsData + roundUp(len(rootfs.data))

	tinyLimits := DefaultLimits()
	tinyLimits.MaxBundleBytes = int64(len(goodBundle)) - 1

	tests := []struct {
		name  string
		in    []byte
		lim   Limits
		want  error
		inMsg string // substring the message must contain
	}{
		{name: "tampered payload byte", in: flip(goodBundle, rootfsData+100), want: ErrPayloadMismatch, inMsg: "sha256"},
		{name: "tampered first payload byte", in: flip(goodBundle, kernelData), want: ErrPayloadMismatch, inMsg: "kernel.bin"},
		{name: "manifest size larger than entry", in: withManifest(func(m *Manifest) { m.Payloads[1].Size++ }), want: ErrPayloadMismatch, inMsg: "manifest says 1501"},
		{name: "manifest size smaller than entry", in: withManifest(func(m *Manifest) { m.Payloads[0].Size-- }), want: ErrPayloadMismatch},
		{name: "manifest hash wrong", in: withManifest(func(m *Manifest) { m.Payloads[0].SHA256 = strings.Repeat("0", 64) }), want: ErrPayloadMismatch},
		{name: "manifest not first", in: makeTar(t, tarEntry{name: kernel.name, data: kernel.data}, tarEntry{name: ManifestName, data: goodJSON}, tarEntry{name: rootfs.name, data: rootfs.data}), want: ErrBundleLayout, inMsg: "first entry"},
		{name: "payloads out of order", in: bundleOf(t, goodJSON, rootfs, kernel), want: ErrBundleLayout, inMsg: "where payload"},
		{name: "extra entry", in: bundleOf(t, goodJSON, kernel, rootfs, testPayload{"extra.bin", []byte("x")}), want: ErrBundleLayout, inMsg: "unexpected entry"},
		{name: "extra empty entry", in: bundleOf(t, goodJSON, kernel, rootfs, testPayload{"extra.bin", nil}), want: ErrBundleLayout},
		{name: "second manifest", in: bundleOf(t, goodJSON, kernel, rootfs, testPayload{ManifestName, goodJSON}), want: ErrBundleLayout},
		{name: "missing payload", in: bundleOf(t, goodJSON, kernel), want: ErrBundleLayout, inMsg: "missing"},
		{name: "no payloads at all", in: bundleOf(t, goodJSON), want: ErrBundleLayout, inMsg: "missing"},
		{name: "duplicate payload names", in: bundleOf(t, mustJSON(t, manifestFor([]testPayload{kernel, kernel})), kernel, kernel), want: ErrManifest, inMsg: "twice"},
		{name: "duplicate names differing in case", in: bundleOf(t, mustJSON(t, manifestFor([]testPayload{kernel, {"KERNEL.bin", kernel.data}})), kernel, testPayload{"KERNEL.bin", kernel.data}), want: ErrManifest, inMsg: "twice"},
		{name: "traversal name in manifest and tar", in: bundleOf(t, mustJSON(t, manifestFor([]testPayload{{"../../etc/passwd", kernel.data}})), testPayload{"../../etc/passwd", kernel.data}), want: ErrManifest},
		{name: "dotdot name", in: bundleOf(t, mustJSON(t, manifestFor([]testPayload{{"..", kernel.data}})), testPayload{"..", kernel.data}), want: ErrManifest},
		{name: "traversal name in tar only", in: bundleOf(t, goodJSON, testPayload{"../kernel.bin", kernel.data}, rootfs), want: ErrBundleLayout, inMsg: "unsafe path"},
		{name: "directory prefix in tar only", in: bundleOf(t, goodJSON, testPayload{"boot/kernel.bin", kernel.data}, rootfs), want: ErrBundleLayout, inMsg: "unsafe path"},
		{name: "manifest.json in a directory", in: makeTar(t, tarEntry{name: "x/" + ManifestName, data: goodJSON}), want: ErrBundleLayout},
		{name: "symlink payload", in: makeTar(t, tarEntry{name: ManifestName, data: goodJSON}, tarEntry{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: kernel.name, Linkname: "/etc/shadow", ModTime: testCreated}}), want: ErrBundleLayout, inMsg: "regular file"},
		{name: "hard link payload", in: makeTar(t, tarEntry{name: ManifestName, data: goodJSON}, tarEntry{hdr: &tar.Header{Typeflag: tar.TypeLink, Name: kernel.name, Linkname: ManifestName, ModTime: testCreated}}), want: ErrBundleLayout},
		{name: "directory first", in: makeTar(t, tarEntry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755, ModTime: testCreated}}), want: ErrBundleLayout},
		{name: "pax global header first", in: makeTar(t, tarEntry{hdr: &tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "x"}}}, tarEntry{name: ManifestName, data: goodJSON}), want: ErrBundleLayout},
		{name: "oversized manifest", in: withJSON(string(goodJSON) + strings.Repeat(" ", 64<<10)), want: ErrManifest, inMsg: "limit"},
		{name: "manifest over a custom limit", in: goodBundle, lim: Limits{MaxManifestBytes: int64(len(goodJSON)) - 1}, want: ErrManifest, inMsg: "limit"},
		{name: "too many payloads", in: goodBundle, lim: Limits{MaxPayloads: 1}, want: ErrManifest, inMsg: "exceeds the limit of 1"},
		{name: "payload over size limit", in: goodBundle, lim: Limits{MaxPayloadBytes: 1000}, want: ErrManifest, inMsg: "outside"},
		{name: "payloads over bundle limit", in: goodBundle, lim: Limits{MaxBundleBytes: 2000}, want: ErrManifest, inMsg: "bundle limit"},
		{name: "stream over bundle limit", in: goodBundle, lim: tinyLimits, want: ErrBundleLayout, inMsg: "bundle limit"},
		{name: "bad semver", in: withManifest(func(m *Manifest) { m.Version = "1.2" }), want: ErrManifest, inMsg: "semantic version"},
		{name: "semver with v prefix", in: withManifest(func(m *Manifest) { m.Version = "v1.2.3" }), want: ErrManifest},
		{name: "semver leading zero", in: withManifest(func(m *Manifest) { m.Version = "1.02.3" }), want: ErrManifest},
		{name: "semver build metadata", in: withManifest(func(m *Manifest) { m.Version = "1.2.3+build.5" }), want: ErrManifest},
		{name: "unknown manifest field", in: replaceJSON(`"schema":1`, `"schema":1,"debug":true`), want: ErrManifest, inMsg: `unknown field "debug"`},
		{name: "unknown payload field", in: replaceJSON(`"name":"kernel.bin"`, `"name":"kernel.bin","mode":"0755"`), want: ErrManifest, inMsg: `unknown field "mode"`},
		{name: "duplicate key", in: replaceJSON(`"version":"1.2.3"`, `"version":"1.2.3","version":"9.9.9"`), want: ErrManifest, inMsg: "duplicate"},
		{name: "key in other case", in: replaceJSON(`"version":"1.2.3"`, `"Version":"1.2.3"`), want: ErrManifest, inMsg: "unknown field"},
		{name: "trailing json", in: withJSON(string(goodJSON) + `{}`), want: ErrManifest},
		{name: "manifest not json", in: withJSON("model=dt-100"), want: ErrManifest},
		{name: "manifest is an array", in: withJSON("[]"), want: ErrManifest},
		{name: "wrong schema", in: withManifest(func(m *Manifest) { m.Schema = 2 }), want: ErrManifest, inMsg: "schema 2"},
		{name: "no hardware", in: withManifest(func(m *Manifest) { m.Hardware = nil }), want: ErrManifest},
		{name: "bad model", in: withManifest(func(m *Manifest) { m.Model = "dt 100/x" }), want: ErrManifest},
		{name: "uppercase hex", in: withManifest(func(m *Manifest) { m.Payloads[0].SHA256 = strings.ToUpper(m.Payloads[0].SHA256) }), want: ErrManifest},
		{name: "negative size", in: withManifest(func(m *Manifest) { m.Payloads[0].Size = -1 }), want: ErrManifest},
		{name: "missing created", in: replaceJSON(`,"created":"2025-06-01T12:00:00Z"`, ``), want: ErrManifest, inMsg: "created"},
		{name: "empty stream", in: nil, want: ErrBundleLayout},
		{name: "not tar", in: bytes.Repeat([]byte("GIF89a"), 200), want: ErrBundleLayout},
		{name: "truncated in manifest header", in: goodBundle[:100], want: ErrBundleLayout},
		{name: "truncated in manifest", in: goodBundle[:tarBlockSize+10], want: ErrBundleLayout},
		{name: "truncated in payload", in: goodBundle[:rootfsData+700], want: ErrBundleLayout},
		{name: "truncated after last payload", in: goodBundle[:archiveEnd], want: ErrBundleLayout, inMsg: "end-of-archive"},
		{name: "truncated after one end block", in: goodBundle[:archiveEnd+tarBlockSize], want: ErrBundleLayout, inMsg: "end-of-archive"},
		{name: "truncated mid end block", in: goodBundle[:archiveEnd+700], want: ErrBundleLayout},
		{name: "truncated at a payload boundary", in: goodBundle[:rootfsData-tarBlockSize], want: ErrBundleLayout, inMsg: "missing"},
		{name: "trailing garbage", in: append(bytes.Clone(goodBundle), "garbage"...), want: ErrBundleLayout, inMsg: "trailing"},
		{name: "trailing garbage after zero padding", in: append(append(bytes.Clone(goodBundle), make([]byte, 9000)...), 1), want: ErrBundleLayout, inMsg: "trailing"},
		{name: "zero block then data", in: append(bytes.Clone(goodBundle[:archiveEnd+tarBlockSize]), bytes.Repeat([]byte{1}, tarBlockSize)...), want: ErrBundleLayout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(context.Background(), bytes.NewReader(tt.in), tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			for _, other := range []error{ErrManifest, ErrPayloadMismatch, ErrBundleLayout} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("err = %v also wraps %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.inMsg)
			}
		})
	}

	t.Run("good bundle passes", func(t *testing.T) {
		if _, err := Verify(context.Background(), bytes.NewReader(goodBundle), Limits{}); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("zero padding passes", func(t *testing.T) {
		padded := append(bytes.Clone(goodBundle), make([]byte, 10240)...)
		if _, err := Verify(context.Background(), bytes.NewReader(padded), Limits{}); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("bundle exactly at limit passes", func(t *testing.T) {
		lim := Limits{MaxBundleBytes: int64(len(goodBundle))}
		if _, err := Verify(context.Background(), bytes.NewReader(goodBundle), lim); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}

func roundUp(n int) int { return (n + tarBlockSize - 1) / tarBlockSize * tarBlockSize }

func TestReadCallback(t *testing.T) {
	payloads := defaultPayloads()
	bundle, _ := buildBundle(t, payloads)
	errStop := errors.New("disk full")

	t.Run("error is returned", func(t *testing.T) {
		calls := 0
		_, err := Read(context.Background(), bytes.NewReader(bundle), Limits{}, func(p Payload, r io.Reader) error {
			calls++
			return errStop
		})
		if !errors.Is(err, errStop) {
			t.Fatalf("err = %v, want %v", err, errStop)
		}
		if calls != 1 {
			t.Fatalf("callback ran %d times after failing", calls)
		}
		for _, s := range []error{ErrManifest, ErrPayloadMismatch, ErrBundleLayout} {
			if errors.Is(err, s) {
				t.Errorf("callback error %v is reported as %v", err, s)
			}
		}
	})

	t.Run("truncation seen by callback keeps its sentinel", func(t *testing.T) {
		cut := bundle[:len(bundle)-2*copyBufferSize/3]
		_, err := Read(context.Background(), bytes.NewReader(cut), Limits{}, func(p Payload, r io.Reader) error {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("copying %s: %v", p.Name, err) // loses the chain on purpose
			}
			return nil
		})
		if !errors.Is(err, ErrBundleLayout) {
			t.Fatalf("err = %v, want ErrBundleLayout", err)
		}
	})

	t.Run("truncation swallowed by callback", func(t *testing.T) {
		cut := bundle[:len(bundle)-2*copyBufferSize/3]
		_, err := Read(context.Background(), bytes.NewReader(cut), Limits{}, func(p Payload, r io.Reader) error {
			_, _ = io.Copy(io.Discard, r)
			return nil
		})
		if !errors.Is(err, ErrBundleLayout) {
			t.Fatalf("err = %v, want ErrBundleLayout", err)
		}
	})

	t.Run("reader is dead after the callback", func(t *testing.T) {
		var kept io.Reader
		_, err := Read(context.Background(), bytes.NewReader(bundle), Limits{}, func(p Payload, r io.Reader) error {
			if kept == nil {
				kept = r
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := kept.Read(make([]byte, 10)); n != 0 || err == nil {
			t.Fatalf("Read after the callback = %d, %v; want an error", n, err)
		}
	})

	t.Run("tampering is caught after the callback", func(t *testing.T) {
		bad := bytes.Clone(bundle)
		bad[len(bad)-2*tarEndSize-100] ^= 0xff // inside the last payload
		var sawAll bool
		_, err := Read(context.Background(), bytes.NewReader(bad), Limits{}, func(p Payload, r io.Reader) error {
			b, err := io.ReadAll(r)
			sawAll = int64(len(b)) == p.Size
			return err
		})
		if !errors.Is(err, ErrPayloadMismatch) || !sawAll {
			t.Fatalf("err = %v (callback saw all: %v), want ErrPayloadMismatch", err, sawAll)
		}
	})
}

type failingReader struct {
	r     io.Reader
	after int
	err   error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, f.err
	}
	if len(p) > f.after {
		p = p[:f.after]
	}
	n, err := f.r.Read(p)
	f.after -= n
	return n, err
}

func TestReadReaderErrors(t *testing.T) {
	bundle, _ := buildBundle(t, defaultPayloads())
	errNet := errors.New("connection reset")
	for _, after := range []int{0, 100, 5000, len(bundle) / 2, len(bundle) - 1} {
		t.Run(fmt.Sprint(after), func(t *testing.T) {
			_, err := Verify(context.Background(), &failingReader{bytes.NewReader(bundle), after, errNet}, Limits{})
			if !errors.Is(err, errNet) {
				t.Fatalf("err = %v, want %v", err, errNet)
			}
			for _, s := range []error{ErrManifest, ErrPayloadMismatch, ErrBundleLayout} {
				if errors.Is(err, s) {
					t.Errorf("I/O error %v is reported as %v", err, s)
				}
			}
		})
	}
}

func TestReadCanceled(t *testing.T) {
	bundle, _ := buildBundle(t, defaultPayloads())
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Read(ctx, bytes.NewReader(bundle), Limits{}, func(p Payload, r io.Reader) error {
		cancel()
		_, err := io.Copy(io.Discard, r)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrBundleLayout) {
		t.Fatalf("cancellation reported as a bad bundle: %v", err)
	}
}

func TestLimitsDefaults(t *testing.T) {
	got := Limits{MaxPayloads: 3, MaxBundleBytes: -1}.withDefaults()
	want := DefaultLimits()
	want.MaxPayloads = 3
	if got != want {
		t.Fatalf("withDefaults = %+v, want %+v", got, want)
	}
	d := DefaultLimits()
	if d.MaxManifestBytes != 64<<10 || d.MaxPayloads != 16 || d.MaxPayloadBytes != 4<<30 || d.MaxBundleBytes != 8<<30 {
		t.Fatalf("DefaultLimits = %+v", d)
	}
}
