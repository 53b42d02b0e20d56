package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

// TestServerKilledMidPublish: SIGKILL the server while a bundle is being
// uploaded; after a restart the repository is the previous consistent
// state, phones update from it, and the publish can simply be run again.
func TestServerKilledMidPublish(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	first, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, first); r.Code != 0 {
		t.Fatal("publish 1.1.0 failed")
	}
	before := tufStatus(t, s)

	// A 96 MiB bundle gives time to kill the server mid-upload.
	dir := t.TempDir()
	payload := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(payload, bytes.Repeat([]byte("0123456789abcdef"), 6<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.tar")
	systest.MustRun(t, nil, bins.Server, "firmware", "build", "--model", model, "--version", "1.2.0", "--hardware", hw, "--payload", "rootfs.img="+payload, "-o", big)
	key := filepath.Join(s.DataDir, "keys", "publisher.key")
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", key, big)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub := exec.CommandContext(ctx, bins.Server, "firmware", "publish", "--key", key, "--no-progress", big)
	pub.Env = append(os.Environ(), s.ClientEnv()...)
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(s.DataDir, "tuf", "staging")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(staging)
		if len(ents) > 0 {
			if fi, err := ents[0].Info(); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload never reached the server's staging area")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Wait(); err == nil {
		t.Fatal("publish reported success although the server died mid-upload")
	}

	s = s.Restart(t)
	after := tufStatus(t, s)
	for _, role := range []string{"root", "targets", "publisher"} {
		if after[role].Version != before[role].Version {
			t.Fatalf("%s went from v%d to v%d across a killed publish", role, before[role].Version, after[role].Version)
		}
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Fatalf("staging still holds %d files after restart", len(ents))
	}
	p := systest.Provision(t, s, "phone-1", model)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("phone after the restart exited %d", r.Code)
	}
	if r := publish(t, s, big); r.Code != 0 {
		t.Fatalf("publishing again after the restart exited %d", r.Code)
	}
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("phone taking the re-published bundle exited %d", r.Code)
	}
}
