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

	"github.com/dialtone-dev/dialtone/internal/systest"
)

const (
	model = "dt100"
	hw    = "rev-b"
)

// buildSigned builds and signs a bundle for version with the dev server's
// publisher key, returning the bundle path and the rootfs payload.
func buildSigned(t *testing.T, s *systest.Server, version string) (string, []byte) {
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
	systest.MustRun(t, nil, bins.Server, "firmware", "build", "--model", model, "--version", version, "--hardware", hw, "--hardware", "rev-c",
		"--payload", "rootfs.img="+filepath.Join(dir, "rootfs.img"), "--payload", "kernel.bin="+filepath.Join(dir, "kernel.bin"), "-o", bundle)
	key := filepath.Join(s.DataDir, "keys", "publisher.key")
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", key, bundle)
	systest.MustRun(t, nil, bins.Server, "firmware", "verify", "--key", key+".pub", bundle)
	return bundle, rootfs
}

func publish(t *testing.T, s *systest.Server, bundle string) systest.Result {
	t.Helper()
	return systest.Run(t, s.ClientEnv(), bins.Server, "firmware", "publish", "--key", filepath.Join(s.DataDir, "keys", "publisher.key"), "--no-progress", bundle)
}

// TestUpdateStory is the thinnest real path: CI publishes a signed bundle,
// the server serves it through TUF, three agents verify, install and commit
// it and report over MQTT, and the operator sees the fleet.
func TestUpdateStory(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	bundle, rootfs := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, bundle); r.Code != 0 {
		t.Fatalf("publish exited %d: %s", r.Code, r.Stderr)
	}

	var phones []*systest.Phone
	for i := range 3 {
		phones = append(phones, systest.Provision(t, s, fmt.Sprintf("phone-%d", i+1), model))
	}
	for _, p := range phones {
		r := p.Once(t, s, model, hw)
		if r.Code != 0 {
			t.Fatalf("%s: agent --once exited %d, want 0 (installed)", p.ID, r.Code)
		}
		st := p.BootState(t)
		if st["active"] != "b" || st["committed"] != "b" || st["trial"] != false {
			t.Fatalf("%s: boot state after install = %v, want slot b committed", p.ID, st)
		}
		got, err := os.ReadFile(filepath.Join(p.StateDir, "slots", "b", "rootfs.img"))
		if err != nil || !bytes.Equal(got, rootfs) {
			t.Fatalf("%s: slot b rootfs differs from the published payload (err %v)", p.ID, err)
		}
	}
	// A second cycle finds nothing newer.
	if r := phones[0].Once(t, s, model, hw); r.Code != 10 {
		t.Fatalf("second cycle exited %d, want 10 (no update)", r.Code)
	}
	systest.Eventually(t, "operator sees three phones on 1.1.0", func() (bool, string) {
		ds := devices(t, s)
		for _, p := range phones {
			d, ok := ds[p.ID]
			if !ok || d.Version != "1.1.0" || d.Slot != "b" || d.Model != model {
				return false, fmt.Sprintf("%+v", ds)
			}
		}
		return true, ""
	})
	table := systest.MustRun(t, s.ClientEnv(), bins.Server, "devices", "list")
	for _, p := range phones {
		if !bytes.Contains([]byte(table.Stdout), []byte(p.ID)) {
			t.Fatalf("fleet table lacks %s:\n%s", p.ID, table.Stdout)
		}
	}
}

// TestTamperedBundleIsRefused: a bundle whose bytes change after signing
// is refused by the publisher's CLI, and when the stored copy on the server
// is altered, by every agent; nothing is installed.
func TestTamperedBundleIsRefused(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	good, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, good); r.Code != 0 {
		t.Fatalf("publish exited %d", r.Code)
	}
	var phones []*systest.Phone
	for i := range 3 {
		p := systest.Provision(t, s, fmt.Sprintf("phone-%d", i+1), model)
		if r := p.Once(t, s, model, hw); r.Code != 0 {
			t.Fatalf("%s: first install exited %d", p.ID, r.Code)
		}
		phones = append(phones, p)
	}

	// 1. Changed after signing, before publishing: the CLI refuses.
	bad, _ := buildSigned(t, s, "1.2.0")
	systest.FlipByte(t, bad, 2048)
	if r := publish(t, s, bad); r.Code == 0 {
		t.Fatal("publishing a bundle changed after signing succeeded")
	}
	if r := systest.Run(t, nil, bins.Server, "firmware", "verify", "--key", filepath.Join(s.DataDir, "keys", "publisher.key.pub"), bad); r.Code != 3 {
		t.Fatalf("firmware verify of a tampered bundle exited %d, want 3", r.Code)
	}

	// 2. Changed at rest on the server after a valid publish.
	next, _ := buildSigned(t, s, "1.2.0")
	if r := publish(t, s, next); r.Code != 0 {
		t.Fatalf("publish 1.2.0 exited %d", r.Code)
	}
	stored, err := filepath.Glob(filepath.Join(s.DataDir, "tuf", "targets", "firmware", model, "*."+model+"-1.2.0.tar"))
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored bundle: %v %v", stored, err)
	}
	systest.FlipByte(t, stored[0], 4096)

	for _, p := range phones {
		before := p.SlotTree(t)
		r := p.Once(t, s, model, hw)
		if r.Code != 20 {
			t.Fatalf("%s: agent on a tampered bundle exited %d, want 20 (refused)", p.ID, r.Code)
		}
		// The first check on the path must be the one that refuses.
		if !strings.Contains(r.Stderr, "do not match the trusted sha256") {
			t.Fatalf("%s: refused for another reason than the TUF hash:\n%s", p.ID, r.Stderr)
		}
		if after := p.SlotTree(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s: slots changed although the update was refused", p.ID)
		}
	}
	systest.Eventually(t, "operator sees every phone refusing, still on 1.1.0", func() (bool, string) {
		ds := devices(t, s)
		for _, p := range phones {
			if d := ds[p.ID]; d.Version != "1.1.0" || d.UpdateState != "refused" {
				return false, fmt.Sprintf("%+v", ds)
			}
		}
		return true, ""
	})
}
