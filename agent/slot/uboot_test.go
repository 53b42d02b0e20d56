package slot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// envSize is the size of the test environment, a common one on phones.
const envSize = 0x4000

// needTools fails, rather than skips, without the real libubootenv tools:
// these tests exist to run the backend against them.
func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"fw_printenv", "fw_setenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install libubootenv-tool (make deps): %v", tool, err)
		}
	}
}

// testEnv is a file-backed U-Boot environment with one copy, or two for a
// redundant environment, and file-backed slot partitions.
type testEnv struct {
	cfg    UBootConfig
	copies []string
	dir    string
}

func newTestEnv(t *testing.T, copies int) *testEnv {
	t.Helper()
	needTools(t)
	dir := t.TempDir()
	var conf strings.Builder
	var files []string
	for i := range copies {
		p := filepath.Join(dir, fmt.Sprintf("uboot%d.env", i))
		// All zeros: a bad CRC, as on a phone whose U-Boot never saved.
		if err := os.WriteFile(p, make([]byte, envSize), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "%s 0x0000 0x%x\n", p, envSize)
		files = append(files, p)
	}
	cfgPath := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(cfgPath, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	defEnv, err := filepath.Abs(filepath.Join("testdata", "u-boot-initial-env"))
	if err != nil {
		t.Fatal(err)
	}
	parts := map[string][2]string{}
	for _, name := range []string{"kernel", "rootfs.img"} {
		var dst [2]string
		for i, s := range []string{A, B} {
			dst[i] = filepath.Join(dir, name+"."+s)
			if err := os.WriteFile(dst[i], nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		parts[name] = dst
	}
	return &testEnv{
		cfg:    UBootConfig{EnvConfig: cfgPath, DefaultEnv: defEnv, Partitions: parts, MaxFileSize: 1 << 20},
		copies: files,
		dir:    dir,
	}
}

func (e *testEnv) provision(t *testing.T) *UBoot {
	t.Helper()
	u, err := ProvisionUBoot(t.Context(), e.cfg, Info{Model: "m", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// printenv is what fw_printenv says of one variable.
func (e *testEnv) printenv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("fw_printenv", "-c", e.cfg.EnvConfig, "-f", "", "-n", name).Output()
	if err != nil {
		t.Fatalf("fw_printenv %s: %v", name, err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// reboot boots the phone through the simulated bootloader and starts the
// agent's backend afresh, as after a real reboot.
func (e *testEnv) reboot(t *testing.T) (string, *UBoot) {
	t.Helper()
	booted, err := SimulateBootloader(t.Context(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := OpenUBoot(t.Context(), e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return booted, u
}

func (e *testEnv) snapshot(t *testing.T) [][]byte {
	t.Helper()
	var s [][]byte
	for _, p := range e.copies {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s = append(s, b)
	}
	return s
}

func (e *testEnv) restore(t *testing.T, s [][]byte) {
	t.Helper()
	for i, p := range e.copies {
		if err := os.WriteFile(p, s[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// writeImage installs an image whose payloads hold content and the
// payload's name, without setting it on trial.
func writeImage(t *testing.T, u *UBoot, version, content string) string {
	t.Helper()
	ctx := t.Context()
	in, err := u.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kernel", "rootfs.img"} {
		data := content + " " + name
		w, err := in.Payload(name, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.Finish(ctx, Info{Model: "m", Version: version, SHA256: strings.Repeat("ab", 32)}); err != nil {
		t.Fatal(err)
	}
	return in.Slot()
}

func installTrial(t *testing.T, u *UBoot, version, content string) string {
	t.Helper()
	s := writeImage(t, u, version, content)
	if err := u.SetTrial(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

func status(t *testing.T, u *UBoot) Status {
	t.Helper()
	st, err := u.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var envLayouts = []struct {
	name   string
	copies int
}{
	{"single", 1},
	{"redundant", 2},
}

func TestUBootProvision(t *testing.T) {
	for _, l := range envLayouts {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e := newTestEnv(t, l.copies)
			if _, err := OpenUBoot(ctx, e.cfg); err == nil || !strings.Contains(err.Error(), "Cannot read environment") {
				t.Fatalf("open of a never saved env: %v, want fw_printenv's complaint", err)
			}
			installed := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
			factory := Info{Model: "m", Version: "1.0.0", Installed: installed}
			u, err := ProvisionUBoot(ctx, e.cfg, factory)
			if err != nil {
				t.Fatal(err)
			}
			want := Status{Active: A, Committed: A, BootLimit: DefaultBootLimit, Slots: map[string]Info{A: factory}}
			if st := status(t, u); !reflect.DeepEqual(st, want) {
				t.Fatalf("after provision: %+v, want %+v", st, want)
			}
			// The never saved env started from the default one, which holds
			// the bootloader's side of the contract.
			if got := e.printenv(t, "bootcmd"); got != "run dialtone_boot" {
				t.Fatalf("bootcmd = %q, want the default env's", got)
			}
			if _, err := ProvisionUBoot(ctx, e.cfg, factory); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("second provision: %v, want ErrExist", err)
			}
			if _, err := OpenUBoot(ctx, e.cfg); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUBootOpenUnprovisioned(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	// A valid environment that U-Boot saved but nobody provisioned.
	if out, err := exec.Command("fw_setenv", "-c", e.cfg.EnvConfig, "-f", e.cfg.DefaultEnv, "bootdelay", "3").CombinedOutput(); err != nil {
		t.Fatalf("fw_setenv: %v: %s", err, out)
	}
	if _, err := OpenUBoot(t.Context(), e.cfg); !errors.Is(err, ErrNoSlots) {
		t.Fatalf("open unprovisioned: %v, want ErrNoSlots", err)
	}
	missing := newTestEnv(t, 1).cfg
	missing.DefaultEnv = filepath.Join(e.dir, "no-such-default-env")
	if _, err := ProvisionUBoot(t.Context(), missing, Info{Model: "m", Version: "1"}); err == nil || !strings.Contains(err.Error(), "Cannot read default environment") {
		t.Fatalf("provision of a blank env without a default env: %v, want fw_setenv's complaint", err)
	}
}

func TestUBootTrialCommit(t *testing.T) {
	for _, l := range envLayouts {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e := newTestEnv(t, l.copies)
			u := e.provision(t)
			if s := installTrial(t, u, "1.1.0", "new"); s != B {
				t.Fatalf("installed into %s, want b", s)
			}
			for name, dst := range e.cfg.Partitions {
				if got, _ := os.ReadFile(dst[1]); string(got) != "new "+name {
					t.Fatalf("%s of slot b holds %q", name, got)
				}
				if got, _ := os.ReadFile(dst[0]); len(got) != 0 {
					t.Fatalf("%s of slot a was written: %q", name, got)
				}
			}
			if got := e.printenv(t, EnvUpgrade) + e.printenv(t, EnvBootCount) + e.printenv(t, EnvSlot); got != "10b" {
				t.Fatalf("after set trial: upgrade_available, bootcount, dialtone_slot = %q", got)
			}
			// The agent restarted without a reboot: slot b never ran.
			if _, err := u.Boot(ctx); !errors.Is(err, ErrTrialNotBooted) {
				t.Fatalf("boot before the bootloader ran: %v, want ErrTrialNotBooted", err)
			}
			if err := u.Commit(ctx); !errors.Is(err, ErrTrialNotBooted) {
				t.Fatalf("commit before the bootloader ran: %v, want ErrTrialNotBooted", err)
			}
			booted, u := e.reboot(t)
			if booted != B {
				t.Fatalf("bootloader booted %s, want b", booted)
			}
			st, err := u.Boot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Active != B || st.Committed != A || !st.Trial || st.Attempts != 1 {
				t.Fatalf("after the first trial boot: %+v", st)
			}
			if err := u.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			st = status(t, u)
			if st.Active != B || st.Committed != B || st.Trial || st.Slots[B].Version != "1.1.0" || st.Slots[A].Version != "1.0.0" {
				t.Fatalf("after commit: %+v", st)
			}
			if got := e.printenv(t, EnvUpgrade) + e.printenv(t, EnvBootCount); got != "00" {
				t.Fatalf("after commit: upgrade_available, bootcount = %q", got)
			}
			if booted, _ := e.reboot(t); booted != B {
				t.Fatalf("after commit the bootloader booted %s", booted)
			}
			if err := u.Commit(ctx); err == nil {
				t.Fatal("second commit succeeded")
			}
			// The next install goes to the other slot again.
			if s := installTrial(t, u, "1.2.0", "newer"); s != A {
				t.Fatalf("second install into %s, want a", s)
			}
		})
	}
}

func TestUBootBootLimitFallsBack(t *testing.T) {
	for _, l := range envLayouts {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e := newTestEnv(t, l.copies)
			installTrial(t, e.provision(t), "1.1.0", "bad")
			// Each trial boot the agent never gets through its checks.
			for i := 1; i <= DefaultBootLimit; i++ {
				booted, u := e.reboot(t)
				st, err := u.Boot(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if booted != B || st.Active != B || !st.Trial || st.Attempts != i {
					t.Fatalf("trial boot %d: booted %s, %+v", i, booted, st)
				}
			}
			booted, u := e.reboot(t)
			if booted != A {
				t.Fatalf("boot past the limit booted %s, want a", booted)
			}
			// Before the agent records it, the fallback already shows.
			if st := status(t, u); st.Active != A || st.Trial || st.LastRollback == "" {
				t.Fatalf("status after the fallback: %+v", st)
			}
			st, err := u.Boot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := "slot b did not commit within 3 boots"
			if st.Active != A || st.Committed != A || st.Trial || st.LastRollback != want {
				t.Fatalf("after %d boots: %+v, want slot a again with %q", DefaultBootLimit+1, st, want)
			}
			if got := e.printenv(t, EnvUpgrade) + e.printenv(t, EnvBootCount) + e.printenv(t, EnvSlot); got != "00a" {
				t.Fatalf("after the fallback: upgrade_available, bootcount, dialtone_slot = %q", got)
			}
			// Later boots stay on a and keep the reason.
			booted, u = e.reboot(t)
			if st, err = u.Boot(ctx); err != nil || booted != A || st.LastRollback != want || st.Trial {
				t.Fatalf("next boot: booted %s, %+v, %v", booted, st, err)
			}
			if err := u.Rollback(ctx, "late"); err == nil {
				t.Fatal("rollback after the fallback succeeded")
			}
		})
	}
}

func TestUBootRollback(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEnv(t, 2)
	installTrial(t, e.provision(t), "1.1.0", "bad")
	_, u := e.reboot(t)
	if _, err := u.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Rollback(ctx, "health check failed"); err != nil {
		t.Fatal(err)
	}
	st := status(t, u)
	if st.Active != A || st.Trial || st.LastRollback != "health check failed" {
		t.Fatalf("after rollback: %+v", st)
	}
	if booted, _ := e.reboot(t); booted != A {
		t.Fatalf("after rollback the bootloader booted %s", booted)
	}
	if got := e.printenv(t, EnvBootCount); got != "0" {
		t.Fatalf("bootcount %q after rollback, want 0: a committed slot is not counted", got)
	}
	if err := u.Rollback(ctx, "again"); err == nil {
		t.Fatal("rollback without a trial succeeded")
	}
	if err := u.Commit(ctx); err == nil {
		t.Fatal("commit without a trial succeeded")
	}
	// The failed slot still holds a finished image and may be tried
	// again; a new trial forgets the old reason.
	if err := u.SetTrial(ctx, B); err != nil {
		t.Fatal(err)
	}
	if st := status(t, u); st.LastRollback != "" || !st.Trial {
		t.Fatalf("after a new trial: %+v", st)
	}
}

// A rollback reason is error text: it may be long and hold newlines,
// which a fw_setenv script line cannot.
func TestUBootRollbackReasonCleaned(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEnv(t, 1)
	u := e.provision(t)
	installTrial(t, u, "1.1.0", "x")
	reason := "health check failed:\nbroker unreachable\x00\r\n" + strings.Repeat("é", 400)
	if err := u.Rollback(ctx, reason); err != nil {
		t.Fatal(err)
	}
	got := status(t, u).LastRollback
	if !strings.HasPrefix(got, "health check failed: broker unreachable") || len(got) > maxReason || strings.ContainsAny(got, "\n\r\x00") || strings.ContainsRune(got, '\uFFFD') {
		t.Fatalf("stored reason %q", got)
	}
}

func TestUBootRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEnv(t, 2)
	u := e.provision(t)
	for _, tc := range []struct {
		slot, want string
	}{
		{B, "holds no finished image"},
		{A, "already active"},
		{"c", "unknown slot"},
	} {
		if err := u.SetTrial(ctx, tc.slot); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("set trial %s: %v, want %q", tc.slot, err, tc.want)
		}
	}
	before := e.snapshot(t)
	// An install that did not finish leaves the slot untriable.
	in, err := u.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := in.Payload("rootfs.img", 3); err != nil {
		t.Fatal(err)
	} else {
		io.WriteString(w, "abc")
		w.Close()
	}
	if err := in.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := u.SetTrial(ctx, B); err == nil {
		t.Fatal("trial of an aborted slot succeeded")
	}
	if !slices.EqualFunc(before, e.snapshot(t), bytes.Equal) {
		t.Fatal("an install into an empty slot that never finished changed the env")
	}
	installTrial(t, u, "1.1.0", "x")
	if _, err := u.BeginInstall(ctx); err == nil {
		t.Fatal("install during a trial succeeded")
	}
	if err := u.SetTrial(ctx, B); err == nil {
		t.Fatal("second set trial succeeded")
	}
}

func TestUBootPayloadRefusals(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEnv(t, 1)
	u := e.provision(t)
	in, err := u.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64
		want string
	}{
		{"bootloader", 1, "has no partition"},
		{"../rootfs.img", 1, "has no partition"},
		{"rootfs.img", e.cfg.MaxFileSize + 1, "do not fit"},
		{"rootfs.img", -1, "negative size"},
	} {
		if _, err := in.Payload(tc.name, tc.size); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("payload %q of %d bytes: %v, want %q", tc.name, tc.size, err, tc.want)
		}
	}
	w, err := in.Payload("rootfs.img", 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Payload("rootfs.img", 4); err == nil {
		t.Error("same payload opened twice")
	}
	if n, err := io.WriteString(w, "12345"); err == nil || n != 4 {
		t.Errorf("writing past the declared size: %d, %v", n, err)
	}
	info := Info{Model: "m", Version: "1.1.0"}
	if err := in.Finish(ctx, info); err == nil || !strings.Contains(err.Error(), "not written") && !strings.Contains(err.Error(), "still open") {
		t.Errorf("finish with a payload missing and one open: %v", err)
	}
	w.Close()
	k, err := in.Payload("kernel", 10)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(k, "short")
	k.Close()
	if err := in.Finish(ctx, info); err == nil || !strings.Contains(err.Error(), "wrote 5 of 10") {
		t.Errorf("finish with a short payload: %v", err)
	}
	in.Abort()
	if _, err := in.Payload("kernel", 1); err == nil {
		t.Error("payload after abort")
	}

	// Info that would smuggle another variable into the env script.
	in = writePayloads(t, u)
	if err := in.Finish(ctx, Info{Model: "m", Version: "1.1.0\ndialtone_slot=b"}); err == nil {
		t.Fatal("info with a newline accepted")
	}
	in.Abort()
	if st := status(t, u); st.Active != A || len(st.Slots) != 1 {
		t.Fatalf("after refused info: %+v", st)
	}

	// A newer install supersedes an older one.
	old := writePayloads(t, u)
	newer := writePayloads(t, u)
	if err := old.Finish(ctx, info); err == nil || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("finish of a superseded install: %v", err)
	}
	old.Abort()
	if err := newer.Finish(ctx, info); err != nil {
		t.Fatal(err)
	}
	if err := newer.Abort(); err != nil {
		t.Fatal("abort after finish:", err)
	}
	if st := status(t, u); st.Slots[B].Version != "1.1.0" {
		t.Fatalf("after finish and a late abort: %+v", st)
	}
}

func writePayloads(t *testing.T, u *UBoot) Installer {
	t.Helper()
	in, err := u.BeginInstall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name := range u.cfg.Partitions {
		w, err := in.Payload(name, 2)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "ok")
		w.Close()
	}
	return in
}

// A crash after an install began overwriting a slot leaves no info
// describing the image that was there before.
func TestUBootCrashAfterForget(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newTestEnv(t, 2)
	u := e.provision(t)
	installTrial(t, u, "1.1.0", "new")
	_, u = e.reboot(t)
	if _, err := u.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if st := status(t, u); st.Slots[A].Version != "1.0.0" {
		t.Fatalf("slot a before the install: %+v", st)
	}
	in, err := u.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.Slot() != A {
		t.Fatalf("install into %s, want a", in.Slot())
	}
	// Forgotten before the first byte reaches the partition.
	if _, ok := status(t, u).Slots[A]; ok {
		t.Fatal("slot a info kept after the install began")
	}
	w, err := in.Payload("rootfs.img", 100)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "half of a new rootfs")
	// Crash: the process is gone, nothing is closed or aborted.
	u, err = OpenUBoot(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := status(t, u)
	if _, ok := st.Slots[A]; ok || st.Active != B || st.Committed != B {
		t.Fatalf("after the crash: %+v", st)
	}
	if err := u.SetTrial(ctx, A); err == nil {
		t.Fatal("trial of a half-written slot succeeded")
	}
	installTrial(t, u, "1.2.0", "whole")
}

// TestUBootPowerCut tears the environment write of SetTrial at many
// points, as a power cut during fw_setenv would, and checks that the
// backend then reads the state before or the state after, never a mix.
// With a redundant environment it always reads one of them: the torn
// copy fails its CRC and the other still holds the old state. A single
// copy can only fail as a whole (U-Boot would fall back to its built-in
// environment): that is why phones need the redundant one.
func TestUBootPowerCut(t *testing.T) {
	for _, l := range envLayouts {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e := newTestEnv(t, l.copies)
			u := e.provision(t)
			writeImage(t, u, "1.1.0", "new")
			oldState, oldFiles := status(t, u), e.snapshot(t)
			if err := u.SetTrial(ctx, B); err != nil {
				t.Fatal(err)
			}
			newState, newFiles := status(t, u), e.snapshot(t)
			if reflect.DeepEqual(oldState, newState) {
				t.Fatal("set trial changed nothing")
			}
			written := -1
			for i := range newFiles {
				if !bytes.Equal(oldFiles[i], newFiles[i]) {
					if written >= 0 {
						t.Fatal("one env write changed both copies")
					}
					written = i
				}
			}
			if written < 0 {
				t.Fatal("set trial changed no copy")
			}
			before, after := oldFiles[written], newFiles[written]
			first := 0
			for before[first] == after[first] {
				first++
			}
			last := len(after) - 1
			for before[last] == after[last] {
				last--
			}
			cuts := []int{0, 1, 4, 5, first, first + 1, (first + last) / 2, last, last + 1, len(after)}
			seen := map[string]bool{}
			for _, cut := range cuts {
				for _, tear := range []string{"start", "end"} {
					torn := slices.Clone(before)
					if tear == "start" {
						copy(torn[:cut], after[:cut]) // the write began, the power went
					} else {
						copy(torn[cut:], after[cut:]) // sectors written out of order
					}
					files := slices.Clone(oldFiles)
					files[written] = torn
					e.restore(t, files)
					st, err := u.Status()
					switch {
					case err != nil && l.copies > 1:
						t.Fatalf("%s %d bytes: redundant env unreadable: %v", tear, cut, err)
					case err != nil:
						if bytes.Equal(torn, before) || bytes.Equal(torn, after) {
							t.Fatalf("%s %d bytes: whole env unreadable: %v", tear, cut, err)
						}
						seen["unreadable"] = true
					case reflect.DeepEqual(st, oldState):
						if bytes.Equal(torn, after) {
							t.Fatalf("%s %d bytes: completed write reads as the old state", tear, cut)
						}
						seen["old"] = true
					case reflect.DeepEqual(st, newState):
						if !bytes.Equal(torn, after) {
							t.Fatalf("%s %d bytes: torn write reads as the new state", tear, cut)
						}
						seen["new"] = true
					default:
						t.Fatalf("%s %d bytes: a mix: %+v\nold %+v\nnew %+v", tear, cut, st, oldState, newState)
					}
				}
			}
			if !seen["old"] || !seen["new"] {
				t.Fatalf("cuts covered only %v", seen)
			}
			if l.copies == 1 {
				return
			}
			// After the power comes back the next write goes through.
			mid := (first + last) / 2
			torn := slices.Clone(before)
			copy(torn[:mid], after[:mid])
			files := slices.Clone(oldFiles)
			files[written] = torn
			e.restore(t, files)
			if err := u.SetTrial(ctx, B); err != nil {
				t.Fatal(err)
			}
			if st := status(t, u); !reflect.DeepEqual(st, newState) {
				t.Fatalf("set trial after the power cut: %+v, want %+v", st, newState)
			}
		})
	}
}

// fakeTool writes a shell script standing in for fw_printenv or fw_setenv.
// A child process writes it: a file this process had open for writing can
// be inherited, for a moment, by a child that a parallel test forks, and
// exec of the script would then fail with "text file busy".
func fakeTool(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("/bin/sh", "-c", `cat > "$1" && chmod 755 "$1"`, "sh", p)
	cmd.Stdin = strings.NewReader("#!/bin/sh\n" + body + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("writing %s: %v\n%s", name, err, out)
	}
	return p
}

func TestUBootToolFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, printenv, setenv, want string
	}{
		{name: "setenv fails", setenv: `echo "flash on fire" >&2; echo more >&2; exit 1`, want: "fw_setenv: exit status 1: flash on fire; more"},
		{name: "setenv killed", setenv: `kill -9 $$`, want: "signal: killed"},
		{name: "setenv ignores the script", setenv: `exit 0`, want: "after fw_setenv"},
		{name: "setenv endless stderr", setenv: `exec yes "no space left" >&2`, want: "no space left"},
		{name: "setenv missing", setenv: "/nonexistent/fw_setenv", want: "no such file"},
		{name: "printenv fails", printenv: `echo "Cannot read environment" >&2; exit 243`, want: "fw_printenv: exit status 243: Cannot read environment"},
		{name: "printenv garbage", printenv: `echo garbage`, want: "lines for"},
		{name: "printenv wrong names", printenv: `for i in $(seq 14); do echo x=1; done`, want: "is not"},
		{name: "printenv no newline", printenv: `printf bootcount=0`, want: "newline"},
		{name: "printenv endless", printenv: `exec yes dialtone_slot=a`, want: "more than"},
		{name: "printenv multi-line value", printenv: `printf 'bootcount=0\nbootlimit=3\nupgrade_available=0\ndialtone_slot=a\ndialtone_slot=b\n'`, want: "lines for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, 2)
			u := e.provision(t)
			writeImage(t, u, "1.1.0", "x")
			want := status(t, u)
			cfg := e.cfg
			switch {
			case strings.HasPrefix(tc.setenv, "/"):
				cfg.FwSetenv = tc.setenv
			case tc.setenv != "":
				cfg.FwSetenv = fakeTool(t, "fw_setenv", tc.setenv)
			default:
				cfg.FwPrintenv = fakeTool(t, "fw_printenv", tc.printenv)
			}
			fake := &UBoot{cfg: cfg.withDefaults()}
			var err error
			if tc.setenv != "" {
				// Forgetting slot b's info is an env write.
				_, err = fake.BeginInstall(t.Context())
			} else {
				_, err = fake.Status()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if len(err.Error()) > 2*maxStderr {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			if got := status(t, u); !reflect.DeepEqual(got, want) {
				t.Fatalf("state after the failure: %+v, want %+v", got, want)
			}
		})
	}
}

func TestUBootConfigRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  UBootConfig
	}{
		{"no partitions", UBootConfig{}},
		{"relative", UBootConfig{Partitions: map[string][2]string{"rootfs": {"p2", "/dev/p3"}}}},
		{"same in both slots", UBootConfig{Partitions: map[string][2]string{"rootfs": {"/dev/p2", "/dev/p2"}}}},
		{"shared", UBootConfig{Partitions: map[string][2]string{"rootfs": {"/dev/p2", "/dev/p3"}, "kernel": {"/dev/p1", "/dev/p3/"}}}},
		{"empty name", UBootConfig{Partitions: map[string][2]string{"": {"/dev/p2", "/dev/p3"}}}},
		{"negative cap", UBootConfig{MaxFileSize: -1, Partitions: map[string][2]string{"rootfs": {"/dev/p2", "/dev/p3"}}}},
	} {
		if _, err := OpenUBoot(t.Context(), tc.cfg); err == nil || !strings.Contains(err.Error(), "uboot config") {
			t.Errorf("%s: %v", tc.name, err)
		}
		if _, err := ProvisionUBoot(t.Context(), tc.cfg, Info{Model: "m", Version: "1"}); err == nil {
			t.Errorf("%s: provisioned", tc.name)
		}
	}
}

// The env variables are read strictly: a hand edit that leaves the boot
// state ambiguous is an error, not a guess.
func TestUBootStrictEnv(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	u := e.provision(t)
	for _, tc := range []struct{ name, value string }{
		{EnvSlot, "c"},
		{EnvCommitted, "B"},
		{EnvUpgrade, "yes"},
		{EnvBootCount, "-1"},
		{EnvBootCount, "0x2"},
		{EnvBootLimit, "0"},
		{EnvBootLimit, ""},
		{infoVar(A, "version"), ""},
		{infoVar(A, "installed"), "yesterday"},
		{infoVar(B, "sha256"), "ab"},
	} {
		snap := e.snapshot(t)
		if out, err := exec.Command("fw_setenv", "-c", e.cfg.EnvConfig, "--", tc.name, tc.value).CombinedOutput(); err != nil {
			t.Fatalf("fw_setenv: %v: %s", err, out)
		}
		if st, err := u.Status(); err == nil {
			t.Errorf("%s=%q accepted: %+v", tc.name, tc.value, st)
		}
		e.restore(t, snap)
	}
}

// TestUBootBlockDevice writes a payload to a loop device, as to a phone's
// partition: the size limit is the device's and nothing is truncated.
func TestUBootBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("no losetup")
	}
	t.Parallel()
	ctx := t.Context()
	e := newTestEnv(t, 2)
	const devSize = 64 << 10
	var devs, backing [2]string
	for i, s := range []string{A, B} {
		backing[i] = filepath.Join(e.dir, "disk."+s)
		if err := os.WriteFile(backing[i], bytes.Repeat([]byte{0xee}, devSize), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(losetup, "--find", "--show", backing[i]).Output()
		if err != nil {
			t.Skipf("losetup: %v", err)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
		devs[i] = dev
	}
	e.cfg.Partitions = map[string][2]string{"rootfs.img": devs}
	e.cfg.MaxFileSize = 1 // a file cap does not apply to a device
	u := e.provision(t)
	in, err := u.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Payload("rootfs.img", devSize+1); err == nil || !strings.Contains(err.Error(), "do not fit") {
		t.Fatalf("payload bigger than the device: %v", err)
	}
	content := bytes.Repeat([]byte("rootfs"), 1000)
	w, err := in.Payload("rootfs.img", int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := in.Finish(ctx, Info{Model: "m", Version: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(backing[1])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(content)], content) || len(got) != devSize || got[len(content)] != 0xee {
		t.Fatal("device content is not the payload followed by what was there")
	}
	if a, _ := os.ReadFile(backing[0]); !bytes.Equal(a, bytes.Repeat([]byte{0xee}, devSize)) {
		t.Fatal("slot a's device was written")
	}
	if err := u.SetTrial(ctx, B); err != nil {
		t.Fatal(err)
	}
}

func TestParsePrintenv(t *testing.T) {
	names := []string{"bootcount", "dialtone_slot"}
	for _, tc := range []struct {
		out  string
		want map[string]string
	}{
		{"bootcount=1\ndialtone_slot=b\n", map[string]string{"bootcount": "1", "dialtone_slot": "b"}},
		{"bootcount=\ndialtone_slot=a=b\n", map[string]string{"bootcount": "", "dialtone_slot": "a=b"}},
		{"bootcount=1\ndialtone_slot=b", nil},
		{"bootcount=1\n", nil},
		{"dialtone_slot=b\nbootcount=1\n", nil},
		{"bootcount=1\ndialtone_slot=b\nx=y\n", nil},
		{"bootcount1\ndialtone_slot=b\n", nil},
		{"", nil},
	} {
		got, err := parsePrintenv([]byte(tc.out), names)
		if (err == nil) != (tc.want != nil) || (tc.want != nil && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("parse %q: %v, %v; want %v", tc.out, got, err, tc.want)
		}
	}
}

func FuzzParsePrintenv(f *testing.F) {
	f.Add([]byte("bootcount=1\nbootlimit=3\nupgrade_available=1\ndialtone_slot=b\ndialtone_committed=a\ndialtone_rollback=\n"))
	f.Add([]byte("bootcount=\n"))
	f.Add([]byte("garbage"))
	names := envNames[:6]
	f.Fuzz(func(t *testing.T, out []byte) {
		e, err := parsePrintenv(out, names)
		if err != nil {
			return
		}
		// Whatever parses is exactly the output fw_printenv would print.
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "%s=%s\n", n, e[n])
		}
		if b.String() != string(out) {
			t.Fatalf("parsed %q as %v", out, e)
		}
	})
}

func TestSimulateBootloaderWithoutTrial(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	e.provision(t)
	before := e.snapshot(t)
	if booted, err := SimulateBootloader(t.Context(), e.cfg); err != nil || booted != A {
		t.Fatalf("booted %s, %v", booted, err)
	}
	if !slices.EqualFunc(before, e.snapshot(t), bytes.Equal) {
		t.Fatal("a boot without a trial wrote the env")
	}
}
