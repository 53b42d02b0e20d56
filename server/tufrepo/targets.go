package tufrepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/s3blob" // registers s3:// for OpenTargetsBucket
	"gocloud.dev/gcerrors"
)

// Target files (bundles and their signatures, targets/<dir>/<sha256>.<name>)
// live in a gocloud.dev/blob bucket, under the same key as their path below
// targets/. By default that bucket is the repository's own targets/ folder
// (fileblob), so a repository keeps its on-disk layout; WithTargetsBucket
// puts them anywhere gocloud reaches, an S3-compatible server for instance.
// Metadata, small and rewritten on every publish, stays on the local disk.
//
// Objects are immutable: a key names the SHA-256 of its content. A publish
// stages and checks the upload on the local disk first and copies it into
// the bucket only when every check has passed, before any metadata refers
// to it; a publish that dies between the two leaves an object that no
// metadata references. Such objects are unreachable through TUF and are
// left in the bucket (a later publish of the same file rewrites the same
// bytes under the same key); an operator may delete any object that the
// current metadata does not name.

const immutableCache = "public, max-age=31536000, immutable"

// WithTargetsBucket stores and serves target files through b instead of the
// repository's targets/ folder. The caller owns b and closes it after the
// Repo is no longer used. The bucket must already hold every target file
// the current metadata names (copy targets/ into it when moving an existing
// repository: the keys are the paths below targets/).
func WithTargetsBucket(b *blob.Bucket) Option { return func(r *Repo) { r.bucket = b } }

// OpenTargetsBucket opens a bucket for WithTargetsBucket from a gocloud.dev
// URL. The file and s3 drivers are linked in:
//
//	file:///srv/dialtone/targets?create_dir=true&no_tmp_dir=true&metadata=skip
//	s3://bucket?region=eu-west-1
//	s3://bucket?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1&disable_https=true
//
// For s3, credentials come from the AWS SDK's usual sources (AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, shared files, instance roles). Query
// parameters besides those of s3blob (use_path_style, disable_https, ssetype,
// kmskeyid, accelerate) and of gocloud.dev/aws (region, endpoint, profile,
// anonymous, hostname_immutable, request_checksum_calculation, ...) are
// refused; prefix=DIR/ keeps the targets under a folder of the bucket. For
// file, no_tmp_dir=true keeps the temporary files of an upload in the
// bucket's folder, so that the final rename stays on one file system. An
// S3-compatible server that refuses the SDK's default checksum trailers
// takes request_checksum_calculation=when_required (gofakes3 and moto
// need nothing).
func OpenTargetsBucket(ctx context.Context, url string) (*blob.Bucket, error) {
	b, err := blob.OpenBucket(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("opening targets bucket: %w", err)
	}
	return b, nil
}

// openTargets opens the default bucket, targets/ through fileblob, unless
// an option gave one, and checks that the bucket answers.
func (r *Repo) openTargets(ctx context.Context) error {
	if r.bucket != nil {
		ok, err := r.bucket.IsAccessible(ctx)
		if err != nil {
			return fmt.Errorf("opening repository: targets bucket: %w", err)
		}
		if !ok {
			return errors.New("opening repository: the targets bucket does not exist or is not accessible")
		}
		return nil
	}
	dir := filepath.Join(r.dir, targetsDir)
	b, err := fileblob.OpenBucket(dir, &fileblob.Options{
		CreateDir: true, DirFileMode: 0o755,
		// Temporary files next to their destination: the rename that
		// makes an object appear stays within one file system.
		NoTempDir: true,
		// No .attrs sidecars: targets/ holds the target files only.
		Metadata: fileblob.MetadataDontWrite,
	})
	if err != nil {
		return fmt.Errorf("opening repository: targets: %w", err)
	}
	r.bucket, r.ownBucket, r.localTargets = b, true, dir
	return nil
}

