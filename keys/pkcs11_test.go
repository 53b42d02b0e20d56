//go:build cgo

package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// The SoftHSM2 tokens the PKCS#11 tests use. SoftHSM reads SOFTHSM2_CONF
// once, when the process first initialises the module, and a module stays
// initialised for the life of the process; so every test shares one token
// directory, set up on first use, and keeps to its own object labels.
const (
	hsmToken  = "dialtone"
	hsmToken2 = "second"
	hsmPIN    = "1234"
	hsmSOPIN  = "5678"
)

var softHSM struct {
	once    sync.Once
	dir     string
	module  string
	err     error // softhsm2 missing or broken: every PKCS#11 test fails
	toolErr error // pkcs11-tool missing: tests of foreign keys fail
}

func TestMain(m *testing.M) {
	code := m.Run()
	if softHSM.dir != "" {
		_ = os.RemoveAll(softHSM.dir)
	}
	os.Exit(code)
}

// requireSoftHSM returns the SoftHSM2 module path, setting up the shared
// tokens on first use. A machine without SoftHSM2 fails the test: the
// PKCS#11 code would otherwise go untested without anyone noticing.
func requireSoftHSM(t *testing.T) string {
	t.Helper()
	softHSM.once.Do(setupSoftHSM)
	if softHSM.err != nil {
		t.Fatalf("%v: install with: make deps (apt-get install softhsm2)", softHSM.err)
	}
	return softHSM.module
}

