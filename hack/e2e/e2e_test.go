// Package e2e runs the whole system as processes: a dev server, the
// dialtone CLI as CI and operator, and several agents, each on free ports.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const (
	model = "dt100"
	hw    = "rev-b"
)

// buildSigned builds and signs a bundle for version with the dev server's
// publisher key, returning the bundle path and the rootfs payload.
func buildSigned(t *testing.T, s *server, version string) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	rootfs := bytes.Repeat([]byte("rootfs of "+version+"\n"), 50_000)
	kernel := []byte("kernel " + version)
	if err := os.WriteFile(filepath.Join(dir, "rootfs.img"), rootfs, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.bin"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, model+"-"+version+".tar")
	mustRun(t, nil, bins.server, "firmware", "build", "--model", model, "--version", version, "--hardware", hw, "--hardware", "rev-c",
		"--payload", "rootfs.img="+filepath.Join(dir, "rootfs.img"), "--payload", "kernel.bin="+filepath.Join(dir, "kernel.bin"), "-o", bundle)
	key := filepath.Join(s.dataDir, "keys", "publisher.key")
	mustRun(t, nil, bins.server, "firmware", "sign", "--key", key, bundle)
	mustRun(t, nil, bins.server, "firmware", "verify", "--key", key+".pub", bundle)
	return bundle, rootfs
}

func publish(t *testing.T, s *server, bundle string) result {
	t.Helper()
	return run(t, s.clientEnv(), bins.server, "firmware", "publish", "--key", filepath.Join(s.dataDir, "keys", "publisher.key"), "--no-progress", bundle)
}

// TestUpdateStory is the thinnest real path: CI publishes a signed bundle,
// the server serves it through TUF, three agents verify, install and commit
// it and report over MQTT, and the operator sees the fleet.
func TestUpdateStory(t *testing.T) {
	buildBinaries(t)
	s := startServer(t)
	bundle, rootfs := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, bundle); r.code != 0 {
		t.Fatalf("publish exited %d: %s", r.code, r.stderr)
	}

	var phones []*phone
	for i := range 3 {
		phones = append(phones, provision(t, s, fmt.Sprintf("phone-%d", i+1), model))
	}
	for _, p := range phones {
		r := p.once(t, s, model, hw)
		if r.code != 0 {
			t.Fatalf("%s: agent --once exited %d, want 0 (installed)", p.id, r.code)
		}
		st := p.bootState(t)
		if st["active"] != "b" || st["committed"] != "b" || st["trial"] != false {
			t.Fatalf("%s: boot state after install = %v, want slot b committed", p.id, st)
		}
		got, err := os.ReadFile(filepath.Join(p.stateDir, "slots", "b", "rootfs.img"))
		if err != nil || !bytes.Equal(got, rootfs) {
			t.Fatalf("%s: slot b rootfs differs from the published payload (err %v)", p.id, err)
		}
	}
	// A second cycle finds nothing newer.
	if r := phones[0].once(t, s, model, hw); r.code != 10 {
		t.Fatalf("second cycle exited %d, want 10 (no update)", r.code)
	}
	eventually(t, "operator sees three phones on 1.1.0", func() (bool, string) {
		ds := devices(t, s)
		for _, p := range phones {
			d, ok := ds[p.id]
			if !ok || d.Version != "1.1.0" || d.Slot != "b" || d.Model != model {
				return false, fmt.Sprintf("%+v", ds)
			}
		}
		return true, ""
	})
	table := mustRun(t, s.clientEnv(), bins.server, "devices", "list")
	for _, p := range phones {
		if !bytes.Contains([]byte(table.stdout), []byte(p.id)) {
			t.Fatalf("fleet table lacks %s:\n%s", p.id, table.stdout)
		}
	}
}

// TestTamperedBundleIsRefused: a bundle whose bytes change after signing
// is refused by the publisher's CLI, and when the stored copy on the server
// is altered, by every agent; nothing is installed.
func TestTamperedBundleIsRefused(t *testing.T) {
	buildBinaries(t)
	s := startServer(t)
	good, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, good); r.code != 0 {
		t.Fatalf("publish exited %d", r.code)
	}
	var phones []*phone
	for i := range 3 {
		p := provision(t, s, fmt.Sprintf("phone-%d", i+1), model)
		if r := p.once(t, s, model, hw); r.code != 0 {
			t.Fatalf("%s: first install exited %d", p.id, r.code)
		}
		phones = append(phones, p)
	}

	// 1. Changed after signing, before publishing: the CLI refuses.
	bad, _ := buildSigned(t, s, "1.2.0")
	flipByte(t, bad, 2048)
	if r := publish(t, s, bad); r.code == 0 {
		t.Fatal("publishing a bundle changed after signing succeeded")
	}
	if r := run(t, nil, bins.server, "firmware", "verify", "--key", filepath.Join(s.dataDir, "keys", "publisher.key.pub"), bad); r.code != 3 {
		t.Fatalf("firmware verify of a tampered bundle exited %d, want 3", r.code)
	}

	// 2. Changed at rest on the server after a valid publish.
	next, _ := buildSigned(t, s, "1.2.0")
	if r := publish(t, s, next); r.code != 0 {
		t.Fatalf("publish 1.2.0 exited %d", r.code)
	}
	stored, err := filepath.Glob(filepath.Join(s.dataDir, "tuf", "targets", "firmware", model, "*."+model+"-1.2.0.tar"))
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored bundle: %v %v", stored, err)
	}
	flipByte(t, stored[0], 4096)

	for _, p := range phones {
		before := p.slotTree(t)
		r := p.once(t, s, model, hw)
		if r.code != 20 {
			t.Fatalf("%s: agent on a tampered bundle exited %d, want 20 (refused)", p.id, r.code)
		}
		// The first check on the path must be the one that refuses.
		if !strings.Contains(r.stderr, "do not match the trusted sha256") {
			t.Fatalf("%s: refused for another reason than the TUF hash:\n%s", p.id, r.stderr)
		}
		if after := p.slotTree(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s: slots changed although the update was refused", p.id)
		}
	}
	eventually(t, "operator sees every phone refusing, still on 1.1.0", func() (bool, string) {
		ds := devices(t, s)
		for _, p := range phones {
			if d := ds[p.id]; d.Version != "1.1.0" || d.UpdateState != "refused" {
				return false, fmt.Sprintf("%+v", ds)
			}
		}
		return true, ""
	})
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
