package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dialtone-dev/dialtone/agent/floor"
	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/agent/update"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/google/go-tpm/tpm2"
	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/mod/semver"
)

// openFloor opens the anti-rollback floor: in the TPM when --tpm names one,
// else in the state directory (insecure, and reported so).
func openFloor(o *runOptions, t *tpm.Shared, log *slog.Logger) (update.Floor, error) {
	if t == nil {
		log.Warn("no TPM: the anti-rollback floor lives in the state directory (insecure-floor)")
		return floor.NewFile(o.StateDir + "/floor.json"), nil
	}
	return floor.NewTPM(&tpm.NVSpace{TPM: t, Index: tpm2.TPMHandle(o.FloorIndex)})
}

// selfTestTimeout bounds an image's self-test.
const selfTestTimeout = 2 * time.Minute

// selfTest runs the new image's own health check on a trial boot: the
// payload named "selftest" (a shell script) when the image carries one. It
// runs only after the image passed every verification, as the image itself
// would on a phone after booting; its failure rolls the phone back.
func selfTest(ctx context.Context, slotDir string, log *slog.Logger) error {
	script := filepath.Join(slotDir, "selftest")
	if _, err := os.Stat(script); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, selfTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", script)
	cmd.Dir = slotDir
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	log.Info("image self-test", "err", err, "output", out.String())
	if err != nil {
		return fmt.Errorf("image self-test failed (%v): %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// limitedBuffer keeps the first 1 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 1024 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// desiredVersion is the server's desired version for this device, kept in
// the state directory so that it holds across restarts and offline spells.
type desiredVersion struct {
	path string
	// settled, when set, is closed once a retained command had its chance
	// to arrive; Version waits for it.
	settled <-chan struct{}
	mu      sync.Mutex
	cur     desiredFile
}

type desiredFile struct {
	Version string    `json:"version"`
	Time    time.Time `json:"time"` // of the command that set it
}

func openDesired(path string) (*desiredVersion, error) {
	d := &desiredVersion{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &d.cur)
	}
	if err != nil {
		return nil, fmt.Errorf("reading desired version %s: %w", path, err)
	}
	return d, nil
}

// Version returns the desired version, or "".
func (d *desiredVersion) Version() string {
	if d.settled != nil {
		<-d.settled
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur.Version
}

// Set records the desired version of a command issued at t; an older
// command (a stale retained message) changes nothing.
func (d *desiredVersion) Set(version string, t time.Time) (changed bool, err error) {
	if version != "" && !semver.IsValid("v"+version) {
		return false, fmt.Errorf("desired version %q is not a version", version)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.Before(d.cur.Time) || (version == d.cur.Version && !d.cur.Time.IsZero()) {
		return false, nil
	}
	next := desiredFile{Version: version, Time: t}
	b, _ := json.Marshal(next)
	if err := atomicfile.WriteFile(d.path, b, 0o600); err != nil {
		return false, err
	}
	d.cur = next
	return true, nil
}

// crashHook lets the crash tests kill the agent at a named step of the
// update flow: DIALTONE_AGENT_CRASH_AT=step sends the process SIGKILL there,
// a real kill that runs no deferred code. Unset, it does nothing.
func crashHook() func(string) {
	at := os.Getenv("DIALTONE_AGENT_CRASH_AT")
	if at == "" {
		return nil
	}
	return func(step string) {
		if step == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

// progressBar shows a download's progress on a terminal.
type progressBar struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	total int64
}

func newProgressBar(mode string) *progressBar {
	if mode == "never" || (mode == "auto" && !isatty.IsTerminal(os.Stderr.Fd())) {
		return nil
	}
	return &progressBar{}
}

func (p *progressBar) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil || p.total != total {
		p.bar = progressbar.DefaultBytes(total, "downloading")
		p.total = total
	}
	p.bar.Set64(done)
}

func (p *progressBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
	}
}
