package firmware

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var testCreated = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testPayload is a payload's name and content.
type testPayload struct {
	name string
	data []byte
}

// randomBytes is deterministic so failures reproduce.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// defaultPayloads cover the tar padding cases: empty, under a block,
// exactly a block, a block plus one, and over the copy buffer size.
func defaultPayloads() []testPayload {
	return []testPayload{
		{"kernel.bin", randomBytes(1, 1000)},
		{"empty.dat", nil},
		{"block.img", randomBytes(2, tarBlockSize)},
		{"block1.img", randomBytes(3, tarBlockSize+1)},
		{"rootfs.img", randomBytes(4, copyBufferSize+7)},
	}
}

// writePayloadFiles writes payloads to a temp dir and returns build options.
func writePayloadFiles(t *testing.T, payloads []testPayload) BuildOptions {
	t.Helper()
	dir := t.TempDir()
	opts := BuildOptions{
		Model:    "dt-100",
		Version:  "1.2.3",
		Hardware: []string{"rev-a", "rev-b"},
		Created:  testCreated,
	}
	for i, p := range payloads {
		path := filepath.Join(dir, "file"+string(rune('a'+i)))
		if err := os.WriteFile(path, p.data, 0o644); err != nil {
			t.Fatal(err)
		}
		opts.Payloads = append(opts.Payloads, PayloadFile{Name: p.name, Path: path})
	}
	return opts
}

// buildBundle builds a bundle of payloads in memory.
func buildBundle(t *testing.T, payloads []testPayload) ([]byte, Manifest) {
	t.Helper()
	var buf bytes.Buffer
	m, err := Build(context.Background(), writePayloadFiles(t, payloads), &buf)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return buf.Bytes(), m
}

// manifestFor describes payloads the way Build would.
func manifestFor(payloads []testPayload) Manifest {
	m := Manifest{
		Schema:   ManifestSchema,
		Model:    "dt-100",
		Version:  "1.2.3",
		Hardware: []string{"rev-a"},
		Created:  testCreated,
	}
	for _, p := range payloads {
		sum := sha256.Sum256(p.data)
		m.Payloads = append(m.Payloads, Payload{Name: p.name, Size: int64(len(p.data)), SHA256: hex.EncodeToString(sum[:])})
	}
	return m
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tarEntry is one entry of a hand-made tar stream. A nil hdr defaults to a
// regular file named name holding data.
type tarEntry struct {
	name string
	data []byte
	hdr  *tar.Header
}

// makeTar writes entries with archive/tar, so malformed bundles are still
// well-formed tar unless a test damages the bytes afterwards.
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if hdr == nil {
			hdr = &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o644, ModTime: testCreated}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", hdr.Name, err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatalf("tar data %q: %v", hdr.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleOf is a hand-made bundle: manifest bytes, then payload entries.
func bundleOf(t testing.TB, manifest []byte, payloads ...testPayload) []byte {
	t.Helper()
	entries := []tarEntry{{name: ManifestName, data: manifest}}
	for _, p := range payloads {
		entries = append(entries, tarEntry{name: p.name, data: p.data})
	}
	return makeTar(t, entries...)
}
