package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/internal/systest"
)

// ubootPhone is a phone on the uboot backend: a redundant U-Boot
// environment in two files, and a partition file per payload and slot.
type ubootPhone struct {
	id, stateDir string
	cfg          slot.UBootConfig
	flags        []string
}

func newUBootPhone(t *testing.T, s *systest.Server, id string) *ubootPhone {
	t.Helper()
	dir := t.TempDir()
	var conf strings.Builder
	for i := range 2 {
		env := filepath.Join(dir, fmt.Sprintf("uboot%d.env", i))
		if err := os.WriteFile(env, make([]byte, 0x4000), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "%s 0x0000 0x4000\n", env)
	}
	cfgPath := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(cfgPath, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	defEnv, err := filepath.Abs(filepath.Join("..", "..", "agent", "slot", "testdata", "u-boot-initial-env"))
	if err != nil {
		t.Fatal(err)
	}
	p := &ubootPhone{id: id, stateDir: filepath.Join(dir, "state"),
		cfg: slot.UBootConfig{EnvConfig: cfgPath, DefaultEnv: defEnv, Partitions: map[string][2]string{}}}
	p.flags = []string{"--slot", "uboot", "--uboot-env-config", cfgPath, "--uboot-default-env", defEnv}
	for _, name := range []string{"rootfs.img", "kernel.bin"} {
		a, b := filepath.Join(dir, name+".a"), filepath.Join(dir, name+".b")
		for _, f := range []string{a, b} {
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		p.cfg.Partitions[name] = [2]string{a, b}
		p.flags = append(p.flags, "--uboot-partition", name+"="+a+","+b)
	}
	systest.MustRun(t, nil, bins.Agent, append([]string{"provision", "--root", s.RootPath(), "--state-dir", p.stateDir,
		"--model", model, "--factory-version", "1.0.0", "--device-id", id}, p.flags...)...)
	return p
}

func (p *ubootPhone) once(t *testing.T, s *systest.Server) systest.Result {
	t.Helper()
	return systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, append([]string{"--once", "--server", s.URL(), "--server-ca", s.CA,
		"--broker", s.Broker(), "--state-dir", p.stateDir, "--model", model, "--hardware", hw, "--reboot-command", "true"}, p.flags...)...)
}

func (p *ubootPhone) status(t *testing.T) slot.Status {
	t.Helper()
	u, err := slot.OpenUBoot(context.Background(), p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := u.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestUBootUpdate runs the agent on the uboot backend against the real
// server: it writes the payloads into slot B's partitions and sets a trial
// in the U-Boot environment; the agent restarted before the reboot does not
// commit; after the (simulated) bootloader started slot B it commits. A
// second image whose trial never reaches the agent's checks comes back to
// slot B when the boot counter runs out, and the server hears why.
func TestUBootUpdate(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	kernel := bytes.Repeat([]byte("kernel 1.1.0\n"), 1000)
	b110, rootfs := buildSignedWith(t, s, "1.1.0", map[string][]byte{"kernel.bin": kernel})
	if r := publish(t, s, b110); r.Code != 0 {
		t.Fatalf("publish exited %d", r.Code)
	}
	p := newUBootPhone(t, s, "phone-uboot")
	if r := p.once(t, s); r.Code != 0 {
		t.Fatalf("install exited %d, want 0", r.Code)
	}
	if st := p.status(t); st.Active != slot.B || !st.Trial || st.Committed != slot.A {
		t.Fatalf("after install: %+v, want slot b on trial", st)
	}
	for name, want := range map[string][]byte{"rootfs.img": rootfs, "kernel.bin": kernel} {
		got, err := os.ReadFile(p.cfg.Partitions[name][1])
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("slot b's %s partition does not hold the payload (err %v)", name, err)
		}
	}
	// Restarted without a reboot: the trial has not run, nothing commits.
	if r := p.once(t, s); r.Code != 11 || !strings.Contains(r.Stderr, "reboot pending") {
		t.Fatalf("agent restarted before the reboot exited %d, want 11 (reboot pending)", r.Code)
	}
	ctx := context.Background()
	if booted, err := slot.SimulateBootloader(ctx, p.cfg); err != nil || booted != slot.B {
		t.Fatalf("bootloader booted %q, %v; want b", booted, err)
	}
	if r := p.once(t, s); r.Code != 10 {
		t.Fatalf("agent on the trial boot exited %d, want 10 (committed, nothing newer)", r.Code)
	}
	if st := p.status(t); st.Active != slot.B || st.Trial || st.Committed != slot.B {
		t.Fatalf("after the trial: %+v, want slot b committed", st)
	}

	b120, _ := buildSignedWith(t, s, "1.2.0", map[string][]byte{"kernel.bin": []byte("kernel 1.2.0")})
	if r := publish(t, s, b120); r.Code != 0 {
		t.Fatalf("publish 1.2.0 exited %d", r.Code)
	}
	if r := p.once(t, s); r.Code != 0 {
		t.Fatalf("install 1.2.0 exited %d", r.Code)
	}
	// The image hangs before the agent runs: the bootloader counts boots
	// until the limit, then boots the committed slot.
	var booted string
	for range 4 {
		var err error
		if booted, err = slot.SimulateBootloader(ctx, p.cfg); err != nil {
			t.Fatal(err)
		}
	}
	if booted != slot.B {
		t.Fatalf("after the boot limit the bootloader booted %s, want b", booted)
	}
	if r := p.once(t, s); r.Code != 21 {
		t.Fatalf("agent after the fallback exited %d, want 21 (rolled back)", r.Code)
	}
	if st := p.status(t); st.Active != slot.B || st.Trial || st.Slots[slot.B].Version != "1.1.0" {
		t.Fatalf("after the fallback: %+v", st)
	}
	systest.Eventually(t, "the server heard why 1.2.0 rolled back", func() (bool, string) {
		evs := systest.Events(t, s, p.id)
		return systest.HasEvent(evs, "rolled-back", "1.2.0", "did not commit"), fmt.Sprint(evs)
	})
}
