package firmware

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

const (
	tarBlockSize = 512
	// tarEndSize is the two zero blocks that end every tar archive.
	tarEndSize = 2 * tarBlockSize
)

// Read streams a bundle from r. It parses and validates the manifest, then
// for each payload calls fn with the payload and a reader of its content;
// fn may be nil, and need not read everything. When fn returns, Read
// consumes the rest of the payload and checks its size and SHA-256, so fn
// sees unverified bytes: act on them only once Read returns nil. fn must not
// use the reader after returning.
//
// Read consumes r to its end: zero bytes may pad the archive (GNU tar pads
// to its record size) but anything else after the end-of-archive marker is
// an error. Errors about the bundle wrap ErrManifest, ErrPayloadMismatch or
// ErrBundleLayout; an error from fn is returned wrapped.
func Read(ctx context.Context, r io.Reader, lim Limits, fn func(p Payload, r io.Reader) error) (Manifest, error) {
	lim = lim.withDefaults()
	br := &boundedReader{ctx: ctx, r: r, max: lim.MaxBundleBytes}
	tr := tar.NewReader(br)

	hdr, err := tr.Next()
	if err != nil {
		return Manifest{}, br.classify("reading manifest header", err)
	}
	if err := checkEntryHeader(hdr); err != nil {
		return Manifest{}, err
	}
	if hdr.Name != ManifestName {
		return Manifest{}, fmt.Errorf("%w: first entry is %q, want %q", ErrBundleLayout, hdr.Name, ManifestName)
	}
	if hdr.Size > lim.MaxManifestBytes {
		return Manifest{}, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrManifest, hdr.Size, lim.MaxManifestBytes)
	}
	mb := make([]byte, hdr.Size)
	if _, err := io.ReadFull(tr, mb); err != nil {
		return Manifest{}, br.classify("reading manifest", err)
	}
	m, err := ReadManifest(mb, lim)
	if err != nil {
		return Manifest{}, err
	}

	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	var dataEnd int64
	for _, p := range m.Payloads {
		if err := readPayload(tr, br, p, fn, buf); err != nil {
			return Manifest{}, err
		}
		dataEnd = br.n
		if tail := p.Size % tarBlockSize; tail != 0 {
			dataEnd += tarBlockSize - tail
		}
	}

	hdr, err = tr.Next()
	switch {
	case err == nil:
		return Manifest{}, fmt.Errorf("%w: unexpected entry %q after the last payload", ErrBundleLayout, hdr.Name)
	case !errors.Is(err, io.EOF):
		return Manifest{}, br.classify("reading end of archive", err)
	case br.n != dataEnd+tarEndSize:
		// archive/tar also reports io.EOF when the stream stops at a block
		// boundary, so a bundle cut after its last payload (or a dangling
		// PAX header) would otherwise pass.
		return Manifest{}, fmt.Errorf("%w: missing end-of-archive marker (truncated stream?)", ErrBundleLayout)
	}
	if err := checkZeroTail(br, buf); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Verify reads the whole bundle from r and checks it; it is Read with a
// nil callback.
func Verify(ctx context.Context, r io.Reader, lim Limits) (Manifest, error) {
	return Read(ctx, r, lim, nil)
}

func readPayload(tr *tar.Reader, br *boundedReader, p Payload, fn func(Payload, io.Reader) error, buf []byte) error {
	hdr, err := tr.Next()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: payload %q is missing", ErrBundleLayout, p.Name)
	}
	if err != nil {
		return br.classify(fmt.Sprintf("reading header of payload %q", p.Name), err)
	}
	if err := checkEntryHeader(hdr); err != nil {
		return err
	}
	if hdr.Name != p.Name {
		return fmt.Errorf("%w: entry %q where payload %q belongs", ErrBundleLayout, hdr.Name, p.Name)
	}
	if hdr.Size != p.Size {
		return fmt.Errorf("%w: payload %q: tar entry holds %d bytes, manifest says %d", ErrPayloadMismatch, p.Name, hdr.Size, p.Size)
	}

	h := sha256.New()
	if fn != nil {
		pr := &payloadReader{r: tr, h: h, br: br, name: p.Name, buf: buf}
		err := fn(p, pr)
		pr.err = errReaderDone // the buffer goes back to the pool with Read
		if err != nil {
			if pr.streamErr != nil {
				// The callback failed because the stream did; report the
				// stream's error so the sentinel survives any wrapping fn
				// applied.
				return pr.streamErr
			}
			return fmt.Errorf("processing payload %q: %w", p.Name, err)
		}
		if pr.streamErr != nil {
			return pr.streamErr // fn swallowed it; the bundle is still bad
		}
	}
	if _, err := io.CopyBuffer(h, readerOnly{tr}, buf); err != nil {
		return br.classify(fmt.Sprintf("reading payload %q", p.Name), err)
	}
	// tar.Reader stops at the header's size and reports a short entry as
	// io.ErrUnexpectedEOF, so reaching here means exactly p.Size bytes.
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("%w: payload %q: sha256 %s, manifest says %s", ErrPayloadMismatch, p.Name, got, p.SHA256)
	}
	return nil
}

