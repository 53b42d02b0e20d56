// Package interop checks Dialtone against other implementations of the
// standards it uses: a TUF client other than go-tuf (tuf-js, from sigstore-js)
// reads the repository that `dialtone server` serves, and cosign signs and
// verifies the same bundle signatures as `dialtone firmware sign|verify`.
//
// The tools come from hack/install-deps.sh (`make deps`): node_modules in
// hack/interop/tufjs, and cosign in the repository's .bin/. A missing tool
// fails the tests, with the command that installs it; nothing is skipped.
package interop

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

const installHint = "run `bash hack/install-deps.sh` (or `make deps`) from the repository root"

// bins are the binaries under test, built once per test binary run.
var bins systest.Binaries

func TestMain(m *testing.M) {
	code := m.Run()
	systest.Cleanup()
	os.Exit(code)
}

func buildBinaries(t *testing.T) { bins = systest.Build(t) }

// repoRoot is the module root: the tests run in hack/interop.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

const hw = "rev-b"

// buildBundle builds an unsigned bundle for model and version in dir.
func buildBundle(t *testing.T, dir, model, version string) string {
	t.Helper()
	rootfs := filepath.Join(dir, model+"-"+version+"-rootfs.img")
	if err := os.WriteFile(rootfs, bytes.Repeat([]byte(model+" rootfs "+version+"\n"), 20_000), 0o644); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, model+"-"+version+"-kernel.bin")
	if err := os.WriteFile(kernel, []byte("kernel "+model+" "+version), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, model+"-"+version+".tar")
	systest.MustRun(t, nil, bins.Server, "firmware", "build", "--model", model, "--version", version, "--hardware", hw,
		"--payload", "rootfs.img="+rootfs, "--payload", "kernel.bin="+kernel, "-o", bundle)
	return bundle
}

// publish uploads bundle (and sig, or BUNDLE.sig when empty) with the dev
// server's publisher key; its stdout is the JSON result (target, sha256...).
func publish(t *testing.T, s *systest.Server, bundle, sig string) systest.Result {
	t.Helper()
	args := []string{"firmware", "publish", "--key", s.PublisherKey(), "--no-progress", "-o", "json"}
	if sig != "" {
		args = append(args, "--signature", sig)
	}
	return systest.Run(t, s.ClientEnv(), bins.Server, append(args, bundle)...)
}

// provisionAndUpdate provisions a phone for model from the repository's
// 1.root.json and runs one agent cycle, returning its result.
func provisionAndUpdate(t *testing.T, s *systest.Server, id, model string) systest.Result {
	t.Helper()
	return systest.Provision(t, s, id, model).Once(t, s, model, hw)
}

func fileSHA256(t *testing.T, path string) (string, int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), int64(len(b))
}
