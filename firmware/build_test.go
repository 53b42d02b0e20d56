package firmware

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuildLayout(t *testing.T) {
	payloads := defaultPayloads()
	bundle, m := buildBundle(t, payloads)

	// Read back with archive/tar alone: the layout is the contract with
	// tools we do not control (tar -x for debugging, other readers).
	tr := tar.NewReader(bytes.NewReader(bundle))
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Uname != "" || !hdr.ModTime.Equal(testCreated) {
			t.Errorf("entry %q: unexpected header %+v", hdr.Name, hdr)
		}
		names = append(names, hdr.Name)
		if hdr.Name == ManifestName {
			b, _ := io.ReadAll(tr)
			got, err := ReadManifest(b, DefaultLimits())
			if err != nil {
				t.Fatalf("manifest entry: %v", err)
			}
			assertManifestEqual(t, got, m)
		}
	}
	want := []string{ManifestName}
	for _, p := range payloads {
		want = append(want, p.name)
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("entries %v, want %v", names, want)
	}
	if m.Schema != ManifestSchema || m.Model != "dt-100" || m.Version != "1.2.3" || len(m.Payloads) != len(payloads) {
		t.Fatalf("manifest %+v", m)
	}
	if m.Payloads[1].Size != 0 || m.Payloads[4].Size != copyBufferSize+7 {
		t.Fatalf("sizes %+v", m.Payloads)
	}
}

func TestBuildReproducible(t *testing.T) {
	payloads := defaultPayloads()
	opts := writePayloadFiles(t, payloads)
	var a, b bytes.Buffer
	if _, err := Build(context.Background(), opts, &a); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), opts, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two builds of the same inputs differ")
	}

	opts.Created = time.Time{}
	before := time.Now().UTC().Truncate(time.Second)
	m, err := Build(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m.Created.Before(before) || m.Created.After(time.Now()) || m.Created.Location() != time.UTC || m.Created.Nanosecond() != 0 {
		t.Fatalf("default Created = %v, want now in UTC truncated to the second", m.Created)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(o *BuildOptions)
		want  error // nil: any error
		inMsg string
	}{
		{name: "bad version", edit: func(o *BuildOptions) { o.Version = "1.2.3.4" }, want: ErrManifest, inMsg: "semantic version"},
		{name: "empty version", edit: func(o *BuildOptions) { o.Version = "" }, want: ErrManifest},
		{name: "bad model", edit: func(o *BuildOptions) { o.Model = "../dt" }, want: ErrManifest},
		{name: "no hardware", edit: func(o *BuildOptions) { o.Hardware = nil }, want: ErrManifest, inMsg: "hardware"},
		{name: "duplicate hardware", edit: func(o *BuildOptions) { o.Hardware = []string{"a", "a"} }, want: ErrManifest},
		{name: "no payloads", edit: func(o *BuildOptions) { o.Payloads = nil }, want: ErrManifest, inMsg: "no payloads"},
		{name: "duplicate payload", edit: func(o *BuildOptions) { o.Payloads[1].Name = o.Payloads[0].Name }, want: ErrManifest, inMsg: "twice"},
		{name: "traversal name", edit: func(o *BuildOptions) { o.Payloads[0].Name = "../x" }, want: ErrManifest},
		{name: "reserved name", edit: func(o *BuildOptions) { o.Payloads[0].Name = "Manifest.JSON" }, want: ErrManifest, inMsg: "reserved"},
		{name: "too many payloads", edit: func(o *BuildOptions) {
			for len(o.Payloads) <= DefaultLimits().MaxPayloads {
				o.Payloads = append(o.Payloads, PayloadFile{Name: "p" + strings.Repeat("x", len(o.Payloads)), Path: o.Payloads[0].Path})
			}
		}, want: ErrManifest, inMsg: "limit"},
		{name: "missing file", edit: func(o *BuildOptions) { o.Payloads[0].Path += ".missing" }, want: fs.ErrNotExist},
		{name: "directory payload", edit: func(o *BuildOptions) { o.Payloads[0].Path = filepath.Dir(o.Payloads[0].Path) }, inMsg: "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := writePayloadFiles(t, defaultPayloads()[:2])
			tt.edit(&opts)
			var out bytes.Buffer
			_, err := Build(context.Background(), opts, &out)
			if err == nil {
				t.Fatal("Build succeeded, want error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.inMsg)
			}
			if out.Len() != 0 {
				t.Errorf("Build wrote %d bytes before failing validation", out.Len())
			}
		})
	}
}

func TestBuildCanceled(t *testing.T) {
	opts := writePayloadFiles(t, defaultPayloads())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, opts, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// changingWriter rewrites a payload file once the manifest is out, which is
// the window between Build's two passes.
type changingWriter struct {
	w      io.Writer
	path   string
	data   []byte
	done   bool
	t      *testing.T
	writes int
}

func (c *changingWriter) Write(p []byte) (int, error) {
	c.writes++
	if !c.done && c.writes > 2 { // header and manifest written
		c.done = true
		if err := os.WriteFile(c.path, c.data, 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
	return c.w.Write(p)
}

func TestBuildPayloadChangesBetweenPasses(t *testing.T) {
	orig := randomBytes(5, 5000)
	tests := []struct {
		name      string
		newData   []byte
		buildFail bool
	}{
		{"shrinks", orig[:4000], true},
		{"grows", append(bytes.Clone(orig), 1, 2, 3), true},
		{"same size, new content", randomBytes(6, 5000), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := writePayloadFiles(t, []testPayload{{"a.bin", orig}})
			var buf bytes.Buffer
			cw := &changingWriter{w: &buf, path: opts.Payloads[0].Path, data: tt.newData, t: t}
			_, err := Build(context.Background(), opts, cw)
			if tt.buildFail {
				if err == nil || !strings.Contains(err.Error(), "during the build") {
					t.Fatalf("err = %v, want a changed-during-build error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			// Build cannot see this without hashing twice; Verify must.
			if _, err := Verify(context.Background(), &buf, Limits{}); !errors.Is(err, ErrPayloadMismatch) {
				t.Fatalf("Verify: err = %v, want ErrPayloadMismatch", err)
			}
		})
	}
}

func TestBuildFile(t *testing.T) {
	opts := writePayloadFiles(t, defaultPayloads())
	dir := t.TempDir()
	out := filepath.Join(dir, "dt-100-1.2.3.bundle")

	if err := os.WriteFile(out, []byte("old bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := BuildFile(context.Background(), opts, out)
	if err != nil {
		t.Fatalf("BuildFile: %v", err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(context.Background(), f, Limits{})
	f.Close()
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	assertManifestEqual(t, got, m)

	// A failed build must leave the previous file alone and no temp files.
	before, _ := os.ReadFile(out)
	opts.Payloads[0].Path += ".missing"
	if _, err := BuildFile(context.Background(), opts, out); err == nil {
		t.Fatal("BuildFile with a missing payload succeeded")
	}
	after, _ := os.ReadFile(out)
	if !bytes.Equal(before, after) {
		t.Fatal("failed BuildFile changed the existing bundle")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only the bundle", names)
	}
}
