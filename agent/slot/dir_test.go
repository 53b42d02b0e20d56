package slot

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func provisioned(t *testing.T) *Dir {
	t.Helper()
	d, err := ProvisionDir(filepath.Join(t.TempDir(), "slots"), Info{Model: "m", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func install(t *testing.T, d *Dir, version, content string) string {
	t.Helper()
	ctx := context.Background()
	in, err := d.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := in.Payload("rootfs.img", int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := in.Finish(ctx, Info{Model: "m", Version: version}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetTrial(ctx, in.Slot()); err != nil {
		t.Fatal(err)
	}
	return in.Slot()
}

func TestTrialCommit(t *testing.T) {
	ctx := context.Background()
	d := provisioned(t)
	s := install(t, d, "1.1.0", "new")
	if s != B {
		t.Fatalf("installed into %s, want b", s)
	}
	st, err := d.Boot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Active != B || !st.Trial || st.Attempts != 1 {
		t.Fatalf("after boot: %+v", st)
	}
	if err := d.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ = d.Status()
	if st.Committed != B || st.Trial || st.Slots[B].Version != "1.1.0" {
		t.Fatalf("after commit: %+v", st)
	}
	// The next install goes to the other slot again.
	if s := install(t, d, "1.2.0", "newer"); s != A {
		t.Fatalf("second install into %s, want a", s)
	}
}

func TestBootLimitFallsBack(t *testing.T) {
	ctx := context.Background()
	d := provisioned(t)
	install(t, d, "1.1.0", "bad")
	var st Status
	var err error
	for range DefaultBootLimit + 1 {
		if st, err = d.Boot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st.Active != A || st.Trial || st.LastRollback == "" {
		t.Fatalf("after %d trial boots: %+v, want slot a again with a reason", DefaultBootLimit+1, st)
	}
}

func TestRollback(t *testing.T) {
	ctx := context.Background()
	d := provisioned(t)
	install(t, d, "1.1.0", "bad")
	if err := d.Rollback(ctx, "health check failed"); err != nil {
		t.Fatal(err)
	}
	st, _ := d.Status()
	if st.Active != A || st.Trial || st.LastRollback != "health check failed" {
		t.Fatalf("after rollback: %+v", st)
	}
	if err := d.Rollback(ctx, "again"); err == nil {
		t.Fatal("rollback without a trial succeeded")
	}
	if err := d.Commit(ctx); err == nil {
		t.Fatal("commit without a trial succeeded")
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	d := provisioned(t)
	if _, err := ProvisionDir(d.root, Info{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second provision: %v, want ErrExist", err)
	}
	if _, err := OpenDir(t.TempDir()); !errors.Is(err, ErrNoSlots) {
		t.Fatalf("open unprovisioned: %v, want ErrNoSlots", err)
	}
	if err := d.SetTrial(ctx, B); err == nil {
		t.Fatal("trial of an empty slot succeeded")
	}
	install(t, d, "1.1.0", "x")
	if _, err := d.BeginInstall(ctx); err == nil {
		t.Fatal("install during a trial succeeded")
	}
	if err := os.WriteFile(d.statePath(), []byte(`{"active":"c","committed":"a"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(); err == nil {
		t.Fatal("corrupt boot state accepted")
	}
}

// An install that never finished (a crash) leaves the boot state alone and
// is discarded by the next install.
func TestAbandonedInstall(t *testing.T) {
	ctx := context.Background()
	d := provisioned(t)
	before, _ := os.ReadFile(d.statePath())
	in, err := d.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := in.Payload("half", 12)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "half-written")
	w.Close()
	for _, bad := range []string{"../x", "a/b", "", ".."} {
		if _, err := in.Payload(bad, 1); err == nil {
			t.Errorf("payload name %q accepted", bad)
		}
	}
	after, _ := os.ReadFile(d.statePath())
	if string(before) != string(after) {
		t.Fatal("an unfinished install changed the boot state")
	}
	install(t, d, "1.1.0", "whole")
	if _, err := os.Stat(filepath.Join(d.Path(B), "half")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("leftover of the abandoned install reached the slot")
	}
}
