package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

// buildSignedWith builds and signs a bundle for version whose payloads are
// a rootfs plus extra (name → content).
func buildSignedWith(t *testing.T, s *systest.Server, version string, extra map[string][]byte) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	rootfs := bytes.Repeat([]byte("rootfs of "+version+"\n"), 50_000)
	payloads := map[string][]byte{"rootfs.img": rootfs}
	for k, v := range extra {
		payloads[k] = v
	}
	args := []string{"firmware", "build", "--model", model, "--version", version, "--hardware", hw}
	for name, b := range payloads {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--payload", name+"="+filepath.Join(dir, name))
	}
	bundle := filepath.Join(dir, model+"-"+version+".tar")
	systest.MustRun(t, nil, bins.Server, append(args, "-o", bundle)...)
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", s.PublisherKey(), bundle)
	return bundle, rootfs
}

// TestAgentKilledAtEveryStep kills the agent with SIGKILL at each journaled
// step of an update and starts it again: it must end on the new image,
// committed, having resumed rather than restarted its download; and right
// after each kill no slot holding anything but verified bytes may be
// marked to boot.
func TestAgentKilledAtEveryStep(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	// A rootfs of several MiB so that a download is killed mid-way.
	bundle, _ := buildSignedWith(t, s, "1.1.0", map[string][]byte{"big.img": bytes.Repeat([]byte("0123456789abcdef"), 256<<10)})
	if r := publish(t, s, bundle); r.Code != 0 {
		t.Fatalf("publish exited %d", r.Code)
	}
	published := func(name string) string {
		// The payloads as built: rebuild them the way buildSignedWith did.
		switch name {
		case "rootfs.img":
			return strings.Repeat("rootfs of 1.1.0\n", 50_000)
		case "big.img":
			return strings.Repeat("0123456789abcdef", 256<<10)
		}
		return ""
	}
	resumed := regexp.MustCompile(`msg=downloading .*from=([1-9][0-9]*)`)
	for _, tc := range []struct {
		step string
		// wantExit is the restarted agent's exit: 0 when it still had to
		// install, 10 when the restart's boot checks committed the image
		// and the cycle that follows finds nothing newer.
		wantExit int
		// resumes: whether the restart's download must resume from a
		// non-zero offset; "any" where the kill may land after the whole
		// bundle arrived (the extraction trails the download).
		resumes string
	}{
		{"verified", 0, "no"},
		{"downloading", 0, "no"},
		{"mid-download", 0, "yes"},
		{"mid-extract", 0, "any"},
		{"downloaded", 0, "no"},
		{"installed", 0, "no"},
		{"trial", 10, "no"},
		{"booted", 10, "no"},
		{"committed", 10, "no"},
	} {
		t.Run(tc.step, func(t *testing.T) {
			p := systest.Provision(t, s, "crash-"+tc.step, model)
			r := p.OnceWith(t, s, model, hw, []string{"DIALTONE_AGENT_CRASH_AT=" + tc.step})
			if r.Code != -1 {
				t.Fatalf("agent with crash point %s exited %d; want it killed (-1)", tc.step, r.Code)
			}
			if j := p.Journal(t); !strings.HasPrefix(tc.step, "mid-") && j["step"] != tc.step {
				t.Fatalf("journal after the kill says %v, want step %s", j, tc.step)
			}
			// Invariant: a slot marked to boot holds exactly the published
			// payloads, or is the factory slot.
			st := p.BootState(t)
			tree := p.SlotTree(t)
			for _, sl := range []any{st["active"], st["committed"]} {
				if sl == "a" {
					continue // the factory image
				}
				for _, name := range []string{"rootfs.img", "big.img"} {
					if tree[fmt.Sprintf("%v/%s", sl, name)] != published(name) {
						t.Fatalf("slot %v is marked to boot (%v) but its %s is not the published payload", sl, st, name)
					}
				}
			}
			r = p.Once(t, s, model, hw)
			if r.Code != tc.wantExit {
				t.Fatalf("restarted agent exited %d, want %d", r.Code, tc.wantExit)
			}
			if got := resumed.MatchString(r.Stderr); tc.resumes != "any" && got != (tc.resumes == "yes") {
				t.Fatalf("download resumed from a non-zero offset: %v, want %s", got, tc.resumes)
			}
			st = p.BootState(t)
			if st["active"] != "b" || st["committed"] != "b" || st["trial"] != false {
				t.Fatalf("final boot state %v, want slot b committed", st)
			}
			tree = p.SlotTree(t)
			for _, name := range []string{"rootfs.img", "big.img"} {
				if tree["b/"+name] != published(name) {
					t.Fatalf("slot b %s differs from the published payload", name)
				}
			}
			if j := p.Journal(t); j["step"] != "done" {
				t.Fatalf("journal at the end: %v, want done", j)
			}
			floor, err := os.ReadFile(filepath.Join(p.StateDir, "floor.json"))
			if err != nil || !strings.Contains(string(floor), `"1.1.0"`) {
				t.Fatalf("anti-rollback floor after commit: %s, %v", floor, err)
			}
			if left, _ := filepath.Glob(filepath.Join(p.StateDir, "download", "*")); len(left) > 0 {
				t.Fatalf("download leftovers after commit: %v", left)
			}
			systest.Eventually(t, "the server saw the commit", func() (bool, string) {
				evs := systest.Events(t, s, p.ID)
				return systest.HasEvent(evs, "committed", "1.1.0", ""), fmt.Sprint(evs)
			})
		})
	}
}

