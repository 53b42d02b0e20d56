package firmware

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
)

const benchPayloadSize = 64 << 20

// benchFiles writes a 64 MiB payload and a bundle of it, once per benchmark.
func benchFiles(b *testing.B) (opts BuildOptions, bundlePath string) {
	b.Helper()
	dir := b.TempDir()
	payload := filepath.Join(dir, "rootfs.img")
	f, err := os.Create(payload)
	if err != nil {
		b.Fatal(err)
	}
	chunk := randomBytes(42, 1<<20)
	for range benchPayloadSize / len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	opts = BuildOptions{
		Model:    "dt-100",
		Version:  "1.2.3",
		Hardware: []string{"rev-a"},
		Payloads: []PayloadFile{{Name: "rootfs.img", Path: payload}},
		Created:  testCreated,
	}
	bundlePath = filepath.Join(dir, "b.bundle")
	if _, err := BuildFile(context.Background(), opts, bundlePath); err != nil {
		b.Fatal(err)
	}
	return opts, bundlePath
}

// BenchmarkSHA256Reference is the yardstick: hashing the bundle file once,
// which is what sha256sum does. Build and Verify should stay close to it.
func BenchmarkSHA256Reference(b *testing.B) {
	_, bundle := benchFiles(b)
	buf := make([]byte, copyBufferSize)
	b.SetBytes(benchPayloadSize)
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(bundle)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(h, readerOnly{f}, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkBuild(b *testing.B) {
	opts, _ := benchFiles(b)
	b.SetBytes(benchPayloadSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(context.Background(), opts, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildFile(b *testing.B) {
	opts, bundle := benchFiles(b)
	b.SetBytes(benchPayloadSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := BuildFile(context.Background(), opts, bundle); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	_, bundle := benchFiles(b)
	b.SetBytes(benchPayloadSize)
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(bundle)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Verify(context.Background(), f, DefaultLimits()); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkSignFile(b *testing.B) {
	_, bundle := benchFiles(b)
	sv := newECDSASigner(b)
	b.SetBytes(benchPayloadSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := SignFile(context.Background(), sv, bundle); err != nil {
			b.Fatal(err)
		}
	}
}
