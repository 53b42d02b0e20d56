package interop

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

// cosignPassword encrypts the keys cosign writes in these tests.
const cosignPassword = "interop-test-password"

// requireCosign fails the test unless .bin/cosign reports the version that
// hack/install-deps.sh pins, and returns its path.
func requireCosign(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "hack", "install-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^COSIGN_VERSION="(v[0-9][^"]*)"`).FindSubmatch(script)
	if m == nil {
		t.Fatal(`hack/install-deps.sh has no COSIGN_VERSION="vX.Y.Z" line`)
	}
	want := string(m[1])
	bin := filepath.Join(root, ".bin", "cosign")
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("cosign %s is not installed at %s (%v): %s", want, bin, err, installHint)
	}
	if !regexp.MustCompile(`(?m)^GitVersion:\s+` + regexp.QuoteMeta(want) + `$`).Match(out) {
		t.Fatalf("%s is not cosign %s:\n%s\n%s", bin, want, out, installHint)
	}
	return bin
}

// cosign runs cosign non-interactively and offline: stdin is empty, the
// password comes from COSIGN_PASSWORD, HOME and TUF_ROOT point into the
// test's temp dir so that nothing outside it is read or written, and every
// HTTP(S) request goes to a closed local port. cosign 2.6's verify-blob
// tries to fetch Sigstore's trusted root even with --key; that fails at
// once and cosign goes on (a warning) instead of waiting on a network that
// may drop packets, and any step that really needed the network would fail
// the test.
func cosign(t *testing.T, bin string, args ...string) systest.Result {
	t.Helper()
	home := t.TempDir()
	const nowhere = "http://127.0.0.1:9"
	return systest.RunIn(t, "", []string{
		"COSIGN_PASSWORD=" + cosignPassword,
		"HOME=" + home,
		"TUF_ROOT=" + filepath.Join(home, "sigstore-tuf"),
		"HTTPS_PROXY=" + nowhere, "https_proxy=" + nowhere,
		"HTTP_PROXY=" + nowhere, "http_proxy=" + nowhere,
		"NO_PROXY=", "no_proxy=",
	}, bin, args...)
}

func mustCosign(t *testing.T, bin string, args ...string) systest.Result {
	t.Helper()
	r := cosign(t, bin, args...)
	if r.Code != 0 {
		t.Fatalf("cosign %v exited %d:\n%s", args, r.Code, r.Stderr)
	}
	return r
}

// cosignVerify runs `cosign verify-blob` offline: a key, no transparency log.
func cosignVerify(t *testing.T, bin, pub, sig, blob string) systest.Result {
	t.Helper()
	return cosign(t, bin, "verify-blob", "--key", pub, "--signature", sig, "--insecure-ignore-tlog=true", blob)
}

// cosignSign runs `cosign sign-blob` with an encrypted cosign key, without
// uploading to a transparency log or prompting, and returns the signature
// file it wrote.
func cosignSign(t *testing.T, bin, key, blob string) string {
	t.Helper()
	sig := blob + ".cosign.sig"
	mustCosign(t, bin, "sign-blob", "--key", key, "--tlog-upload=false", "--yes", "--output-signature", sig, blob)
	return sig
}

// importKey has cosign import a PKCS#8 PEM private key (as `dialtone keys
// generate` and the dev server write them) into its own encrypted format,
// and checks that the public half cosign derives is the one beside the key.
func importKey(t *testing.T, bin, key string) string {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), "imported")
	mustCosign(t, bin, "import-key-pair", "--key", key, "--output-key-prefix", prefix, "--yes")
	if b, err := os.ReadFile(prefix + ".key"); err != nil || !bytes.Contains(b, []byte("ENCRYPTED SIGSTORE PRIVATE KEY")) {
		t.Fatalf("cosign import-key-pair wrote no encrypted cosign key (%v):\n%s", err, b)
	}
	if got, want := pkixDER(t, prefix+".pub"), pkixDER(t, key+".pub"); !bytes.Equal(got, want) {
		t.Fatalf("cosign derived another public key from %s than %s.pub", key, key)
	}
	return prefix + ".key"
}

// pkixDER is the PKIX public key in a PEM file, checked to parse.
func pkixDER(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		t.Fatalf("%s: no PEM PUBLIC KEY block", path)
	}
	if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return blk.Bytes
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCosignVerifiesOurSignature: `cosign verify-blob --key` accepts the
// signature `dialtone firmware sign` writes, and refuses it over a bundle
// with one byte changed and under another key.
func TestCosignVerifiesOurSignature(t *testing.T) {
	cos := requireCosign(t)
	buildBinaries(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	systest.MustRun(t, nil, bins.Server, "keys", "generate", "--out", key)
	other := filepath.Join(dir, "other.key")
	systest.MustRun(t, nil, bins.Server, "keys", "generate", "--out", other)

	bundle := buildBundle(t, dir, "dt100", "1.1.0")
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", key, bundle)
	if r := cosignVerify(t, cos, key+".pub", bundle+".sig", bundle); r.Code != 0 {
		t.Fatalf("cosign verify-blob refused a dialtone signature (exit %d):\n%s", r.Code, r.Stderr)
	}
	if r := cosignVerify(t, cos, other+".pub", bundle+".sig", bundle); r.Code == 0 {
		t.Fatal("cosign verify-blob accepted a dialtone signature under another key")
	} else if !strings.Contains(r.Stderr, "invalid signature") {
		t.Fatalf("cosign verify-blob refused for another reason than the signature:\n%s", r.Stderr)
	}
	tampered := filepath.Join(dir, "tampered.tar")
	copyFile(t, bundle, tampered)
	systest.FlipByte(t, tampered, 2048)
	if r := cosignVerify(t, cos, key+".pub", bundle+".sig", tampered); r.Code == 0 {
		t.Fatal("cosign verify-blob accepted a dialtone signature over a changed bundle")
	} else if !strings.Contains(r.Stderr, "invalid signature") {
		t.Fatalf("cosign verify-blob refused for another reason than the signature:\n%s", r.Stderr)
	}
}

// TestDialtoneVerifiesCosignSignature: `dialtone firmware verify` accepts
// what `cosign sign-blob --key` writes, with a key of ours that cosign
// imported and with a key cosign generated, and refuses it over a changed
// bundle.
func TestDialtoneVerifiesCosignSignature(t *testing.T) {
	cos := requireCosign(t)
	buildBinaries(t)
	dir := t.TempDir()
	bundle := buildBundle(t, dir, "dt100", "1.1.0")
	tampered := filepath.Join(dir, "tampered.tar")
	copyFile(t, bundle, tampered)
	systest.FlipByte(t, tampered, 2048)

	ours := filepath.Join(dir, "ours.key")
	systest.MustRun(t, nil, bins.Server, "keys", "generate", "--out", ours)
	imported := importKey(t, cos, ours)

	generated := filepath.Join(dir, "cosign")
	mustCosign(t, cos, "generate-key-pair", "--output-key-prefix", generated)

	for _, c := range []struct{ name, signKey, pub string }{
		{"imported PKCS#8 key", imported, ours + ".pub"},
		{"cosign-generated key", generated + ".key", generated + ".pub"},
	} {
		sig := cosignSign(t, cos, c.signKey, bundle)
		if r := systest.RunIn(t, "", nil, bins.Server, "firmware", "verify", "--key", c.pub, "--signature", sig, bundle); r.Code != 0 {
			t.Fatalf("%s: dialtone firmware verify refused cosign's signature (exit %d):\n%s", c.name, r.Code, r.Stderr)
		}
		if r := systest.RunIn(t, "", nil, bins.Server, "firmware", "verify", "--key", c.pub, "--signature", sig, tampered); r.Code != 3 {
			t.Fatalf("%s: dialtone firmware verify of a changed bundle exited %d, want 3 (rejected)", c.name, r.Code)
		}
	}
}

// TestPublishCosignSignature: CI signs a bundle with cosign, using the
// publisher key imported into cosign's format; `dialtone firmware publish
// --signature` uploads that signature with the TUF metadata, and a phone
// provisioned from 1.root.json verifies and installs the bundle.
func TestPublishCosignSignature(t *testing.T) {
	cos := requireCosign(t)
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	dir := t.TempDir()
	bundle := buildBundle(t, dir, "dt100", "1.1.0")

	sig := cosignSign(t, cos, importKey(t, cos, s.PublisherKey()), bundle)
	if _, err := os.Stat(bundle + ".sig"); !os.IsNotExist(err) {
		t.Fatalf("%s.sig exists (%v): publish must use cosign's signature, not sign again", bundle, err)
	}
	if r := publish(t, s, bundle, sig); r.Code != 0 {
		t.Fatalf("publish with a cosign signature exited %d:\n%s", r.Code, r.Stderr)
	}
	stored, err := filepath.Glob(filepath.Join(s.DataDir, "tuf", "targets", "firmware", "dt100", "*.dt100-1.1.0.tar.sig"))
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored signature: %v %v", stored, err)
	}
	if got, want := fileBytes(t, stored[0]), fileBytes(t, sig); !bytes.Equal(got, want) {
		t.Fatalf("the server serves signature %q, cosign wrote %q", got, want)
	}
	if r := provisionAndUpdate(t, s, "phone-cosign", "dt100"); r.Code != 0 {
		t.Fatalf("agent --once exited %d, want 0 (installed):\n%s", r.Code, r.Stderr)
	}
}

func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