// TestHealthCheckRollback publishes an image whose own self-test fails:
// the phone installs it, boots it on trial, rolls back to the previous
// slot, tells the server why, and does not try the same image again.
func TestHealthCheckRollback(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	good, goodRootfs := buildSignedWith(t, s, "1.1.0", nil)
	if r := publish(t, s, good); r.Code != 0 {
		t.Fatalf("publish 1.1.0 exited %d", r.Code)
	}
	p := systest.Provision(t, s, "phone-health", model)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("installing 1.1.0 exited %d", r.Code)
	}
	bad, _ := buildSignedWith(t, s, "1.2.0", map[string][]byte{
		"selftest": []byte("echo 'sip stack did not start: no route to registrar' >&2\nexit 3\n"),
	})
	if r := publish(t, s, bad); r.Code != 0 {
		t.Fatalf("publish 1.2.0 exited %d", r.Code)
	}
	r := p.Once(t, s, model, hw)
	if r.Code != 21 {
		t.Fatalf("agent exited %d, want 21 (rolled back)", r.Code)
	}
	st := p.BootState(t)
	if st["active"] != "b" || st["committed"] != "b" || st["trial"] != false ||
		!strings.Contains(fmt.Sprint(st["last_rollback"]), "sip stack did not start") {
		t.Fatalf("boot state after the failed trial: %v", st)
	}
	if got := p.SlotTree(t)["b/rootfs.img"]; got != string(goodRootfs) {
		t.Fatal("the committed slot's rootfs changed")
	}
	systest.Eventually(t, "the server knows why the phone rolled back", func() (bool, string) {
		evs := systest.Events(t, s, p.ID)
		ds := devices(t, s)
		d := ds[p.ID]
		ok := systest.HasEvent(evs, "rolled-back", "1.2.0", "sip stack did not start") &&
			d.Version == "1.1.0" && d.UpdateState == "rolled-back"
		return ok, fmt.Sprintf("%+v %v", d, evs)
	})
	// The failed image is not tried again.
	if r := p.Once(t, s, model, hw); r.Code != 10 {
		t.Fatalf("next cycle exited %d, want 10 (the failed 1.2.0 is not retried)", r.Code)
	}
}

// TestMaintenanceWindow: outside its maintenance window the phone installs
// but does not switch slots (exit 11); inside it, it activates the image
// already installed without downloading it again.
func TestMaintenanceWindow(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	bundle, rootfs := buildSignedWith(t, s, "1.1.0", nil)
	if r := publish(t, s, bundle); r.Code != 0 {
		t.Fatalf("publish exited %d", r.Code)
	}
	p := systest.Provision(t, s, "phone-window", model)
	now := time.Now()
	hhmm := func(d time.Duration) string { return now.Add(d).Format("15:04") }
	closed := hhmm(2*time.Hour) + "-" + hhmm(3*time.Hour)
	open := hhmm(-time.Hour) + "-" + hhmm(time.Hour)

	r := p.OnceWith(t, s, model, hw, nil, "--maintenance-window", closed)
	if r.Code != 11 {
		t.Fatalf("outside the window: exit %d, want 11 (deferred)", r.Code)
	}
	st := p.BootState(t)
	if st["active"] != "a" || st["trial"] != false {
		t.Fatalf("outside the window the phone switched slots: %v", st)
	}
	if got := p.SlotTree(t)["b/rootfs.img"]; got != string(rootfs) {
		t.Fatal("the image was not installed into slot b while waiting")
	}
	r = p.OnceWith(t, s, model, hw, nil, "--maintenance-window", open)
	if r.Code != 0 {
		t.Fatalf("inside the window: exit %d, want 0", r.Code)
	}
	if strings.Contains(r.Stderr, "msg=downloading") || !strings.Contains(r.Stderr, "already installed") {
		t.Fatal("the deferred image was downloaded again instead of activated")
	}
	if st := p.BootState(t); st["active"] != "b" || st["committed"] != "b" {
		t.Fatalf("inside the window: boot state %v", st)
	}
	systest.Eventually(t, "the server saw the deferral", func() (bool, string) {
		evs := systest.Events(t, s, p.ID)
		return systest.HasEvent(evs, "deferred", "1.1.0", "outside the maintenance window"), fmt.Sprint(evs)
	})
}
