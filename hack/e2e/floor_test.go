package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}

// TestRestoredStateDirCannotLowerTheFloor: an attacker with the phone's
// disk saves its state directory while 1.1.0 waits for its trial boot, lets
// the phone move on to 1.2.0, then puts the old state back. With the floor
// in the TPM (swtpm) the old image is refused at its trial boot and the
// phone climbs back to 1.2.0; with the floor in the state directory the
// same restore succeeds, which is why such a phone reports insecure-floor.
func TestRestoredStateDirCannotLowerTheFloor(t *testing.T) {
	buildBinaries(t)

	for _, tc := range []struct {
		name        string
		tpm         bool
		wantRestore int // exit of the first run after the restore
		wantVersion string
	}{
		// Refused at the trial boot: back on the factory slot.
		{name: "tpm floor", tpm: true, wantRestore: 21, wantVersion: "1.0.0"},
		// 1.1.0 commits again (the attack worked), then the same cycle
		// updates to 1.2.0.
		{name: "state-dir floor", tpm: false, wantRestore: 0, wantVersion: "1.2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := systest.StartServer(t, bins)
			b110, _ := buildSignedWith(t, s, "1.1.0", nil)
			if r := publish(t, s, b110); r.Code != 0 {
				t.Fatalf("publish 1.1.0 exited %d", r.Code)
			}
			var args []string
			if tc.tpm {
				args = []string{"--tpm", testutil.StartSwtpm(t).Spec}
			}
			p := systest.Provision(t, s, fmt.Sprintf("phone-floor-%v", tc.tpm), model)
			if r := p.OnceWith(t, s, model, hw, []string{"DIALTONE_AGENT_CRASH_AT=trial"}, args...); r.Code != -1 {
				t.Fatalf("agent with a crash at trial exited %d", r.Code)
			}
			saved := filepath.Join(t.TempDir(), "saved")
			copyDir(t, p.StateDir, saved)
			if r := p.OnceWith(t, s, model, hw, nil, args...); r.Code != 10 {
				t.Fatalf("committing 1.1.0 exited %d, want 10", r.Code)
			}
			b120, _ := buildSignedWith(t, s, "1.2.0", nil)
			if r := publish(t, s, b120); r.Code != 0 {
				t.Fatalf("publish 1.2.0 exited %d", r.Code)
			}
			if r := p.OnceWith(t, s, model, hw, nil, args...); r.Code != 0 {
				t.Fatalf("installing 1.2.0 exited %d, want 0", r.Code)
			}

			copyDir(t, saved, p.StateDir) // the attack
			r := p.OnceWith(t, s, model, hw, nil, args...)
			if r.Code != tc.wantRestore {
				t.Fatalf("after the restore the agent exited %d, want %d", r.Code, tc.wantRestore)
			}
			st := p.BootState(t)
			slots, _ := st["slots"].(map[string]any)
			active, _ := slots[fmt.Sprint(st["active"])].(map[string]any)
			if active["version"] != tc.wantVersion {
				t.Fatalf("after the restore the phone runs %v, want %s (%v)", active["version"], tc.wantVersion, st)
			}
			if !tc.tpm {
				systest.Eventually(t, "1.1.0 committed a second time", func() (bool, string) {
					n := 0
					evs := systest.Events(t, s, p.ID)
					for _, e := range evs {
						if e.Type == "committed" && e.Version == "1.1.0" {
							n++
						}
					}
					return n == 2, fmt.Sprint(evs)
				})
				return
			}
			systest.Eventually(t, "the server saw the refused trial", func() (bool, string) {
				evs := systest.Events(t, s, p.ID)
				return systest.HasEvent(evs, "security", "1.1.0", "below the anti-rollback floor 1.2.0"), fmt.Sprint(evs)
			})
			// The phone climbs back to 1.2.0 by itself.
			if r := p.OnceWith(t, s, model, hw, nil, args...); r.Code != 0 {
				t.Fatalf("recovering to 1.2.0 exited %d, want 0", r.Code)
			}
		})
	}
}
