package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

// Other TUF clients that read the repository. python-tuf is not among them:
// Debian 12 packages only python3-securesystemslib, not python3-tuf, and PyPI
// is out of reach here (see hack/interop/README.md).

// tufjsDir holds package.json, the committed package-lock.json and client.mjs.
func tufjsDir(t *testing.T) string {
	return filepath.Join(repoRoot(t), "hack", "interop", "tufjs")
}

// requireTufJS fails the test unless node (what tuf-js 3 supports: 18.17+ or
// 20.5+; Debian 12's nodejs is 18.20) and the pinned tuf-js are installed,
// and returns the node binary.
func requireTufJS(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found in PATH: tuf-js needs Node.js 18.17+ or 20.5+; %s (it installs Debian's nodejs and npm)", installHint)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", node, err)
	}
	version := strings.TrimSpace(string(out))
	m := regexp.MustCompile(`^v(\d+)\.(\d+)\.`).FindStringSubmatch(version)
	if m == nil {
		t.Fatalf("%s --version printed %q", node, version)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 18 || major == 18 && minor < 17 || major == 19 || major == 20 && minor < 5 {
		t.Fatalf("%s is Node.js %s: tuf-js needs 18.17+ or 20.5+", node, version)
	}

	dir := tufjsDir(t)
	var want struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	readJSON(t, filepath.Join(dir, "package.json"), &want)
	var got struct {
		Version string `json:"version"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "tuf-js", "package.json"))
	if err == nil {
		err = json.Unmarshal(b, &got)
	}
	if err != nil || got.Version != want.Dependencies["tuf-js"] {
		t.Fatalf("tuf-js %s is not installed in %s (found %q, %v): %s (it runs `npm ci` there)",
			want.Dependencies["tuf-js"], dir, got.Version, err, installHint)
	}
	return node
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// tufjsTarget is one target's result from client.mjs.
type tufjsTarget struct {
	Path          string         `json:"path"`
	OK            bool           `json:"ok"`
	Length        int64          `json:"length"`
	SHA256        string         `json:"sha256"`
	TrustedSHA256 string         `json:"trusted_sha256"`
	Custom        map[string]any `json:"custom"`
	Error         string         `json:"error"`
}

type tufjsResult struct {
	code    int
	OK      bool          `json:"ok"`
	Error   string        `json:"error"`
	Targets []tufjsTarget `json:"targets"`
}

func (r *tufjsResult) target(t *testing.T, path string) tufjsTarget {
	t.Helper()
	for _, tg := range r.Targets {
		if tg.Path == path {
			return tg
		}
	}
	t.Fatalf("tuf-js printed no result for %s: %+v", path, r.Targets)
	return tufjsTarget{}
}

// runTufJS runs client.mjs against s with cache as its state, trusting only
// the server's 1.root.json, for paths.
func runTufJS(t *testing.T, node string, s *systest.Server, cache string, paths ...string) tufjsResult {
	t.Helper()
	args := append([]string{"client.mjs",
		"--metadata-url", s.URL() + "/tuf/metadata/",
		"--targets-url", s.URL() + "/tuf/targets/",
		"--root", s.RootPath(),
		"--cache", cache,
	}, paths...)
	// The server is HTTPS with its development CA: node trusts it on top
	// of its bundled roots through NODE_EXTRA_CA_CERTS.
	r := systest.RunIn(t, tufjsDir(t), []string{"NODE_EXTRA_CA_CERTS=" + s.CA}, node, args...)
	if r.Code == 2 {
		t.Fatalf("client.mjs usage error: %s", r.Stderr)
	}
	var res tufjsResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("client.mjs exited %d without a JSON result (%v):\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	res.code = r.Code
	if (r.Code == 0) != res.OK {
		t.Fatalf("client.mjs exited %d but reported ok=%v", r.Code, res.OK)
	}
	return res
}

// published is a bundle the test published and the files it came from.
type published struct {
	model, version string
	bundle         string // local bundle
	target         string // its TUF target path
}

// publishSigned builds, signs with our CLI and publishes a bundle.
func publishSigned(t *testing.T, s *systest.Server, dir, model, version string) published {
	t.Helper()
	bundle := buildBundle(t, dir, model, version)
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", s.PublisherKey(), bundle)
	r := publish(t, s, bundle, "")
	if r.Code != 0 {
		t.Fatalf("publish %s exited %d: %s", bundle, r.Code, r.Stderr)
	}
	var res struct {
		Target string `json:"target"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || res.Target == "" {
		t.Fatalf("publish -o json: %v\n%s", err, r.Stdout)
	}
	if want := fmt.Sprintf("firmware/%s/%s-%s.tar", model, model, version); res.Target != want {
		t.Fatalf("published target %q, want %q", res.Target, want)
	}
	return published{model: model, version: version, bundle: bundle, target: res.Target}
}

// checkDownloaded checks that tuf-js downloaded p's bundle and signature
// with the bytes we published.
func checkDownloaded(t *testing.T, res *tufjsResult, p published) {
	t.Helper()
	for _, c := range []struct{ target, local string }{{p.target, p.bundle}, {p.target + ".sig", p.bundle + ".sig"}} {
		got := res.target(t, c.target)
		if !got.OK {
			t.Fatalf("tuf-js could not download %s: %s", c.target, got.Error)
		}
		sum, n := fileSHA256(t, c.local)
		if got.SHA256 != sum || got.TrustedSHA256 != sum || got.Length != n {
			t.Fatalf("tuf-js %s: sha256 %s (trusted %s), %d bytes; local %s has sha256 %s, %d bytes",
				c.target, got.SHA256, got.TrustedSHA256, got.Length, c.local, sum, n)
		}
	}
	custom := res.target(t, p.target).Custom
	if custom["model"] != p.model || custom["version"] != p.version {
		t.Fatalf("tuf-js %s: custom metadata %v, want model %s version %s", p.target, custom, p.model, p.version)
	}
}

// TestTufJSReadsRepository: tuf-js, starting from 1.root.json alone, walks
// root, timestamp, snapshot, targets and the delegated publisher role, and
// downloads every published bundle and signature with the bytes CI
// published; with its cache kept, it follows a later publish; and it refuses
// a bundle changed at rest on the server while still serving the others.
func TestTufJSReadsRepository(t *testing.T) {
	node := requireTufJS(t)
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	dir := t.TempDir()

	a := publishSigned(t, s, dir, "dt100", "1.1.0")
	b := publishSigned(t, s, dir, "dt200", "2.0.0")
	all := []string{a.target, a.target + ".sig", b.target, b.target + ".sig"}

	cache := filepath.Join(t.TempDir(), "tufjs")
	res := runTufJS(t, node, s, cache, all...)
	if !res.OK {
		t.Fatalf("tuf-js failed: %s %+v", res.Error, res.Targets)
	}
	checkDownloaded(t, &res, a)
	checkDownloaded(t, &res, b)

	// A later publish: the same cache (trusted timestamp, snapshot and
	// targets versions) moves forward to it.
	c := publishSigned(t, s, dir, "dt100", "1.2.0")
	res = runTufJS(t, node, s, cache, append(all, c.target, c.target+".sig")...)
	if !res.OK {
		t.Fatalf("tuf-js failed after a second publish: %s %+v", res.Error, res.Targets)
	}
	checkDownloaded(t, &res, c)

	// A target not in the metadata is an error, not an empty download.
	res = runTufJS(t, node, s, cache, "firmware/dt100/dt100-9.9.9.tar")
	if res.OK || res.code == 0 {
		t.Fatal("tuf-js reported success for a target that was never published")
	}

	// A bundle changed at rest on the server: tuf-js refuses it, from a
	// fresh cache and from the kept one, and still serves the others.
	stored, err := filepath.Glob(filepath.Join(s.DataDir, "tuf", "targets", "firmware", b.model, "*."+filepath.Base(b.bundle)))
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored bundle for %s: %v %v", b.target, stored, err)
	}
	systest.FlipByte(t, stored[0], 4096)
	for _, cache := range []string{cache, filepath.Join(t.TempDir(), "fresh")} {
		res = runTufJS(t, node, s, cache, all...)
		if res.OK || res.code == 0 {
			t.Fatalf("tuf-js accepted a repository with %s changed at rest", stored[0])
		}
		if got := res.target(t, b.target); got.OK || got.Error == "" {
			t.Fatalf("tuf-js downloaded the tampered %s: %+v", b.target, got)
		} else if !strings.Contains(strings.ToLower(got.Error), "hash") {
			t.Fatalf("tuf-js refused %s for another reason than its hash: %s", b.target, got.Error)
		}
		checkDownloaded(t, &res, a)
		if got := res.target(t, b.target+".sig"); !got.OK {
			t.Fatalf("tuf-js refused the untouched %s.sig: %s", b.target, got.Error)
		}
	}
}