// checkEntryHeader accepts regular files with safe names only.
func checkEntryHeader(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeReg {
		return fmt.Errorf("%w: entry %q has type %q, want a regular file", ErrBundleLayout, hdr.Name, hdr.Typeflag)
	}
	for k := range hdr.PAXRecords {
		// archive/tar expands sparse files transparently; a bundle has no
		// use for them and they let a small stream claim a large size.
		if strings.HasPrefix(k, "GNU.sparse.") {
			return fmt.Errorf("%w: entry %q is a sparse file", ErrBundleLayout, hdr.Name)
		}
	}
	if hdr.Name == "" || hdr.Name == "." || hdr.Name == ".." ||
		strings.ContainsAny(hdr.Name, `/\`) || strings.Contains(hdr.Name, "..") {
		return fmt.Errorf("%w: entry %q has an unsafe path", ErrBundleLayout, hdr.Name)
	}
	return nil
}

func checkZeroTail(br *boundedReader, buf []byte) error {
	for {
		n, err := br.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return fmt.Errorf("%w: trailing data after the end of the archive", ErrBundleLayout)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return br.classify("reading end of archive", err)
		}
	}
}

// boundedReader counts what the tar reader consumes, enforces
// MaxBundleBytes and ctx, and remembers errors of the underlying reader so
// they can be told apart from format errors.
type boundedReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
	max int64
	err error // sticky: an error that did not come from the bundle's content
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	// Allow one byte past the limit so that exceeding it is detected
	// rather than looking like a clean end of stream.
	if room := b.max - b.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.r.Read(p)
	if n < 0 || n > len(p) {
		n, err = 0, fmt.Errorf("reader returned invalid count %d", n)
	}
	b.n += int64(n)
	if b.n > b.max {
		b.err = fmt.Errorf("%w: stream exceeds the %d byte bundle limit", ErrBundleLayout, b.max)
		return n, b.err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

// classify maps an error from the tar reader to the error Read returns.
func (b *boundedReader) classify(what string, err error) error {
	if b.err != nil {
		if errors.Is(b.err, ErrBundleLayout) {
			return fmt.Errorf("%s: %w", what, b.err)
		}
		return fmt.Errorf("reading bundle: %s: %w", what, b.err)
	}
	// Whatever else the tar reader reports (io.ErrUnexpectedEOF, ErrHeader,
	// a bad PAX record) is a property of the bytes we were given.
	return fmt.Errorf("%w: %s: %w", ErrBundleLayout, what, err)
}

// payloadReader is the reader fn sees: it hashes what fn reads so the
// bytes are hashed once, whoever consumes them.
type payloadReader struct {
	r    io.Reader
	h    hash.Hash
	br   *boundedReader
	name string
	buf  []byte
	err  error // returned by every later Read
	// streamErr is the error the bundle stream produced, if any.
	streamErr error
}

var errReaderDone = errors.New("payload reader used after the callback returned")

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.r.Read(b)
	p.h.Write(b[:n])
	if err != nil && !errors.Is(err, io.EOF) {
		p.err = p.br.classify(fmt.Sprintf("reading payload %q", p.name), err)
		p.streamErr = p.err
		return n, p.err
	}
	return n, err
}

// WriteTo lets io.Copy(dst, r) in fn use Read's 1 MiB buffer instead of
// allocating a 32 KiB one.
func (p *payloadReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		n, err := p.Read(p.buf)
		if n > 0 {
			m, werr := w.Write(p.buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m != n {
				return total, io.ErrShortWrite
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
