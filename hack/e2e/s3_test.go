package e2e

import (
	"bytes"
	"io/fs"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// TestUpdateStoryThroughS3: `dialtone server --targets-bucket s3://…` keeps
// the firmware in an S3-compatible server (gofakes3, started here on
// 127.0.0.1: the server binary reaches it through the AWS SDK over HTTP as
// it would MinIO or AWS), and a phone installs it, also after a restart.
// The flag is given as DIALTONE_TARGETS_BUCKET, which the server reads like
// any flag.
func TestUpdateStoryThroughS3(t *testing.T) {
	buildBinaries(t)
	backend := s3mem.New()
	s3 := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(s3.Close)
	const bucket = "firmware"
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIALTONE_TARGETS_BUCKET", "s3://"+bucket+"?endpoint="+url.QueryEscape(s3.URL)+"&use_path_style=true&region=us-east-1&disable_https=true")
	t.Setenv("AWS_ACCESS_KEY_ID", "dialtone-e2e")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "dialtone-e2e-secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	s := systest.StartServer(t, bins)
	bundle, rootfs := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, bundle); r.Code != 0 {
		t.Fatalf("publish exited %d: %s", r.Code, r.Stderr)
	}
	objs, err := backend.ListBucket(bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs.Contents {
		keys = append(keys, o.Key)
	}
	// <sha>.NAME.tar and <sha>.NAME.tar.sig, in either order.
	if len(keys) != 2 || (strings.HasSuffix(keys[0], ".tar.sig") == strings.HasSuffix(keys[1], ".tar.sig")) ||
		!strings.HasPrefix(keys[0], "firmware/"+model+"/") || !strings.HasPrefix(keys[1], "firmware/"+model+"/") {
		t.Fatalf("objects in the bucket: %v, want the bundle and its signature", keys)
	}
	_ = filepath.WalkDir(filepath.Join(s.DataDir, "tuf", "targets"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("target file on the server's disk with a bucket: %s", p)
		}
		return nil
	})

	check := func(p *systest.Phone) {
		t.Helper()
		if r := p.Once(t, s, model, hw); r.Code != 0 {
			t.Fatalf("%s: agent --once exited %d, want 0 (installed):\n%s", p.ID, r.Code, r.Stderr)
		}
		got, err := os.ReadFile(filepath.Join(p.StateDir, "slots", "b", "rootfs.img"))
		if err != nil || !bytes.Equal(got, rootfs) {
			t.Fatalf("%s: slot b rootfs differs from the published payload (err %v)", p.ID, err)
		}
	}
	check(systest.Provision(t, s, "phone-s3-1", model))
	s = s.Restart(t)
	check(systest.Provision(t, s, "phone-s3-2", model))
}
