package floor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/google/go-tpm/tpm2"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Version
		ok, err bool
	}{
		{in: "1.2.3", want: Version{1, 2, 3}, ok: true},
		{in: "0.0.0", want: Version{}, ok: true},
		{in: "65535.16777215.16777215", want: Version{65535, 16777215, 16777215}, ok: true},
		{in: "1.2.3+build.7", want: Version{1, 2, 3}, ok: true},
		{in: "1.3.0-rc1"},
		{in: "65536.0.0", err: true},
		{in: "1.16777216.0", err: true},
		{in: "1.2", err: true},
		{in: "v1.2.3", err: true},
		{in: "", err: true},
		{in: "01.2.3", err: true},
	} {
		v, ok, err := Parse(tc.in)
		if (err != nil) != tc.err || ok != tc.ok || v != tc.want {
			t.Errorf("Parse(%q) = %v, %v, %v", tc.in, v, ok, err)
		}
		if err != nil && !errors.Is(err, ErrVersion) {
			t.Errorf("Parse(%q) error %v is not ErrVersion", tc.in, err)
		}
		if ok && decode(encode(v)) != v {
			t.Errorf("encoding of %v does not round-trip", v)
		}
	}
	if !(Version{1, 2, 3}).Less(Version{1, 10, 0}) || (Version{2, 0, 0}).Less(Version{1, 99, 99}) {
		t.Error("Less orders wrongly")
	}
}

type store interface {
	Get(context.Context) (Version, error)
	Raise(context.Context, Version) error
}

// checkMonotonic raises the floor up, tries to lower it, and checks it
// never goes down.
func checkMonotonic(t *testing.T, f store) {
	t.Helper()
	ctx := context.Background()
	if v, err := f.Get(ctx); err != nil || v != (Version{}) {
		t.Fatalf("fresh floor = %v, %v; want 0.0.0", v, err)
	}
	steps := []struct{ raise, want Version }{
		{Version{1, 1, 0}, Version{1, 1, 0}},
		{Version{1, 2, 0}, Version{1, 2, 0}},
		{Version{1, 0, 9}, Version{1, 2, 0}}, // lower: ignored
		{Version{1, 2, 0}, Version{1, 2, 0}},
		{Version{2, 0, 0}, Version{2, 0, 0}},
	}
	for _, s := range steps {
		if err := f.Raise(ctx, s.raise); err != nil {
			t.Fatal(err)
		}
		if v, err := f.Get(ctx); err != nil || v != s.want {
			t.Fatalf("after Raise(%v): %v, %v; want %v", s.raise, v, err, s.want)
		}
	}
}

func TestFileFloor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "floor.json")
	f := NewFile(path)
	if f.Secure() {
		t.Fatal("a file floor claims to be secure")
	}
	checkMonotonic(t, f)
	if err := os.WriteFile(path, []byte(`{"version":"junk"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Get(context.Background()); !errors.Is(err, ErrVersion) {
		t.Fatalf("corrupt floor file: %v, want ErrVersion", err)
	}
}

func TestTPMFloorSurvivesRestoredStateDir(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	open := func() *TPM {
		tp, err := tpm.Open(context.Background(), sw.Spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		f, err := NewTPM(&tpm.NVSpace{TPM: tp, Index: tpm2.TPMHandle(DefaultIndex)})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := open()
	if !f.Secure() {
		t.Fatal("the TPM floor says it is insecure")
	}
	checkMonotonic(t, f)
	// A reboot (TPM restart) keeps it, and so does a second NewTPM, which
	// must not redefine the index.
	sw.Kill()
	sw.Start()
	f = open()
	if v, err := f.Get(context.Background()); err != nil || v != (Version{2, 0, 0}) {
		t.Fatalf("after restart: %v, %v; want 2.0.0", v, err)
	}
}