func setupSoftHSM() {
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		softHSM.err = errors.New("softhsm2-util not found")
		return
	}
	for _, pattern := range []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/*/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			softHSM.module = m[0]
			break
		}
	}
	if softHSM.module == "" {
		softHSM.err = errors.New("libsofthsm2.so not found")
		return
	}
	dir, err := os.MkdirTemp("", "dialtone-softhsm-")
	if err != nil {
		softHSM.err = err
		return
	}
	softHSM.dir = dir
	conf := filepath.Join(dir, "softhsm2.conf")
	cfg := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", filepath.Join(dir, "tokens"))
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		softHSM.err = err
		return
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		softHSM.err = err
		return
	}
	// Not t.Setenv: the module keeps this configuration for the process.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		softHSM.err = err
		return
	}
	for _, label := range []string{hsmToken, hsmToken2} {
		out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--so-pin", hsmSOPIN, "--pin", hsmPIN).CombinedOutput()
		if err != nil {
			softHSM.err = fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
			return
		}
	}

	// Keys that another implementation made: OpenSC's pkcs11-tool.
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		softHSM.toolErr = errors.New("pkcs11-tool not found: install with: make deps (apt-get install opensc)")
		return
	}
	for _, k := range []struct{ typ, label, id string }{
		{"EC:prime256v1", "foreign", "0256"},
		{"EC:secp384r1", "p384", "0384"},
	} {
		out, err := exec.Command(tool, "--module", softHSM.module, "--token-label", hsmToken, "--login", "--pin", hsmPIN,
			"--keypairgen", "--key-type", k.typ, "--label", k.label, "--id", k.id).CombinedOutput()
		if err != nil {
			softHSM.toolErr = fmt.Errorf("pkcs11-tool --keypairgen %s: %v: %s", k.typ, err, out)
			return
		}
	}
}

// hsmURI is a key URI in the shared SoftHSM token; query is appended to the
// module path ("" for none, else "&pin-value=...").
func hsmURI(module, path, query string) string {
	return "pkcs11:" + path + "?module-path=" + module + query
}

func closeSigner(t *testing.T, sv signature.SignerVerifier) {
	t.Helper()
	c, ok := sv.(io.Closer)
	if !ok {
		t.Fatalf("%T is not an io.Closer", sv)
	}
	t.Cleanup(func() { _ = c.Close() })
}

func TestPKCS11GenerateLoadSignVerify(t *testing.T) {
	module := requireSoftHSM(t)
	ctx := context.Background()
	unsetEnv(t, PKCS11PINEnv)
	uri := hsmURI(module, "token="+hsmToken+";object=root", "&pin-value="+hsmPIN)

	pub, err := GenerateURI(ctx, uri)
	if err != nil {
		t.Fatalf("GenerateURI: %v", err)
	}
	if _, err := MarshalPublicPEM(pub); err != nil {
		t.Fatalf("generated key fails the key policy: %v", err)
	}

	sv, err := LoadSigner(ctx, uri)
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	closeSigner(t, sv)
	got, err := sv.PublicKey()
	if err != nil || !pub.(*ecdsa.PublicKey).Equal(got) {
		t.Fatalf("LoadSigner's public key differs from GenerateURI's: %v", err)
	}
	// Signatures verify with the public key alone, in software, as a
	// device would, and with sigstore's verifier, as cosign would.
	checkSignsFor(t, sv, pub)
	msg := []byte("root.json")
	sig, err := sv.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
		t.Fatalf("sigstore verifier: %v", err)
	}

	// A precomputed digest, and crypto.Signer, as TUF and firmware signing use.
	sum := sha256.Sum256(msg)
	dsig, err := sv.SignMessage(nil, options.WithDigest(sum[:]))
	if err != nil {
		t.Fatalf("SignMessage WithDigest: %v", err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), sum[:], dsig) {
		t.Fatal("digest signature does not verify")
	}
	cs, ok := sv.(crypto.Signer)
	if !ok {
		t.Fatalf("%T is not a crypto.Signer", sv)
	}
	csig, err := cs.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), sum[:], csig) {
		t.Fatalf("crypto.Signer.Sign: %v", err)
	}
	if _, err := cs.Sign(rand.Reader, sum[:], crypto.SHA384); err == nil {
		t.Fatal("Sign accepted a SHA-384 digest")
	}
	if _, err := sv.SignMessage(bytes.NewReader(msg), options.WithCryptoSignerOpts(crypto.SHA512)); err == nil {
		t.Fatal("SignMessage accepted SHA-512")
	}

	// Concurrent signing shares one session; the signer serialises it.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := []byte{byte(i)}
			s, err := sv.SignMessage(bytes.NewReader(m))
			if err == nil {
				err = sv.VerifySignature(bytes.NewReader(s), bytes.NewReader(m))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent signing: %v", err)
		}
	}

	// The same key by id alone, and with type=private.
	id := "id=%AA%BB"
	idURI := hsmURI(module, "token="+hsmToken+";object=by-id;"+id, "&pin-value="+hsmPIN)
	idPub, err := GenerateURI(ctx, idURI)
	if err != nil {
		t.Fatal(err)
	}
	sv2, err := LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";"+id+";type=private", "&pin-value="+hsmPIN))
	if err != nil {
		t.Fatalf("LoadSigner by id: %v", err)
	}
	closeSigner(t, sv2)
	checkSignsFor(t, sv2, idPub)

	// After Close, the signer refuses to sign.
	if err := sv2.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sv2.SignMessage(bytes.NewReader(msg)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("SignMessage after Close: err = %v", err)
	}
}

func TestPKCS11GenerateRefusesExisting(t *testing.T) {
	module := requireSoftHSM(t)
	ctx := context.Background()
	uri := hsmURI(module, "token="+hsmToken+";object=once;id=%0E%0E", "&pin-value="+hsmPIN)
	if _, err := GenerateURI(ctx, uri); err != nil {
		t.Fatal(err)
	}
	sv, err := LoadSigner(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	closeSigner(t, sv)
	before, _ := sv.PublicKey()
	if _, err := GenerateURI(ctx, uri); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second GenerateURI: err = %v, want fs.ErrExist", err)
	}
	// A new label with an id that is taken is refused too.
	if _, err := GenerateURI(ctx, hsmURI(module, "token="+hsmToken+";object=other;id=%0E%0E", "&pin-value="+hsmPIN)); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("GenerateURI with a used id: err = %v, want fs.ErrExist", err)
	}
	sv2, err := LoadSigner(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	closeSigner(t, sv2)
	after, _ := sv2.PublicKey()
	if !before.(*ecdsa.PublicKey).Equal(after) {
		t.Fatal("the key changed")
	}
}

func TestPKCS11PINSources(t *testing.T) {
	module := requireSoftHSM(t)
	ctx := context.Background()
	if _, err := GenerateURI(ctx, hsmURI(module, "token="+hsmToken+";object=pins", "&pin-value="+hsmPIN)); err != nil {
		t.Fatal(err)
	}
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(hsmPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("pin-source", func(t *testing.T) {
		unsetEnv(t, PKCS11PINEnv)
		sv, err := LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";object=pins", "&pin-source=file:"+pinFile))
		if err != nil {
			t.Fatal(err)
		}
		closeSigner(t, sv)
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv(PKCS11PINEnv, hsmPIN)
		sv, err := LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";object=pins", ""))
		if err != nil {
			t.Fatal(err)
		}
		closeSigner(t, sv)
	})
	t.Run("none", func(t *testing.T) {
		unsetEnv(t, PKCS11PINEnv)
		_, err := LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";object=pins", ""))
		if err == nil || !strings.Contains(err.Error(), PKCS11PINEnv) || !strings.Contains(err.Error(), "needs a PIN") {
			t.Fatalf("err = %v, want it to ask for a PIN naming %s", err, PKCS11PINEnv)
		}
		_, err = GenerateURI(ctx, hsmURI(module, "token="+hsmToken+";object=pins-new", ""))
		if err == nil || !strings.Contains(err.Error(), PKCS11PINEnv) {
			t.Fatalf("GenerateURI without PIN: err = %v, want it to name %s", err, PKCS11PINEnv)
		}
	})
}

func TestPKCS11WrongPIN(t *testing.T) {
	module := requireSoftHSM(t)
	ctx := context.Background()
	unsetEnv(t, PKCS11PINEnv)
	good := hsmURI(module, "token="+hsmToken2+";object=wrong-pin", "&pin-value="+hsmPIN)
	if _, err := GenerateURI(ctx, good); err != nil {
		t.Fatal(err)
	}
	bad := hsmURI(module, "token="+hsmToken2+";object=wrong-pin", "&pin-value=98765")

	// No session is open with the token: the token itself refuses the PIN.
	_, err := LoadSigner(ctx, bad)
	if !errors.Is(err, ErrWrongPIN) || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
		t.Fatalf("err = %v, want ErrWrongPIN from the token", err)
	}
	if strings.Contains(err.Error(), "98765") {
		t.Fatalf("err = %q quotes the PIN", err)
	}

	// With a session logged in, the token would take any PIN (the login
	// is shared): the module must compare it itself.
	sv, err := LoadSigner(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadSigner(ctx, bad)
	if !errors.Is(err, ErrWrongPIN) {
		t.Fatalf("err = %v, want ErrWrongPIN while logged in", err)
	}
	if strings.Contains(err.Error(), "98765") {
		t.Fatalf("err = %q quotes the PIN", err)
	}
	// The same PIN again is fine, and closing one signer keeps the other
	// logged in.
	sv2, err := LoadSigner(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	_ = sv.(io.Closer).Close()
	if _, err := sv2.SignMessage(strings.NewReader("still logged in")); err != nil {
		t.Fatalf("signing after the other signer closed: %v", err)
	}
	_ = sv2.(io.Closer).Close()
	// All closed: the token logged out, and a wrong PIN goes to the token.
	if _, err := LoadSigner(ctx, bad); !errors.Is(err, ErrWrongPIN) || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
		t.Fatalf("after logout: err = %v, want ErrWrongPIN from the token", err)
	}
}

func TestPKCS11Errors(t *testing.T) {
	module := requireSoftHSM(t)
	ctx := context.Background()
	unsetEnv(t, PKCS11PINEnv)
	pin := "&pin-value=" + hsmPIN
	notLib := filepath.Join(t.TempDir(), "not-a-library.so")
	if err := os.WriteFile(notLib, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		uri     string
		wantErr error
		errText string
	}{
		{"missing object", hsmURI(module, "token="+hsmToken+";object=nope", pin), ErrKeyNotFound, `object="nope"`},
		{"missing id", hsmURI(module, "token="+hsmToken+";id=%FF%FF", pin), ErrKeyNotFound, "id=%FF%FF"},
		{"missing token", hsmURI(module, "token=nope;object=root", pin), ErrKeyNotFound, `"second"`},
		{"two tokens match", hsmURI(module, "object=root", pin), nil, "2 tokens match"},
		{"by serial, no such", hsmURI(module, "serial=0000;object=root", pin), ErrKeyNotFound, "no token matches"},
		{"library mismatch", hsmURI(module, "library-manufacturer=Acme;token="+hsmToken+";object=root", pin), ErrKeyNotFound, "library attributes"},
		{"module missing", "pkcs11:token=t;object=k?module-path=/nonexistent/lib.so" + pin, fs.ErrNotExist, "module-path"},
		{"module is a directory", "pkcs11:token=t;object=k?module-path=/tmp" + pin, nil, "not a regular file"},
		{"module not a library", "pkcs11:token=t;object=k?module-path=" + notLib + pin, nil, "not a shared library"},
		{"no module", "pkcs11:token=t;object=k", nil, "module-path is required"},
		{"unknown attribute", hsmURI(module, "token="+hsmToken+";label=root", pin), nil, `unknown attribute "label"`},
		{"not a key type", hsmURI(module, "token="+hsmToken+";object=root;type=cert", pin), nil, "type=private"},
		{"pin in path", "pkcs11:token=t;object=k;pin-value=1234?module-path=" + module, nil, "belongs in the query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadSigner(ctx, tt.uri)
			if err == nil {
				t.Fatal("LoadSigner succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("err = %q, want it to mention %q", err, tt.errText)
			}
			if strings.Contains(err.Error(), "pin-value="+hsmPIN) {
				t.Errorf("err = %q quotes the PIN", err)
			}
		})
	}
}

// TestPKCS11ForeignKeys loads keys that OpenSC's pkcs11-tool generated: a
// P-256 key must sign, a P-384 key must be refused.
func TestPKCS11ForeignKeys(t *testing.T) {
	module := requireSoftHSM(t)
	if softHSM.toolErr != nil {
		t.Fatal(softHSM.toolErr)
	}
	ctx := context.Background()
	sv, err := LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";object=foreign", "&pin-value="+hsmPIN))
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	closeSigner(t, sv)
	pub, _ := sv.PublicKey()
	checkSignsFor(t, sv, pub)
	// By id, as pkcs11-tool --list-objects shows it.
	sv2, err := LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";id=%02%56", "&pin-value="+hsmPIN))
	if err != nil {
		t.Fatalf("LoadSigner by id: %v", err)
	}
	closeSigner(t, sv2)
	pub2, _ := sv2.PublicKey()
	if !pub.(*ecdsa.PublicKey).Equal(pub2) {
		t.Fatal("the same key by label and by id differs")
	}

	_, err = LoadSigner(ctx, hsmURI(module, "token="+hsmToken+";object=p384", "&pin-value="+hsmPIN))
	if !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), "P-384") {
		t.Fatalf("P-384 key: err = %v, want ErrUnsupportedKey naming P-384", err)
	}
}
