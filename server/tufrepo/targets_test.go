package tufrepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"gocloud.dev/blob"
)

// targetStore opens the bucket a fixture keeps its target files in; open
// nil is the repository's default targets/ folder.
type targetStore struct {
	name string
	open func(t testing.TB) *blob.Bucket
}

var (
	// The default folder, served by the fast path (http.ServeContent on
	// the file), and an S3-compatible server.
	defaultStores = []targetStore{{"file", nil}, {"s3", openS3Bucket}}
	// And a fileblob bucket given as an option: the bucket code path over
	// the file driver.
	allStores = append(defaultStores, targetStore{"fileblob-bucket", openFileBucket})
)

func forEachStore(t *testing.T, fn func(*testing.T, targetStore)) { runStores(t, defaultStores, fn) }

func runStores(t *testing.T, stores []targetStore, fn func(*testing.T, targetStore)) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) { fn(t, s) })
	}
}

func openFileBucket(t testing.TB) *blob.Bucket {
	t.Helper()
	u := "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true&metadata=skip"
	b, err := OpenTargetsBucket(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// s3Server is an S3-compatible server on 127.0.0.1: gofakes3 with its
// in-memory backend, which speaks the S3 REST protocol (SigV4 requests,
// path-style buckets, multipart uploads, ranged GETs) over real HTTP, so
// that the s3blob driver and the AWS SDK run exactly as against AWS.
type s3Server struct {
	URL     string
	backend *s3mem.Backend
	// failPut, when it returns true for a request, refuses that upload
	// with AccessDenied (not retried by the SDK).
	failPut atomic.Pointer[func(*http.Request) bool]
	// parts counts the parts of multipart uploads received.
	parts atomic.Int64
}

// startS3 starts the server, or fails the test: a test that needs it never
// skips.
func startS3(t testing.TB) *s3Server {
	t.Helper()
	s := &s3Server{backend: s3mem.New()}
	faker := gofakes3.New(s.backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	inner := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := s.failPut.Load(); f != nil && r.Method == http.MethodPut && (*f)(r) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>`)
			return
		}
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" {
			s.parts.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	// The AWS SDK reads its credentials and settings from the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", "dialtone-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "dialtone-test-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return s
}

// bucketURL creates a bucket and returns the URL that `dialtone server
// --targets-bucket` would be given for it.
func (s *s3Server) bucketURL(t testing.TB, name string) string {
	t.Helper()
	if err := s.backend.CreateBucket(name); err != nil {
		t.Fatal(err)
	}
	return "s3://" + name + "?endpoint=" + url.QueryEscape(s.URL) + "&use_path_style=true&region=us-east-1&disable_https=true"
}

func (s *s3Server) open(t testing.TB, name string) *blob.Bucket {
	t.Helper()
	b, err := OpenTargetsBucket(context.Background(), s.bucketURL(t, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func openS3Bucket(t testing.TB) *blob.Bucket { return startS3(t).open(t, "dialtone-targets") }

// bucketTree hashes every object of a bucket.
func bucketTree(t testing.TB, b *blob.Bucket) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	it := b.List(nil)
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := b.ReadAll(ctx, obj.Key)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("%s %x", obj.Key, sha256.Sum256(data)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func get(t *testing.T, method, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return resp, body
}

// TestTargetServing: whichever bucket holds a target file, the handler
// answers as http.ServeContent does for a file: 200 with Content-Length,
// an ETag from the file's SHA-256, 304, 206 with Content-Range, 416, HEAD,
// If-Range, immutable caching and 404s.
func TestTargetServing(t *testing.T) {
	runStores(t, allStores, func(t *testing.T, store targetStore) {
		f := newFixture(t, store)
		res := f.publish("m1", "1.0.0")
		u := f.srv.URL + "/targets/firmware/m1/" + res.SHA256 + ".m1-1.0.0.tar"
		etag := `"` + res.SHA256 + `"`

		resp, full := get(t, "GET", u)
		if resp.StatusCode != 200 || int64(len(full)) != res.Length || resp.ContentLength != res.Length {
			t.Fatalf("GET: %d, %d bytes, Content-Length %d, want 200 and %d", resp.StatusCode, len(full), resp.ContentLength, res.Length)
		}
		if sum := sha256.Sum256(full); fmt.Sprintf("%x", sum) != res.SHA256 {
			t.Fatal("GET: body does not hash to the published SHA-256")
		}
		for k, want := range map[string]string{"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable", "Content-Type": "application/octet-stream"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("GET: %s = %q, want %q", k, got, want)
			}
		}

		resp, body := get(t, "HEAD", u)
		if resp.StatusCode != 200 || resp.ContentLength != res.Length || len(body) != 0 || resp.Header.Get("ETag") != etag {
			t.Errorf("HEAD: %d, Content-Length %d, %d body bytes, ETag %q", resp.StatusCode, resp.ContentLength, len(body), resp.Header.Get("ETag"))
		}

		for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
			resp, body = get(t, "GET", u, "If-None-Match", inm)
			if resp.StatusCode != 304 || len(body) != 0 {
				t.Errorf("If-None-Match %s: %d with %d bytes, want 304", inm, resp.StatusCode, len(body))
			}
		}
		if resp, _ = get(t, "GET", u, "If-None-Match", `"other"`); resp.StatusCode != 200 {
			t.Errorf("If-None-Match of another ETag: %d, want 200", resp.StatusCode)
		}

		n := res.Length
		ranges := []struct {
			spec       string
			start, end int64 // inclusive
		}{
			{"bytes=100-", 100, n - 1},
			{"bytes=10-19", 10, 19},
			{"bytes=0-0", 0, 0},
			{fmt.Sprintf("bytes=5-%d", n+1000), 5, n - 1},
			{"bytes=-7", n - 7, n - 1},
		}
		for _, rg := range ranges {
			resp, body = get(t, "GET", u, "Range", rg.spec)
			wantCR := fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.end, n)
			if resp.StatusCode != 206 || !bytes.Equal(body, full[rg.start:rg.end+1]) || resp.Header.Get("Content-Range") != wantCR || resp.ContentLength != rg.end-rg.start+1 {
				t.Errorf("Range %s: %d, %d bytes, Content-Range %q; want 206, %d bytes, %q", rg.spec, resp.StatusCode, len(body), resp.Header.Get("Content-Range"), rg.end-rg.start+1, wantCR)
			}
		}
		resp, _ = get(t, "HEAD", u, "Range", "bytes=10-19")
		if resp.StatusCode != 206 || resp.ContentLength != 10 {
			t.Errorf("HEAD with Range: %d, Content-Length %d; want 206, 10", resp.StatusCode, resp.ContentLength)
		}
		resp, _ = get(t, "GET", u, "Range", fmt.Sprintf("bytes=%d-", n))
		if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", n) {
			t.Errorf("Range past the end: %d, Content-Range %q; want 416", resp.StatusCode, resp.Header.Get("Content-Range"))
		}
		resp, body = get(t, "GET", u, "Range", "bytes=10-19", "If-Range", etag)
		if resp.StatusCode != 206 || len(body) != 10 {
			t.Errorf("If-Range with the ETag: %d, %d bytes; want 206", resp.StatusCode, len(body))
		}
		resp, body = get(t, "GET", u, "Range", "bytes=10-19", "If-Range", `"other"`)
		if resp.StatusCode != 200 || int64(len(body)) != n {
			t.Errorf("If-Range with another ETag: %d, %d bytes; want the whole file", resp.StatusCode, len(body))
		}

		sigURL := f.srv.URL + "/targets/firmware/m1/"
		info, err := f.client(f.now()).GetTargetInfo("firmware/m1/m1-1.0.0.tar.sig")
		if err != nil {
			t.Fatal(err)
		}
		sigURL += fmt.Sprintf("%x.m1-1.0.0.tar.sig", []byte(info.Hashes["sha256"]))
		if resp, body = get(t, "GET", sigURL); resp.StatusCode != 200 || int64(len(body)) != info.Length {
			t.Errorf("GET signature: %d, %d bytes", resp.StatusCode, len(body))
		}

		missing := []string{
			"/targets/firmware/m1/" + strings.Repeat("0", 64) + ".m1-1.0.0.tar", // well formed, absent
			"/targets/firmware/m1/m1-1.0.0.tar",                                 // no hash prefix
			"/targets/firmware/m1/" + res.SHA256[:63] + ".m1-1.0.0.tar",
			"/targets/firmware/m1",
			"/targets/",
			"/targets/firmware/../metadata/1.root.json",
		}
		for _, p := range missing {
			if resp, _ = get(t, "GET", f.srv.URL+p); resp.StatusCode != 404 {
				t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
			}
		}
		if resp, _ = get(t, "POST", u); resp.StatusCode != 405 {
			t.Errorf("POST: %d, want 405", resp.StatusCode)
		}
	})
}

// TestFailedUploadLeavesNothingReferenced: when the bucket refuses the
// bundle, the publish fails, no metadata changes and the fresh client sees
// the previous state. The signature, uploaded first, stays as an object
// that nothing references, and the same publish succeeds once the bucket
// accepts it again (rewriting that object).
func TestFailedUploadLeavesNothingReferenced(t *testing.T) {
	s3 := startS3(t)
	f := newFixture(t, targetStore{"s3", func(t testing.TB) *blob.Bucket { return s3.open(t, "dialtone-targets") }})
	f.publish("m1", "1.0.0")
	beforeDir := tree(t, f.dir)
	beforeBucket := bucketTree(t, f.bucket)
	_, _, snap, ts := f.repo.Versions()

	refuseBundles := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, ".tar") }
	s3.failPut.Store(&refuseBundles)
	req := f.request("m1", "1.1.0", releaseMod{})
	md, sig := req.Metadata, req.Signature
	data, err := io.ReadAll(req.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.repo.Publish(context.Background(), PublishRequest{Role: req.Role, Metadata: md, Signature: sig, Bundle: bytes.NewReader(data)})
	var rej *RejectedError
	if err == nil || errors.As(err, &rej) {
		t.Fatalf("Publish with the bucket refusing the bundle: %v, want a storage error", err)
	}
	if _, _, s, tt := f.repo.Versions(); s != snap || tt != ts {
		t.Fatalf("versions moved to %d/%d after a failed upload", s, tt)
	}
	if got := tree(t, f.dir); got != beforeDir {
		t.Fatalf("a failed upload changed the metadata:\nbefore:\n%s\nafter:\n%s", beforeDir, got)
	}
	afterBucket := bucketTree(t, f.bucket)
	if !strings.Contains(afterBucket, ".m1-1.1.0.tar.sig ") {
		t.Errorf("the signature, uploaded before the refused bundle, is not in the bucket:\n%s", afterBucket)
	}
	for _, line := range strings.Split(afterBucket, "\n") {
		if !strings.Contains(beforeBucket, line) && !strings.HasSuffix(strings.Fields(line)[0], ".m1-1.1.0.tar.sig") {
			t.Errorf("unexpected new object after a failed upload: %s", line)
		}
	}
	// A restart keeps serving the previous state; the orphan stays.
	f.reopen()
	u := f.client(f.now())
	if _, err := u.GetTargetInfo("firmware/m1/m1-1.1.0.tar"); err == nil {
		t.Fatal("the refused bundle is listed")
	}
	if got := bucketTree(t, f.bucket); got != afterBucket {
		t.Fatalf("reopen changed the bucket")
	}

	s3.failPut.Store(nil)
	if _, err := f.repo.Publish(context.Background(), PublishRequest{Role: req.Role, Metadata: md, Signature: sig, Bundle: bytes.NewReader(data)}); err != nil {
		t.Fatalf("publishing again: %v", err)
	}
	u = f.client(f.now())
	for _, p := range []string{"firmware/m1/m1-1.0.0.tar", "firmware/m1/m1-1.1.0.tar", "firmware/m1/m1-1.1.0.tar.sig"} {
		info, err := u.GetTargetInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := u.DownloadTarget(info, filepath.Join(t.TempDir(), "x"), ""); err != nil {
			t.Fatalf("DownloadTarget(%s): %v", p, err)
		}
	}
}

// TestLargeBundleThroughS3: a bundle bigger than one upload part goes up as
// a multipart upload and comes back whole and in ranges.
func TestLargeBundleThroughS3(t *testing.T) {
	s3 := startS3(t)
	f := newFixture(t, targetStore{"s3", func(t testing.TB) *blob.Bucket { return s3.open(t, "dialtone-targets") }})
	dir := t.TempDir()
	body := make([]byte, 17<<20+123) // past the SDK's 16 MiB multipart threshold
	for i := range body {
		body[i] = byte(i*7 + i>>9)
	}
	bundle := filepath.Join(dir, "b.tar")
	if err := os.WriteFile(filepath.Join(dir, "rootfs.img"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	req := f.requestFromPayload("m1", "1.0.0", filepath.Join(dir, "rootfs.img"), bundle)
	res, err := f.repo.Publish(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	const partSize = 5 << 20 // putTarget's BufferSize
	if n, want := s3.parts.Load(), (res.Length+partSize-1)/partSize; n != want {
		t.Errorf("%d upload parts, want %d of at most 5 MiB", n, want)
	}
	u := f.srv.URL + "/targets/firmware/m1/" + res.SHA256 + ".m1-1.0.0.tar"
	resp, got := get(t, "GET", u)
	if resp.StatusCode != 200 || fmt.Sprintf("%x", sha256.Sum256(got)) != res.SHA256 {
		t.Fatalf("GET: %d, %d bytes, want the published bundle", resp.StatusCode, len(got))
	}
	start := int64(9<<20 - 5)
	resp, part := get(t, "GET", u, "Range", fmt.Sprintf("bytes=%d-", start))
	if resp.StatusCode != 206 || !bytes.Equal(part, got[start:]) {
		t.Fatalf("Range across parts: %d, %d bytes", resp.StatusCode, len(part))
	}
}

func TestOpenRefusesAMissingBucket(t *testing.T) {
	f := newFixture(t, targetStore{})
	s3 := startS3(t)
	u := s3.bucketURL(t, "exists")
	b, err := OpenTargetsBucket(context.Background(), strings.Replace(u, "s3://exists", "s3://absent", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = Open(context.Background(), f.dir, signer(t, f.keyDir, "snapshot"), signer(t, f.keyDir, "timestamp"), WithTargetsBucket(b))
	if err == nil {
		t.Fatal("Open with a bucket that does not exist succeeded")
	}
	if _, err := OpenTargetsBucket(context.Background(), u+"&bogus=1"); err == nil {
		t.Fatal("an unknown query parameter was accepted")
	}
}

func TestParseSingleRange(t *testing.T) {
	const size = 100
	tests := []struct {
		in              string
		start, n        int64
		ok, satisfiable bool
	}{
		{"bytes=0-99", 0, 100, true, true},
		{"bytes=0-", 0, 100, true, true},
		{"bytes=10-20", 10, 11, true, true},
		{"bytes=90-200", 90, 10, true, true},
		{"bytes=-10", 90, 10, true, true},
		{"bytes=-1000", 0, 100, true, true},
		{"bytes=100-", 0, 0, true, false},
		{"bytes=-0", 0, 0, true, false},
		{"bytes=20-10", 0, 0, false, false},
		{"bytes=0-1,5-6", 0, 0, false, false},
		{"bytes=a-", 0, 0, false, false},
		{"bytes=-", 0, 0, false, false},
		{"items=0-1", 0, 0, false, false},
		{"bytes=5", 0, 0, false, false},
	}
	for _, tt := range tests {
		start, n, ok, sat := parseSingleRange(tt.in, size)
		if start != tt.start || n != tt.n || ok != tt.ok || sat != tt.satisfiable {
			t.Errorf("parseSingleRange(%q) = %d, %d, %v, %v; want %d, %d, %v, %v", tt.in, start, n, ok, sat, tt.start, tt.n, tt.ok, tt.satisfiable)
		}
	}
}

// requestFromPayload is f.request for a bundle built around one payload
// file, written to out.
func (f *fixture) requestFromPayload(model, version, payload, out string) PublishRequest {
	f.t.Helper()
	_, err := firmware.BuildFile(context.Background(), firmware.BuildOptions{
		Model: model, Version: version, Hardware: []string{"r1"}, Payloads: []firmware.PayloadFile{{Name: "rootfs.img", Path: payload}},
	}, out)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.request(model, version, releaseMod{bundle: out})
}
