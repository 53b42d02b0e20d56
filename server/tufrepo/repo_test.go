package tufrepo

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/firmware/publish"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
	"gocloud.dev/blob"
)

type fixture struct {
	t       testing.TB
	dir     string
	bucket  *blob.Bucket // nil: the default targets/ folder
	keyDir  string
	repo    *Repo
	pub     signature.Signer
	srv     *httptest.Server
	clock   time.Time
	clockMu sync.Mutex
}

func signer(t testing.TB, dir, name string) signature.Signer {
	t.Helper()
	p := filepath.Join(dir, name+".key")
	if _, err := os.Stat(p); err != nil {
		if err := keys.Generate(p); err != nil {
			t.Fatal(err)
		}
	}
	s, err := keys.LoadSigner(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newFixture(t testing.TB, store targetStore) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: filepath.Join(t.TempDir(), "repo"), keyDir: t.TempDir(), clock: time.Now().UTC()}
	if store.open != nil {
		f.bucket = store.open(t)
	}
	f.pub = signer(t, f.keyDir, "publisher")
	pubKey, err := f.pub.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	err = Init(context.Background(), InitOptions{
		Dir: f.dir, RootSigners: []signature.Signer{signer(t, f.keyDir, "root")}, RootThreshold: 1,
		TargetsSigners: []signature.Signer{signer(t, f.keyDir, "targets")}, TargetsThreshold: 1,
		Snapshot: signer(t, f.keyDir, "snapshot"), Timestamp: signer(t, f.keyDir, "timestamp"),
		Delegations: []Delegation{{Role: "publisher", Paths: []string{"firmware/*/*"}, Keys: []crypto.PublicKey{pubKey}, Threshold: 1, Signers: []signature.Signer{f.pub}}},
		Now:         f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.reopen()
	f.srv = httptest.NewServer(f.repo.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) now() time.Time {
	f.clockMu.Lock()
	defer f.clockMu.Unlock()
	return f.clock
}

func (f *fixture) reopen() {
	f.t.Helper()
	opts := []Option{WithClock(f.now)}
	if f.bucket != nil {
		opts = append(opts, WithTargetsBucket(f.bucket))
	}
	r, err := Open(context.Background(), f.dir, signer(f.t, f.keyDir, "snapshot"), signer(f.t, f.keyDir, "timestamp"), opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	if f.repo != nil {
		_ = f.repo.Close()
	} else {
		f.t.Cleanup(func() { _ = f.repo.Close() })
	}
	f.repo = r
	if f.srv != nil {
		f.srv.Config.Handler = r.Handler()
	}
}

// bundle builds a bundle for model/version and returns its path.
func (f *fixture) bundle(model, version string) string {
	f.t.Helper()
	dir := f.t.TempDir()
	payload := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(payload, bytes.Repeat([]byte(model+version), 4096), 0o644); err != nil {
		f.t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle.tar")
	_, err := firmware.BuildFile(context.Background(), firmware.BuildOptions{
		Model: model, Version: version, Hardware: []string{"r1"}, Payloads: []firmware.PayloadFile{{Name: "rootfs.img", Path: payload}},
	}, out)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

type releaseMod struct {
	metaKey   signature.Signer // signs the role metadata (default publisher)
	bundleKey signature.Signer // signs the bundle (default publisher)
	expires   time.Duration
	path      string // target path override
	body      func([]byte) []byte
	version   int64  // metadata version override (0: keep)
	bundle    string // a bundle already built for model and version
	// raw, when set, are the bundle's bytes as they are (possibly invalid),
	// and manifest what the publisher's metadata claims for them.
	raw      []byte
	manifest firmware.Manifest
}

func (f *fixture) request(model, version string, mod releaseMod) PublishRequest {
	f.t.Helper()
	bpath := mod.bundle
	if bpath == "" && mod.raw == nil {
		bpath = f.bundle(model, version)
	}
	var data []byte
	var err error
	if mod.raw != nil {
		data = mod.raw
	} else if data, err = os.ReadFile(bpath); err != nil {
		f.t.Fatal(err)
	}
	if mod.bundleKey == nil {
		mod.bundleKey = f.pub
	}
	if mod.metaKey == nil {
		mod.metaKey = f.pub
	}
	sig, err := firmware.Sign(context.Background(), mod.bundleKey, bytes.NewReader(data))
	if err != nil {
		f.t.Fatal(err)
	}
	man := mod.manifest
	if mod.raw == nil {
		if man, err = firmware.Verify(context.Background(), bytes.NewReader(data), firmware.DefaultLimits()); err != nil {
			f.t.Fatal(err)
		}
	}
	target := "firmware/" + model + "/" + model + "-" + version + ".tar"
	if mod.path != "" {
		target = mod.path
	}
	role, raw, err := f.repo.Delegation(target)
	if err != nil {
		f.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	opts := publish.Options{Key: f.pub, Expires: mod.expires, Now: f.now}
	md, err := publish.Extend(opts, publish.Release{Role: role, Metadata: raw, Target: target, Manifest: man, Length: int64(len(data)), SHA256: sum[:], Signature: sig})
	if err != nil {
		f.t.Fatal(err)
	}
	if mod.metaKey != f.pub || mod.version != 0 {
		var zero metadata.Metadata[metadata.TargetsType]
		m, err := zero.FromBytes(md)
		if err != nil {
			f.t.Fatal(err)
		}
		if mod.version != 0 {
			m.Signed.Version = mod.version
		}
		m.ClearSignatures()
		if _, err := m.Sign(mod.metaKey); err != nil {
			f.t.Fatal(err)
		}
		if md, err = m.ToBytes(true); err != nil {
			f.t.Fatal(err)
		}
	}
	if mod.body != nil {
		data = mod.body(data)
	}
	return PublishRequest{Role: role, Metadata: md, Signature: sig, Bundle: bytes.NewReader(data)}
}

func (f *fixture) publish(model, version string) *PublishResult {
	f.t.Helper()
	res, err := f.repo.Publish(context.Background(), f.request(model, version, releaseMod{}))
	if err != nil {
		f.t.Fatalf("publish %s %s: %v", model, version, err)
	}
	return res
}

// tree hashes every file of the repository but staging.
func tree(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.HasPrefix(rel, stagingDir) || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s %x", rel, sha256.Sum256(b)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// state is what a publish may change: every file of the repository but
// staging, and every object of the targets bucket when it is not targets/.
func (f *fixture) state(t testing.TB) string {
	t.Helper()
	out := tree(t, f.dir)
	if f.bucket != nil {
		out += "\nbucket:\n" + bucketTree(t, f.bucket)
	}
	return out
}

// client is a fresh go-tuf client that starts from 1.root.json only.
func (f *fixture) client(refTime time.Time) *updater.Updater {
	f.t.Helper()
	root, err := f.repo.TrustedRoot()
	if err != nil {
		f.t.Fatal(err)
	}
	cfg, err := config.New(f.srv.URL+"/metadata", root)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.RemoteTargetsURL = f.srv.URL + "/targets"
	cfg.LocalMetadataDir = f.t.TempDir()
	cfg.LocalTargetsDir = f.t.TempDir()
	u, err := updater.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	u.UnsafeSetRefTime(refTime)
	if err := u.Refresh(); err != nil {
		f.t.Fatalf("go-tuf refresh: %v", err)
	}
	return u
}

func TestGoTUFClientReadsPublishedFirmware(t *testing.T) {
	forEachStore(t, testGoTUFClientReadsPublishedFirmware)
}

func testGoTUFClientReadsPublishedFirmware(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	f.publish("m1", "1.0.0")
	res := f.publish("m1", "1.1.0")
	f.publish("m2", "1.0.0")
	if res.Snapshot != 3 || res.Timestamp != 3 {
		t.Errorf("after two publishes snapshot/timestamp = %d/%d, want 3/3", res.Snapshot, res.Timestamp)
	}
	u := f.client(f.now())
	for _, p := range []string{"firmware/m1/m1-1.0.0.tar", "firmware/m1/m1-1.1.0.tar", "firmware/m2/m2-1.0.0.tar", "firmware/m1/m1-1.1.0.tar.sig"} {
		info, err := u.GetTargetInfo(p)
		if err != nil {
			t.Fatalf("GetTargetInfo(%s): %v", p, err)
		}
		if _, _, err := u.DownloadTarget(info, filepath.Join(t.TempDir(), "x"), ""); err != nil {
			t.Fatalf("DownloadTarget(%s): %v", p, err)
		}
	}
	if _, err := u.GetTargetInfo("firmware/m1/m1-9.9.9.tar"); err == nil {
		t.Fatal("unknown target found")
	}
	if f.bucket != nil {
		// Everything went to the bucket, nothing to targets/.
		if local := tree(t, filepath.Join(f.dir, targetsDir)); local != "" {
			t.Errorf("target files on the local disk with a bucket:\n%s", local)
		}
		if n := len(strings.Split(bucketTree(t, f.bucket), "\n")); n != 6 {
			t.Errorf("%d objects in the bucket, want 3 bundles and 3 signatures", n)
		}
	}
}

func TestPublishRejectsBadInputAndChangesNothing(t *testing.T) {
	forEachStore(t, testPublishRejectsBadInputAndChangesNothing)
}

func testPublishRejectsBadInputAndChangesNothing(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	f.publish("m1", "1.0.0")
	stranger := signer(t, t.TempDir(), "stranger")
	tests := []struct {
		name  string
		req   func() PublishRequest
		check string
	}{
		{"payload byte changed after signing", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{body: func(b []byte) []byte { b[len(b)/2] ^= 1; return b }})
		}, "bundle-digest"},
		{"truncated upload", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{body: func(b []byte) []byte { return b[:len(b)-100] }})
		}, "bundle-length"},
		{"oversized upload", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{body: func(b []byte) []byte { return append(b, make([]byte, 1000)...) }})
		}, "bundle-length"},
		{"metadata signed by an unpinned key", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{metaKey: stranger})
		}, "metadata-signature"},
		{"bundle signed by an unpinned key", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{bundleKey: stranger})
		}, "bundle-signature"},
		{"version already published", func() PublishRequest {
			r := f.request("m1", "1.0.0", releaseMod{path: "firmware/m1/again-1.0.0.tar"})
			return r
		}, "version"},
		{"metadata expired", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{expires: -time.Hour})
		}, "metadata-expiry"},
		{"stale metadata version", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{version: 2})
		}, "metadata-version"},
		{"target outside its model folder", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{path: "firmware/m2/m1-1.1.0.tar"})
		}, "custom"},
		{"unknown role", func() PublishRequest {
			r := f.request("m1", "1.1.0", releaseMod{})
			r.Role = "intruder"
			return r
		}, "role"},
		{"malformed manifest, correctly signed", func() PublishRequest {
			return f.request("m1", "1.1.0", releaseMod{raw: rawBundle(t, []byte(`{"schema":1,"model":`), "rootfs.img", []byte("x")), manifest: claim("m1", "1.1.0")})
		}, "bundle"},
		{"oversized manifest, correctly signed", func() PublishRequest {
			big := []byte(`{"schema":1,"model":"m1","version":"1.1.0","hardware":["r1"],"payloads":[],"pad":"` + strings.Repeat("p", 100<<10) + `"}`)
			return f.request("m1", "1.1.0", releaseMod{raw: rawBundle(t, big, "rootfs.img", []byte("x")), manifest: claim("m1", "1.1.0")})
		}, "bundle"},
		{"payload digest differs from the manifest", func() PublishRequest {
			sum := sha256.Sum256([]byte("A"))
			man := fmt.Sprintf(`{"schema":1,"model":"m1","version":"1.1.0","hardware":["r1"],"payloads":[{"name":"rootfs.img","size":1,"sha256":"%x"}],"created":"2026-01-01T00:00:00Z"}`, sum)
			return f.request("m1", "1.1.0", releaseMod{raw: rawBundle(t, []byte(man), "rootfs.img", []byte("B")), manifest: claim("m1", "1.1.0")})
		}, "bundle"},
		{"garbage metadata", func() PublishRequest {
			r := f.request("m1", "1.1.0", releaseMod{})
			r.Metadata = []byte(`{"signed": 1}`)
			return r
		}, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req()
			before := f.state(t)
			_, err := f.repo.Publish(context.Background(), req)
			var rej *RejectedError
			if !errors.As(err, &rej) {
				t.Fatalf("Publish error = %v, want a RejectedError", err)
			}
			if rej.Check != tt.check {
				t.Errorf("check = %q (%v), want %q", rej.Check, rej.Err, tt.check)
			}
			if after := f.state(t); after != before {
				t.Errorf("repository changed by a rejected publish:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	// And the repository still accepts a good publish.
	f.publish("m1", "1.1.0")
}

func TestConcurrentPublishesOfOneVersion(t *testing.T) {
	forEachStore(t, testConcurrentPublishesOfOneVersion)
}

func testConcurrentPublishesOfOneVersion(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	reqs := []PublishRequest{f.request("m1", "2.0.0", releaseMod{}), f.request("m1", "2.0.0", releaseMod{})}
	var wg sync.WaitGroup
	errs := make([]error, len(reqs))
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.repo.Publish(context.Background(), reqs[i])
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d of 2 concurrent publishes of one version succeeded (%v), want exactly 1", ok, errs)
	}
}

func TestOnlineMetadataIsResignedBeforeExpiry(t *testing.T) {
	forEachStore(t, testOnlineMetadataIsResignedBeforeExpiry)
}

func testOnlineMetadataIsResignedBeforeExpiry(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	f.publish("m1", "1.0.0")
	_, _, _, ts0 := f.repo.Versions()
	// 20 hours later the 1-day timestamp has used more than half its life.
	f.clockMu.Lock()
	f.clock = f.clock.Add(20 * time.Hour)
	f.clockMu.Unlock()
	did, err := f.repo.Maintain(context.Background())
	if err != nil || !did {
		t.Fatalf("Maintain = %v, %v; want a re-sign", did, err)
	}
	_, _, _, ts1 := f.repo.Versions()
	if ts1 != ts0+1 {
		t.Fatalf("timestamp version %d, want %d", ts1, ts0+1)
	}
	// A client whose clock is 30 hours on still trusts the repository.
	f.client(f.now().Add(10 * time.Hour))
	// Nothing more to do right away.
	if did, err := f.repo.Maintain(context.Background()); err != nil || did {
		t.Fatalf("second Maintain = %v, %v; want nothing", did, err)
	}
}

func TestReopenDropsLeftoversOfAnInterruptedPublish(t *testing.T) {
	forEachStore(t, testReopenDropsLeftoversOfAnInterruptedPublish)
}

func testReopenDropsLeftoversOfAnInterruptedPublish(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	res := f.publish("m1", "1.0.0")
	before := f.state(t)
	_, _, snap, _ := f.repo.Versions()
	// A crash after writing the new snapshot but before timestamp.json.
	orphan := filepath.Join(f.dir, metadataDir, metaName("snapshot", snap+1))
	if err := os.WriteFile(orphan, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of an upload into targets/: fileblob's
	// temporary file stays behind.
	var stranded string
	if f.bucket == nil {
		stranded = filepath.Join(f.dir, targetsDir, "firmware", "m1", res.SHA256+".m1-1.1.0.tar.18a2b3c4d5e6f708.tmp")
		if err := os.WriteFile(stranded, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.reopen()
	if _, err := os.Stat(orphan); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("orphan snapshot still there: %v", err)
	}
	if _, err := os.Stat(stranded); stranded != "" && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stranded upload still there: %v", err)
	}
	if after := f.state(t); after != before {
		t.Fatalf("reopen changed the visible repository")
	}
	f.publish("m1", "1.1.0")
	f.client(f.now())
}

func TestHandlerServesRangesAndConditionalGets(t *testing.T) {
	forEachStore(t, testHandlerServesRangesAndConditionalGets)
}

func testHandlerServesRangesAndConditionalGets(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	res := f.publish("m1", "1.0.0")
	url := f.srv.URL + "/targets/firmware/m1/" + res.SHA256 + ".m1-1.0.0.tar"
	resp, err := f.srv.Client().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || int64(len(body)) != res.Length || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("GET target: %d, %d bytes, cache %q", resp.StatusCode, len(body), resp.Header.Get("Cache-Control"))
	}
	etag := resp.Header.Get("ETag")
	req := httptest.NewRequest("GET", url, nil)
	req.RequestURI = ""
	req.Header.Set("Range", "bytes=100-")
	resp, err = f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(part, body[100:]) {
		t.Fatalf("range: status %d, %d bytes", resp.StatusCode, len(part))
	}
	req = httptest.NewRequest("GET", url, nil)
	req.RequestURI = ""
	req.Header.Set("If-None-Match", etag)
	resp, err = f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 304 {
		t.Fatalf("conditional GET: %d, want 304", resp.StatusCode)
	}
	for _, bad := range []string{"/metadata/../../etc/passwd", "/staging/x", "/metadata/", "/other"} {
		resp, err := f.srv.Client().Get(f.srv.URL + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", bad, resp.StatusCode)
		}
	}
}

// FuzzPublishMetadata: whatever role metadata a publisher uploads, a publish
// either succeeds or is rejected with the repository unchanged.
func FuzzPublishMetadata(f *testing.F) {
	fx := newFixture(f, targetStore{})
	good := fx.request("m1", "1.0.0", releaseMod{})
	f.Add(good.Metadata, []byte("1"))
	f.Add([]byte(`{"signed":{"_type":"targets","version":2},"signatures":[]}`), []byte("x"))
	before := fx.state(f)
	f.Fuzz(func(t *testing.T, md, body []byte) {
		_, err := fx.repo.Publish(context.Background(), PublishRequest{Role: "publisher", Metadata: md, Signature: []byte("sig"), Bundle: bytes.NewReader(body)})
		var rej *RejectedError
		if !errors.As(err, &rej) {
			t.Fatalf("Publish error = %v, want a RejectedError", err)
		}
		if fx.state(t) != before {
			t.Fatal("a rejected publish changed the repository")
		}
	})
}

func TestScopedPublishAndPush(t *testing.T) { forEachStore(t, testScopedPublishAndPush) }

func testScopedPublishAndPush(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	f.publish("m1", "1.0.0")
	f.publish("m2", "1.0.0")
	ctx := context.Background()
	req := f.request("m2", "2.0.0", releaseMod{})
	req.Models = []string{"m1"}
	before := f.state(t)
	_, err := f.repo.Publish(ctx, req)
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.Check != "scope" {
		t.Fatalf("publishing another model with a scoped token: %v", err)
	}
	// Revoking m2's firmware with a token scoped to m1.
	st := f.repo.current()
	b, _ := st.delegated["publisher"].ToBytes(false)
	var zero metadata.Metadata[metadata.TargetsType]
	m, _ := zero.FromBytes(b)
	delete(m.Signed.Targets, "firmware/m2/m2-1.0.0.tar")
	delete(m.Signed.Targets, "firmware/m2/m2-1.0.0.tar.sig")
	m.Signed.Version++
	m.ClearSignatures()
	if _, err := m.Sign(f.pub); err != nil {
		t.Fatal(err)
	}
	mb, _ := m.ToBytes(true)
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"publisher": mb}, Reason: "x", Models: []string{"m1"}})
	if !errors.As(err, &rej) || rej.Check != "scope" {
		t.Fatalf("revoking another model with a scoped token: %v", err)
	}
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": []byte("{}")}, Models: []string{"m1"}})
	if !errors.As(err, &rej) || rej.Check != "scope" {
		t.Fatalf("pushing root with a scoped token: %v", err)
	}
	if f.state(t) != before {
		t.Fatal("a refused scoped request changed the repository")
	}
	// In scope, it works.
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"publisher": mb}, Reason: "x", Models: []string{"m2"}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTimestampConditionalGet(t *testing.T) {
	f := newFixture(t, targetStore{})
	get := func(method, inm string) (int, string, int) {
		req, _ := http.NewRequest(method, f.srv.URL+"/metadata/timestamp.json", nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("ETag"), len(b)
	}
	code, etag, n := get("GET", "")
	if code != 200 || etag == "" || n == 0 {
		t.Fatalf("GET: %d %q %d bytes", code, etag, n)
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		if code, _, n := get("GET", inm); code != 304 || n != 0 {
			t.Errorf("If-None-Match %s: %d with %d bytes, want 304", inm, code, n)
		}
	}
	if code, _, _ := get("GET", `"ts-0"`); code != 200 {
		t.Errorf("stale ETag: %d, want 200", code)
	}
	if code, _, n := get("HEAD", ""); code != 200 || n != 0 {
		t.Errorf("HEAD: %d with %d bytes", code, n)
	}
	// After a publish the ETag changes.
	f.publish("m1", "1.0.0")
	if code, etag2, _ := get("GET", etag); code != 200 || etag2 == etag {
		t.Errorf("after a publish: %d, ETag %s (was %s)", code, etag2, etag)
	}
}

// rawBundle writes a tar stream of manifest.json and one payload, whatever
// they hold.
func rawBundle(t testing.TB, manifest []byte, name string, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {name, payload}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// claim is what a publisher's metadata says of a bundle.
func claim(model, version string) firmware.Manifest {
	return firmware.Manifest{Schema: firmware.ManifestSchema, Model: model, Version: version, Hardware: []string{"r1"}}
}

// TestExpiredOnlineMetadataResignedOnStart: a server that was down past the
// timestamp's and snapshot's expiry re-signs both when it starts, and a
// fresh client trusts the repository again.
func TestExpiredOnlineMetadataResignedOnStart(t *testing.T) {
	f := newFixture(t, targetStore{})
	f.publish("m1", "1.0.0")
	_, _, snap0, ts0 := f.repo.Versions()
	f.clockMu.Lock()
	f.clock = f.clock.Add(8 * 24 * time.Hour) // both 1-day timestamp and 7-day snapshot expired
	f.clockMu.Unlock()
	f.reopen()
	_, _, snap1, ts1 := f.repo.Versions()
	if snap1 != snap0+1 || ts1 != ts0+1 {
		t.Fatalf("after the restart snapshot/timestamp = v%d/v%d, want v%d/v%d", snap1, ts1, snap0+1, ts0+1)
	}
	u := f.client(f.now())
	if _, err := u.GetTargetInfo("firmware/m1/m1-1.0.0.tar"); err != nil {
		t.Fatal(err)
	}
}
