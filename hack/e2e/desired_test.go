package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// TestDesiredVersion: an operator names the version a phone should run.
// A version below the phone's anti-rollback floor is refused as a
// downgrade and reported; one from another channel is installed; once the
// desired version is withdrawn the phone follows its channel again. The
// server keeps desired versions across its restarts.
func TestDesiredVersion(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	for _, v := range []string{"1.1.0", "1.2.0"} {
		b, _ := buildSignedWith(t, s, v, nil)
		if r := publish(t, s, b); r.Code != 0 {
			t.Fatalf("publish %s exited %d", v, r.Code)
		}
	}
	beta, _ := buildSignedWith(t, s, "1.3.0", nil)
	if r := systest.Run(t, s.ClientEnv(), bins.Server, "firmware", "publish", "--key", filepath.Join(s.DataDir, "keys", "publisher.key"),
		"--no-progress", "--channel", "beta", beta); r.Code != 0 {
		t.Fatalf("publish 1.3.0 to beta exited %d", r.Code)
	}
	p := systest.Provision(t, s, "phone-desired", model)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("install 1.2.0 exited %d", r.Code)
	}
	desire := func(args ...string) systest.Result {
		return systest.Run(t, s.ClientEnv(), bins.Server, append([]string{"devices", "desire", p.ID}, args...)...)
	}
	if r := desire("not-a-version"); r.Code != 2 {
		t.Fatalf("desire with a bad version exited %d, want 2", r.Code)
	}
	if r := systest.Run(t, s.ClientEnv(), bins.Server, "devices", "desire", "no-such-phone", "1.1.0"); r.Code == 0 {
		t.Fatal("desire for an unknown device succeeded")
	}

	// A downgrade below the floor (1.2.0) is refused.
	if r := desire("1.1.0"); r.Code != 0 {
		t.Fatalf("desire 1.1.0 exited %d", r.Code)
	}
	if r := p.Once(t, s, model, hw); r.Code != 20 {
		t.Fatalf("agent told to go below its floor exited %d, want 20 (refused)", r.Code)
	}
	if v := activeVersion(t, p); v != "1.2.0" {
		t.Fatalf("after the refused downgrade the phone runs %s", v)
	}
	systest.Eventually(t, "the server saw the refused downgrade", func() (bool, string) {
		evs := systest.Events(t, s, p.ID)
		return systest.HasEvent(evs, "security", "1.1.0", "below the anti-rollback floor 1.2.0"), fmt.Sprint(evs)
	})

	// Another channel's version, by name; kept across a server restart.
	if r := desire("1.3.0"); r.Code != 0 {
		t.Fatalf("desire 1.3.0 exited %d", r.Code)
	}
	s = s.Restart(t)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("agent told to run 1.3.0 (beta) exited %d, want 0", r.Code)
	}
	if v := activeVersion(t, p); v != "1.3.0" {
		t.Fatalf("the phone runs %s, want 1.3.0", v)
	}

	// Withdrawn: the phone follows stable again, where nothing is newer.
	if r := desire("--withdraw"); r.Code != 0 {
		t.Fatalf("withdraw exited %d", r.Code)
	}
	if r := p.Once(t, s, model, hw); r.Code != 10 {
		t.Fatalf("after the withdrawal the agent exited %d, want 10", r.Code)
	}
}

func activeVersion(t *testing.T, p *systest.Phone) string {
	t.Helper()
	st := p.BootState(t)
	slots, _ := st["slots"].(map[string]any)
	active, _ := slots[fmt.Sprint(st["active"])].(map[string]any)
	return fmt.Sprint(active["version"])
}

// TestWithdrawnDesiredVersionStopsDownload: a phone running as a daemon
// downloads the desired version from a mirror that stalls; when the
// operator withdraws it, the download stops at once (not at the idle
// timeout) and the phone goes back to its channel, its slots untouched.
func TestWithdrawnDesiredVersionStopsDownload(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	beta, _ := buildSignedWith(t, s, "1.3.0", nil)
	if r := systest.Run(t, s.ClientEnv(), bins.Server, "firmware", "publish", "--key", s.PublisherKey(),
		"--no-progress", "--channel", "beta", beta); r.Code != 0 {
		t.Fatalf("publish 1.3.0 to beta exited %d", r.Code)
	}
	p := systest.Provision(t, s, "phone-withdraw", model)
	// The phone must be known to the server before it can be steered.
	if r := p.Once(t, s, model, hw); r.Code != 10 {
		t.Fatalf("first check exited %d, want 10", r.Code)
	}
	before := p.SlotTree(t)
	if r := systest.Run(t, s.ClientEnv(), bins.Server, "devices", "desire", p.ID, "1.3.0"); r.Code != 0 {
		t.Fatalf("desire exited %d", r.Code)
	}
	tr := startTrickler(t, s)
	var logs testutil.SyncBuffer
	cmd := exec.Command(bins.Agent, "--server", tr.url, "--broker", s.Broker(), "--state-dir", p.StateDir,
		"--model", model, "--hardware", hw, "--download-idle-timeout", "60s", "--interval", "1h")
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	systest.Eventually(t, "the daemon is downloading 1.3.0 from the stalling mirror", func() (bool, string) {
		return tr.stalls.Load() > 0, ""
	})
	withdrawn := time.Now()
	if r := systest.Run(t, s.ClientEnv(), bins.Server, "devices", "desire", p.ID, "--withdraw"); r.Code != 0 {
		t.Fatalf("withdraw exited %d", r.Code)
	}
	systest.Eventually(t, "the daemon gave up the download and followed its channel", func() (bool, string) {
		l := logs.String()
		i := strings.Index(l, "context canceled")
		return i >= 0 && strings.Contains(l[i:], "no newer firmware"), ""
	})
	if took := time.Since(withdrawn); took > 20*time.Second {
		t.Fatalf("the download stopped %s after the withdrawal", took)
	}
	if after := p.SlotTree(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("slots changed")
	}
}
