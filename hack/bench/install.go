package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Agent memory limits of issue 4.
const (
	agentInstallRSSMiB = 25
	agentIdleRSSMiB    = 15
)

// benchInstall measures a phone installing the bundle end to end: `dialtone-
// agent --once` on a fresh state directory against a dev server (TUF
// refresh, download with hashing, publisher signature, extraction into the
// slot with the payload hashes, fsyncs, trial boot, health checks, commit),
// against `curl -o /dev/null` of the same target URL followed by sha256sum
// of the same file. It also takes the agent's peak RSS during the install
// (rusage) and its RSS idle in daemon mode once its first check is done.
func benchInstall(cfg config, bundle string) ([]row, error) {
	if cfg.agent == "" || cfg.rusage == "" {
		return nil, fmt.Errorf("-agent and -rusage are required")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		return nil, fmt.Errorf("curl is required (make deps): %w", err)
	}
	fi, err := os.Stat(bundle)
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	logf("== install: dialtone-agent --once installing the %.0f MiB bundle, %d interleaved rounds, against curl -o /dev/null + sha256sum", float64(size)/(1<<20), cfg.installRounds)
	dir := filepath.Join(cfg.workdir, "install")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	agent := filepath.Join(dir, "dialtone-agent")
	if err := copyFile(cfg.agent, agent, 0o755); err != nil {
		return nil, err
	}
	srv, err := startDevServer(cfg.dialtone, filepath.Join(dir, "server"), filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	mqtt, err := srv.mqttAddr()
	if err != nil {
		return nil, err
	}
	key := filepath.Join(srv.dataDir, "keys", "publisher.key")
	env := append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	if _, _, _, err := runTimed(env, cfg.dialtone, "firmware", "sign", "--key", key, bundle); err != nil {
		return nil, err
	}
	if _, _, _, err := runTimed(srv.clientEnv(), cfg.dialtone, "firmware", "publish", "--key", key, "--no-progress", bundle); err != nil {
		return nil, err
	}
	_, sum, err := sha256sum(bundle)
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("%s/tuf/targets/firmware/%s/%s.%s", srv.url, benchModel, sum, filepath.Base(bundle))
	root := filepath.Join(srv.dataDir, "tuf", "metadata", "1.root.json")
	agentArgs := func(state string) []string {
		return []string{"--server", srv.url, "--server-ca", srv.ca, "--broker", "mqtt://" + mqtt, "--state-dir", state,
			"--model", benchModel, "--hardware", benchHardware, "--progress", "never", "--log-level", "warn"}
	}
	provision := func(state string) error {
		_, _, _, err := runTimed(env, agent, "provision", "--root", root, "--state-dir", state,
			"--model", benchModel, "--factory-version", "0.0.1", "--device-id", "bench-"+filepath.Base(state))
		return err
	}

	var ref, sub, ratio, rss []float64
	var lastState string
	for round := range cfg.installRounds {
		state := filepath.Join(dir, fmt.Sprintf("phone-%d", round))
		if err := provision(state); err != nil {
			return nil, err
		}
		runRef := func() error {
			t0 := time.Now()
			if _, _, _, err := runTimed(env, "curl", "-sSf", "--cacert", srv.ca, "-o", "/dev/null", url); err != nil {
				return err
			}
			if _, _, err := sha256sum(bundle); err != nil {
				return err
			}
			ref = append(ref, time.Since(t0).Seconds())
			return nil
		}
		runSub := func() error {
			out := filepath.Join(dir, "rusage.out")
			args := append([]string{"-out", out, "--", agent, "--once"}, agentArgs(state)...)
			d, _, log, err := runTimed(env, cfg.rusage, args...)
			if err != nil {
				return fmt.Errorf("agent install: %w\n%s", err, log)
			}
			var peak, wrapper int64
			b, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			if _, err := fmt.Sscan(string(b), &peak, &wrapper); err != nil {
				return fmt.Errorf("reading %s: %w", out, err)
			}
			sub = append(sub, d.Seconds())
			rss = append(rss, kib2mib(peak))
			return nil
		}
		// Each measurement starts with nothing left to write back from the
		// last round: an install ends with an fsync, and it should pay for
		// its own bytes only.
		syncDisk := func(f func() error) func() error {
			return func() error { syscall.Sync(); return f() }
		}
		runRef, runSub = syncDisk(runRef), syncDisk(runSub)
		first, second := runRef, runSub
		if round%2 == 1 {
			first, second = runSub, runRef
		}
		if err := first(); err != nil {
			return nil, err
		}
		if err := second(); err != nil {
			return nil, err
		}
		ratio = append(ratio, ref[round]/sub[round])
		logf("   round %d: curl+sha256sum %5.2fs (%4.0f MiB/s) | agent install %5.2fs (%4.0f MiB/s) ratio %.2f | agent peak RSS %.1f MiB",
			round+1, ref[round], float64(size)/(1<<20)/ref[round], sub[round], float64(size)/(1<<20)/sub[round], ratio[round], rss[round])
		if lastState != "" {
			os.RemoveAll(lastState)
		}
		lastState = state
	}

	idle, err := idleRSS(agent, agentArgs(lastState))
	if err != nil {
		return nil, err
	}
	logf("   idle agent (daemon mode, first check done, nothing to install): VmRSS %.1f MiB", idle)
	mibps := func(s float64) float64 { return float64(size) / (1 << 20) / s }
	sizeMiB := float64(size) / (1 << 20)
	return []row{
		{name: fmt.Sprintf("dialtone-agent install, %.0f MiB", sizeMiB), value: mibps(median(sub)), ref: mibps(median(ref)), unit: "MiB/s",
			refName: "curl + sha256sum", ratio: median(ratio), min: 0.7, rounds: ratio},
		{name: "dialtone-agent peak RSS, install", value: median(rss), ref: agentInstallRSSMiB, unit: "MiB", refName: "limit",
			ratio: median(rss) / agentInstallRSSMiB, max: 1, target: fmt.Sprintf("< %d MiB", agentInstallRSSMiB)},
		{name: "dialtone-agent RSS, idle", value: idle, ref: agentIdleRSSMiB, unit: "MiB", refName: "limit",
			ratio: idle / agentIdleRSSMiB, max: 1, target: fmt.Sprintf("< %d MiB", agentIdleRSSMiB)},
	}, nil
}

// idleRSS runs the agent as a daemon until its first check found nothing
// to do, lets it settle, and reads its VmRSS.
func idleRSS(agent string, args []string) (float64, error) {
	cmd := exec.Command(agent, append(args[:len(args):len(args)], "--log-level", "info", "--interval", "1h")...)
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "no newer firmware") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("idle agent: no completed check within 60s")
	}
	time.Sleep(3 * time.Second)
	kib, err := procStatusKiB(cmd.Process.Pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return kib2mib(kib), nil
}

// mqttAddr reads the broker address the dev server chose.
func (s *devServer) mqttAddr() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "server.json"))
	if err != nil {
		return "", err
	}
	var a struct{ MQTT string }
	if err := json.Unmarshal(b, &a); err != nil || a.MQTT == "" {
		return "", fmt.Errorf("server.json names no MQTT address: %s", b)
	}
	return a.MQTT, nil
}
