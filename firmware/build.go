package firmware

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// copyBufferSize is large enough that per-call overhead (syscalls, ctx
// checks) disappears next to hashing; measured against sha256sum.
const copyBufferSize = 1 << 20

// bufPool recycles copy buffers: a server verifying many uploads, or a
// fuzzer running Read thousands of times a second, would otherwise allocate
// and zero 1 MiB per call.
var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// PayloadFile names a payload and the file it is read from.
type PayloadFile struct{ Name, Path string }

// BuildOptions describes a bundle to build.
type BuildOptions struct {
	Model    string
	Version  string
	Hardware []string
	Payloads []PayloadFile
	// Created is the manifest time and every entry's modification time.
	// Zero means now (UTC, truncated to the second); pass a fixed time for
	// reproducible builds.
	Created time.Time
}

// Build hashes each payload file (first pass), then streams the manifest and
// the payloads into w (second pass). No payload is held in memory. The
// payload files stay open between passes, so renaming another file into
// place mid-build has no effect; a payload rewritten in place with the same
// size yields a bundle that Verify rejects, and one whose size changes makes
// Build fail. Bundles built from the same options and Created are
// byte-identical.
func Build(ctx context.Context, opts BuildOptions, w io.Writer) (Manifest, error) {
	created := opts.Created
	if created.IsZero() {
		created = time.Now().UTC().Truncate(time.Second)
	}
	lim := DefaultLimits()
	if err := validateMeta(opts.Model, opts.Version, opts.Hardware, created); err != nil {
		return Manifest{}, fmt.Errorf("building bundle: %w: %w", ErrManifest, err)
	}
	if err := validatePayloadNames(len(opts.Payloads), func(i int) string { return opts.Payloads[i].Name }, lim); err != nil {
		return Manifest{}, fmt.Errorf("building bundle: %w: %w", ErrManifest, err)
	}

	files := make([]*os.File, len(opts.Payloads))
	defer func() {
		for _, f := range files {
			if f != nil {
				_ = f.Close()
			}
		}
	}()
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	m := Manifest{
		Schema:   ManifestSchema,
		Model:    opts.Model,
		Version:  opts.Version,
		Hardware: append([]string(nil), opts.Hardware...),
		Payloads: make([]Payload, len(opts.Payloads)),
		Created:  created,
	}
	for i, pf := range opts.Payloads {
		f, err := os.Open(pf.Path)
		if err != nil {
			return Manifest{}, fmt.Errorf("building bundle: payload %q: %w", pf.Name, err)
		}
		files[i] = f
		fi, err := f.Stat()
		if err != nil {
			return Manifest{}, fmt.Errorf("building bundle: payload %q: %w", pf.Name, err)
		}
		if !fi.Mode().IsRegular() {
			return Manifest{}, fmt.Errorf("building bundle: payload %q: %s is not a regular file", pf.Name, pf.Path)
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, readerOnly{ctxReader{ctx, f}}, buf)
		if err != nil {
			return Manifest{}, fmt.Errorf("building bundle: hashing payload %q: %w", pf.Name, err)
		}
		m.Payloads[i] = Payload{Name: pf.Name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	}

	mb, err := marshalManifest(m)
	if err != nil {
		return Manifest{}, fmt.Errorf("building bundle: encoding manifest: %w", err)
	}
	// Re-read what we are about to write with the reader's own rules, so
	// Build can never emit a bundle that Read refuses.
	if _, err := ReadManifest(mb, lim); err != nil {
		return Manifest{}, fmt.Errorf("building bundle: %w", err)
	}

	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(entryHeader(ManifestName, int64(len(mb)), created)); err != nil {
		return Manifest{}, fmt.Errorf("building bundle: writing manifest: %w", err)
	}
	if _, err := tw.Write(mb); err != nil {
		return Manifest{}, fmt.Errorf("building bundle: writing manifest: %w", err)
	}
	for i, p := range m.Payloads {
		if err := writePayload(ctx, tw, files[i], p, created, buf); err != nil {
			return Manifest{}, fmt.Errorf("building bundle: payload %q: %w", p.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return Manifest{}, fmt.Errorf("building bundle: %w", err)
	}
	return m, nil
}

func writePayload(ctx context.Context, tw *tar.Writer, f *os.File, p Payload, created time.Time, buf []byte) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := tw.WriteHeader(entryHeader(p.Name, p.Size, created)); err != nil {
		return err
	}
	// readerOnly and writerOnly keep io.CopyBuffer from taking the
	// ReaderFrom/WriterTo paths, which use 32 KiB buffers.
	n, err := io.CopyBuffer(writerOnly{tw}, readerOnly{ctxReader{ctx, io.LimitReader(f, p.Size)}}, buf)
	if err != nil {
		return err
	}
	if n != p.Size {
		return fmt.Errorf("file shrank from %d to %d bytes during the build", p.Size, n)
	}
	if k, _ := f.Read(buf[:1]); k != 0 {
		return fmt.Errorf("file grew past %d bytes during the build", p.Size)
	}
	return nil
}

// entryHeader makes every header identical apart from name and size, so
// builds are reproducible and carry no build-host details (owner, mode).
func entryHeader(name string, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  mtime.Truncate(time.Second),
	}
}

// BuildFile builds into out atomically: a temporary file in out's directory
// is written, fsynced and renamed over out, so readers see either the old
// file or the complete new bundle, never a partial one.
func BuildFile(ctx context.Context, opts BuildOptions, out string) (Manifest, error) {
	var m Manifest
	err := writeFileAtomic(out, 0o644, func(f *os.File) error {
		var err error
		m, err = Build(ctx, opts, f)
		return err
	})
	if err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// writeFileAtomic is tailscale's atomicfile pattern: temp in the same
// directory, write, chmod, fsync, close, rename, then fsync the directory
// so the rename itself survives a power cut.
func writeFileAtomic(path string, perm os.FileMode, write func(*os.File) error) (err error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		serr := d.Sync()
		_ = d.Close()
		if serr != nil {
			return fmt.Errorf("writing %s: syncing directory: %w", path, serr)
		}
	}
	return nil
}

// ctxReader makes a long copy stop soon after ctx is done. With 1 MiB
// reads the check costs nothing measurable.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }
