package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// rssLimitMiB is the most a server or publisher may hold while a bundle
// streams through it.
const rssLimitMiB = 64

// benchPublish publishes bundle to a fresh dev server and reports the peak
// RSS of both processes. The server's peak is VmHWM over its whole life
// (start-up included), read once the publish is answered; the client's is
// its rusage maximum, taken by the wrapper in ./rusage (see there why).
func benchPublish(cfg config, bundle string) ([]row, error) {
	fi, err := os.Stat(bundle)
	if err != nil {
		return nil, err
	}
	bundleMiB := float64(fi.Size()) / (1 << 20)
	logf("== publish: peak RSS while publishing the %.0f MiB bundle (limit %d MiB each)", bundleMiB, rssLimitMiB)
	dir := filepath.Join(cfg.workdir, "publish")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) // the server's copy of the bundle is in there
	// Run an installed-like copy of the binary. A binary fresh from the
	// external linker (cgo) sits in the page cache in large folios, and
	// every page fault then maps a whole folio: the same bytes show ~17 MiB
	// more RssFile than once copied, which is about the build, not about
	// how a publish uses memory.
	bin := filepath.Join(dir, "dialtone")
	if err := copyFile(cfg.dialtone, bin, 0o755); err != nil {
		return nil, err
	}
	cfg.dialtone = bin
	srv, err := startDevServer(cfg.dialtone, filepath.Join(dir, "server"), filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	key := filepath.Join(srv.dataDir, "keys", "publisher.key")
	env := append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	if _, _, _, err := runTimed(env, cfg.dialtone, "firmware", "sign", "--key", key, bundle); err != nil {
		return nil, err
	}
	idle, err := procStatusKiB(srv.pid(), "VmHWM")
	if err != nil {
		return nil, err
	}

	// The client runs under the rusage wrapper (see there why) for an
	// exact peak; both processes are also sampled while the upload runs,
	// to show what the peak is made of.
	if cfg.rusage == "" {
		return nil, fmt.Errorf("-rusage: the wrapper is required (go build -o DIR/rusage ./hack/bench/rusage)")
	}
	pidFile, rusageFile := filepath.Join(dir, "client.pid"), filepath.Join(dir, "client.rusage")
	cmd := exec.Command(cfg.rusage, "-pid-file", pidFile, "-out", rusageFile, "--",
		cfg.dialtone, "firmware", "publish", "--key", key, "--no-progress", bundle)
	cmd.Env = srv.clientEnv()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var srvMax, cliMax rssSample
	cliPID := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			srvMax.update(srv.pid())
			if cliPID == 0 {
				if b, err := os.ReadFile(pidFile); err == nil {
					cliPID, _ = strconv.Atoi(string(b))
				}
			}
			if cliPID != 0 {
				cliMax.update(cliPID)
			}
		}
	}
	elapsed := time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("dialtone firmware publish: %w\n%s", err, out.String())
	}
	srvPeak, err := procStatusKiB(srv.pid(), "VmHWM")
	if err != nil {
		return nil, err
	}
	var cliPeak, wrapper int64
	if b, err := os.ReadFile(rusageFile); err != nil {
		return nil, err
	} else if _, err := fmt.Sscan(string(b), &cliPeak, &wrapper); err != nil {
		return nil, fmt.Errorf("reading %s: %w", rusageFile, err)
	}
	logf("   published in %s (%.0f MiB/s end to end: client verify pass, upload, server hash+write, server verify pass, fsync)",
		elapsed.Round(time.Millisecond), bundleMiB/elapsed.Seconds())
	logf("   server: VmHWM %.1f MiB before the publish, %.1f MiB after; sampled every 10 ms during it: %s", kib2mib(idle), kib2mib(srvPeak), srvMax)
	logf("   client: peak RSS %.1f MiB (rusage, through a wrapper of %.1f MiB); sampled: %s", kib2mib(cliPeak), kib2mib(wrapper), cliMax)
	limit := float64(rssLimitMiB) / bundleMiB
	target := fmt.Sprintf("< %d MiB", rssLimitMiB)
	return []row{
		{name: "dialtone server peak RSS (VmHWM), publish", value: kib2mib(srvPeak), ref: bundleMiB, unit: "MiB", refName: "bundle",
			ratio: kib2mib(srvPeak) / bundleMiB, max: limit, target: target},
		{name: "dialtone firmware publish peak RSS", value: kib2mib(cliPeak), ref: bundleMiB, unit: "MiB", refName: "bundle",
			ratio: kib2mib(cliPeak) / bundleMiB, max: limit, target: target},
	}, nil
}

func kib2mib(k int64) float64 { return float64(k) / 1024 }

// rssSample keeps the largest of each resident-memory figure seen: anon
// is the heap, stacks and runtime; file is the mapped binary's pages.
type rssSample struct{ rss, anon, file, hwm int64 }

func (s *rssSample) update(pid int) {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"VmRSS", &s.rss}, {"RssAnon", &s.anon}, {"RssFile", &s.file}, {"VmHWM", &s.hwm}} {
		if v, err := procStatusKiB(pid, f.name); err == nil {
			*f.v = max(*f.v, v)
		}
	}
}

func (s rssSample) String() string {
	return fmt.Sprintf("largest VmRSS %.1f MiB (RssAnon %.1f, RssFile %.1f), VmHWM %.1f MiB",
		kib2mib(s.rss), kib2mib(s.anon), kib2mib(s.file), kib2mib(s.hwm))
}

// copyFile copies src to a new file dst with write(2), as an install does.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(struct{ io.Writer }{out}, struct{ io.Reader }{in}); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