// Close releases the targets bucket when the Repo opened it itself. A
// bucket given with WithTargetsBucket stays open.
func (r *Repo) Close() error {
	if r.ownBucket && r.bucket != nil {
		return r.bucket.Close()
	}
	return nil
}

// putTarget streams src into the bucket under key. The object appears
// whole or not at all: fileblob renames a complete temporary file, S3 makes
// an object visible when its upload completes, and an error cancels the
// upload. For fileblob the data is fsynced before the rename, and for the
// default bucket the folder after it, so that metadata written next never
// names a file a crash could lose. What is sent is hashed again on the way:
// unless it is length bytes with SHA-256 sum, the upload is cancelled, so
// the bucket only ever receives the bytes the checks passed.
func (r *Repo) putTarget(ctx context.Context, key string, src io.Reader, length int64, sum []byte) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var f *os.File
	w, err := r.bucket.NewWriter(wctx, key, &blob.WriterOptions{
		ContentType:  "application/octet-stream",
		CacheControl: immutableCache,
		// Multipart uploads (s3) hold a few parts in memory whatever the
		// size of the bundle: the SDK's transfer manager reads the first
		// 16 MiB to choose between one PUT and a multipart upload, then
		// keeps MaxConcurrency+1 parts of BufferSize (5 MiB, S3's least).
		BufferSize:     5 << 20,
		MaxConcurrency: 2,
		BeforeWrite: func(as func(any) bool) error {
			as(&f) // fileblob's temporary file; false for other drivers
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("publish: storing %s: %w", key, err)
	}
	abort := func(err error) error {
		cancel()
		_ = w.Close()
		return fmt.Errorf("publish: storing %s: %w", key, err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(w, io.TeeReader(io.LimitReader(src, length+1), h), make([]byte, 1<<20))
	if err != nil {
		return abort(err)
	}
	if n != length || !bytes.Equal(h.Sum(nil), sum) {
		return abort(errors.New("the staged file changed after it was checked"))
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return abort(err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("publish: storing %s: %w", key, err)
	}
	if r.localTargets != "" {
		if err := atomicfile.SyncDir(filepath.Dir(filepath.Join(r.localTargets, filepath.FromSlash(key)))); err != nil {
			return err
		}
	}
	return nil
}

// fileblob names its temporary files <path>.<hex nanoseconds>.tmp.
var strandedTempRe = regexp.MustCompile(`\.[0-9a-f]+\.tmp$`)

// cleanStrandedTemp removes the temporary files that fileblob leaves in the
// default targets/ folder when the server dies during an upload. A file the
// current metadata names is never touched, whatever its name.
func (r *Repo) cleanStrandedTemp(st *state) error {
	if r.localTargets == "" {
		return nil
	}
	keep := map[string]bool{}
	addAll := func(m *metadata.Metadata[metadata.TargetsType]) {
		for p, tf := range m.Signed.Targets {
			if h, ok := tf.Hashes["sha256"]; ok {
				keep[targetFileName(p, h.String())] = true
			}
		}
	}
	addAll(st.targets)
	for _, m := range st.delegated {
		addAll(m)
	}
	return filepath.WalkDir(r.localTargets, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() || !strandedTempRe.MatchString(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(r.localTargets, p)
		if err != nil || keep[filepath.ToSlash(rel)] {
			return err
		}
		r.log.Warn("removing a temporary file left by an interrupted publish", "file", rel)
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("removing stranded upload: %w", err)
		}
		return nil
	})
}

// targetNameRe is the base name of every target file: <sha256>.<name>.
var targetNameRe = regexp.MustCompile(`^([0-9a-f]{64})\.[^/]+$`)

// targetETag derives a strong ETag from the SHA-256 that names a target
// file, or reports that rel names no target file.
func targetETag(rel string) (string, bool) {
	m := targetNameRe.FindStringSubmatch(rel[strings.LastIndexByte(rel, '/')+1:])
	if m == nil {
		return "", false
	}
	return `"` + m[1] + `"`, true
}

// serveLocalTarget is the fast path of the default bucket: the file itself,
// through http.ServeContent (and sendfile).
func (r *Repo) serveLocalTarget(w http.ResponseWriter, req *http.Request, rel, etag string) {
	serveFile(w, req, filepath.Join(r.localTargets, filepath.FromSlash(rel)), contentType(rel), func(os.FileInfo) string { return etag })
}

func contentType(rel string) string {
	if strings.HasSuffix(rel, ".json") {
		return "application/json"
	}
	return "application/octet-stream"
}

// serveBucketTarget serves an object of the bucket with the semantics
// http.ServeContent gives a file: GET and HEAD, Content-Length, a strong
// ETag, If-None-Match (304), If-Range, and one byte range (206, or 416 when
// it starts past the end). A request for several ranges gets the whole
// object. The object is streamed, never held in memory. A request costs
// the bucket one Attributes call (HEAD) and, for a body, one ranged read.
func (r *Repo) serveBucketTarget(w http.ResponseWriter, req *http.Request, key, etag string) {
	ctx := req.Context()
	attrs, err := r.bucket.Attributes(ctx, key)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			http.NotFound(w, req)
			return
		}
		r.log.Error("reading target attributes", "key", key, "err", err)
		http.Error(w, "target storage unavailable", http.StatusBadGateway)
		return
	}
	size := attrs.Size
	h := w.Header()
	h.Set("Cache-Control", immutableCache)
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	if !attrs.ModTime.IsZero() {
		h.Set("Last-Modified", attrs.ModTime.UTC().Format(http.TimeFormat))
	}
	if inm := req.Header.Get("If-None-Match"); inm != "" && etagListMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", contentType(key))
	offset, length, status := int64(0), size, http.StatusOK
	if rng := req.Header.Get("Range"); rng != "" && ifRangeAllows(req.Header.Get("If-Range"), etag, attrs.ModTime) {
		start, n, ok, satisfiable := parseSingleRange(rng, size)
		switch {
		case ok && !satisfiable:
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			http.Error(w, "requested range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
			return
		case ok:
			offset, length, status = start, n, http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+n-1, size))
		}
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if req.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	rd, err := r.bucket.NewRangeReader(ctx, key, offset, length, nil)
	if err != nil {
		h.Del("Content-Length")
		h.Del("Content-Range")
		if gcerrors.Code(err) == gcerrors.NotFound {
			http.NotFound(w, req)
			return
		}
		r.log.Error("reading target", "key", key, "err", err)
		http.Error(w, "target storage unavailable", http.StatusBadGateway)
		return
	}
	defer rd.Close()
	w.WriteHeader(status)
	// The status is sent: on a failure the connection closes short of
	// Content-Length, which a client sees as a truncated body.
	if _, err := io.CopyBuffer(w, rd, make([]byte, 256<<10)); err != nil && ctx.Err() == nil {
		r.log.Warn("streaming target", "key", key, "err", err)
	}
}

// etagListMatches applies If-None-Match's weak comparison to one strong
// ETag.
func etagListMatches(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// ifRangeAllows says whether a Range request stands under its If-Range:
// an ETag must match strongly, a date must equal Last-Modified.
func ifRangeAllows(ir, etag string, mod time.Time) bool {
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) {
		return ir == etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && !mod.IsZero() && mod.UTC().Truncate(time.Second).Equal(t)
}

// parseSingleRange reads "bytes=a-b", "bytes=a-" or "bytes=-n". ok is false
// for anything else (several ranges, other units, bad syntax): the request
// is then answered whole. satisfiable is false when the range starts past
// the end.
func parseSingleRange(s string, size int64) (start, length int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if a == "" { // suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		n = min(n, size)
		return size - n, n, true, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return 0, 0, false, false
	}
	last := size - 1
	if b != "" {
		if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
			return 0, 0, false, false
		}
		last = min(last, size-1)
	}
	if first >= size {
		return 0, 0, true, false
	}
	return first, last - first + 1, true, true
}
