// Package slot owns the phone's A/B image slots: which one boots, which one
// takes the next install, and the trial boot that either commits a new image
// or falls back to the previous one.
//
// The dir backend keeps each slot as a folder and its boot state in a JSON
// file; a "reboot" is the agent starting again. It runs the whole update flow
// in development and tests. Every change is an atomic file replace, so a
// crash at any point leaves either the old or the new boot state.
package slot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// Names of the two slots.
const (
	A = "a"
	B = "b"
)

// DefaultBootLimit is how many trial boots a new image gets before the
// previous slot boots again.
const DefaultBootLimit = 3

// ErrNoSlots means the state directory was never provisioned.
var ErrNoSlots = errors.New("slots not provisioned")

// Info describes the image in a slot.
type Info struct {
	Model     string    `json:"model"`
	Version   string    `json:"version"`
	SHA256    string    `json:"sha256,omitempty"`
	Installed time.Time `json:"installed"`
}

// Status is the boot state.
type Status struct {
	Active    string          `json:"active"`    // the slot that boots
	Committed string          `json:"committed"` // the last slot known good
	Trial     bool            `json:"trial"`     // Active is on a trial boot
	Attempts  int             `json:"attempts"`  // trial boots so far
	BootLimit int             `json:"boot_limit"`
	Slots     map[string]Info `json:"slots"`
	// LastRollback says why the last trial ended on the previous slot.
	LastRollback string `json:"last_rollback,omitempty"`
}

// Other returns the slot that is not s.
func Other(s string) string {
	if s == A {
		return B
	}
	return A
}

// Dir is the folder-backed slot store.
type Dir struct {
	root string
}

// ProvisionDir creates the slot folders with factory in slot A, committed.
// It refuses to overwrite existing slots.
func ProvisionDir(root string, factory Info) (*Dir, error) {
	d := &Dir{root: root}
	if _, err := os.Stat(d.statePath()); err == nil {
		return nil, fmt.Errorf("provisioning slots in %s: %w", root, fs.ErrExist)
	}
	for _, s := range []string{A, B} {
		if err := os.MkdirAll(filepath.Join(root, s), 0o755); err != nil {
			return nil, fmt.Errorf("provisioning slots: %w", err)
		}
	}
	if factory.Installed.IsZero() {
		factory.Installed = time.Now().UTC().Truncate(time.Second)
	}
	st := Status{Active: A, Committed: A, BootLimit: DefaultBootLimit, Slots: map[string]Info{A: factory}}
	if err := d.save(st); err != nil {
		return nil, err
	}
	return d, nil
}

// OpenDir opens provisioned slots.
func OpenDir(root string) (*Dir, error) {
	d := &Dir{root: root}
	if _, err := os.Stat(d.statePath()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (run dialtone-agent provision)", ErrNoSlots, root)
	}
	if _, err := d.Status(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Dir) statePath() string { return filepath.Join(d.root, "boot.json") }

// Path is the folder of slot s.
func (d *Dir) Path(s string) string { return filepath.Join(d.root, s) }

// Status reads the boot state.
func (d *Dir) Status() (Status, error) {
	b, err := os.ReadFile(d.statePath())
	if err != nil {
		return Status{}, fmt.Errorf("reading boot state: %w", err)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return Status{}, fmt.Errorf("parsing boot state: %w", err)
	}
	if (st.Active != A && st.Active != B) || (st.Committed != A && st.Committed != B) {
		return Status{}, fmt.Errorf("boot state names unknown slots %q/%q", st.Active, st.Committed)
	}
	if st.Slots == nil {
		st.Slots = map[string]Info{}
	}
	if st.BootLimit <= 0 {
		st.BootLimit = DefaultBootLimit
	}
	return st, nil
}

func (d *Dir) save(st Status) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding boot state: %w", err)
	}
	return atomicfile.WriteFile(d.statePath(), b, 0o644)
}

// Installer writes one image into the inactive slot. Nothing about the
// boot state changes until Finish, and the slot boots only after SetTrial.
type Installer interface {
	// Slot is the slot being written.
	Slot() string
	// Payload opens the destination of one payload of the image; the
	// caller writes exactly size bytes and closes it.
	Payload(name string, size int64) (io.WriteCloser, error)
	// Finish makes the written image durable and records info for it.
	Finish(ctx context.Context, info Info) error
	// Abort discards what was written.
	Abort() error
}

// Install is an image being written into a dir slot.
type Install struct {
	d    *Dir
	slot string
	tmp  string
}

// BeginInstall empties a staging folder for the inactive slot. Nothing
// about the boot state changes until Finish and SetTrial.
func (d *Dir) BeginInstall(ctx context.Context) (Installer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := d.Status()
	if err != nil {
		return nil, err
	}
	if st.Trial {
		return nil, errors.New("begin install: a trial boot is in progress")
	}
	target := Other(st.Active)
	tmp := filepath.Join(d.root, target+".new")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("begin install: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("begin install: %w", err)
	}
	return &Install{d: d, slot: target, tmp: tmp}, nil
}

// Slot is the slot being installed.
func (in *Install) Slot() string { return in.slot }

// Payload creates the payload's file in the staging folder.
func (in *Install) Payload(name string, _ int64) (io.WriteCloser, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return nil, fmt.Errorf("install: bad payload name %q", name)
	}
	f, err := os.OpenFile(filepath.Join(in.tmp, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	return &writeback{f: f}, nil
}

// writebackChunk is how much is written before the kernel is asked to start
// writing it to disk.
const writebackChunk = 8 << 20

// writeback starts the disk writes of an image while it streams in
// (sync_file_range, SYNC_FILE_RANGE_WRITE: asynchronous), so that the fsync
// that makes the slot durable finds little left to write instead of the
// whole image. It changes no guarantee: Finish still fsyncs everything.
type writeback struct {
	f             *os.File
	off, unkicked int64
}

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.unkicked += int64(n)
	if w.unkicked >= writebackChunk {
		// Best effort: a file system without it just writes back later.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.off, w.unkicked, unix.SYNC_FILE_RANGE_WRITE)
		w.off += w.unkicked
		w.unkicked = 0
	}
	return n, err
}

func (w *writeback) Close() error { return w.f.Close() }

// Abort discards the staged image.
func (in *Install) Abort() error { return os.RemoveAll(in.tmp) }

// Finish syncs the staged image and swaps it into the slot, recording info.
// The slot is still not bootable: SetTrial does that.
func (in *Install) Finish(ctx context.Context, info Info) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := atomicfile.SyncTree(in.tmp); err != nil {
		return fmt.Errorf("finish install: %w", err)
	}
	st, err := in.d.Status()
	if err != nil {
		return err
	}
	// Forget the old image in the slot before replacing its folder, so that
	// a crash in between never leaves stale info on new content.
	delete(st.Slots, in.slot)
	if err := in.d.save(st); err != nil {
		return err
	}
	dst := in.d.Path(in.slot)
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("finish install: %w", err)
	}
	if err := os.Rename(in.tmp, dst); err != nil {
		return fmt.Errorf("finish install: %w", err)
	}
	if err := atomicfile.SyncDir(in.d.root); err != nil {
		return err
	}
	if info.Installed.IsZero() {
		info.Installed = time.Now().UTC().Truncate(time.Second)
	}
	st.Slots[in.slot] = info
	return in.d.save(st)
}

// SetTrial makes slot s boot next, on trial.
func (d *Dir) SetTrial(ctx context.Context, s string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := d.Status()
	if err != nil {
		return err
	}
	if _, ok := st.Slots[s]; !ok {
		return fmt.Errorf("set trial: slot %s holds no finished image", s)
	}
	if s == st.Active {
		return fmt.Errorf("set trial: slot %s is already active", s)
	}
	st.Active, st.Trial, st.Attempts, st.LastRollback = s, true, 0, ""
	return d.save(st)
}

// Boot records one boot. On a trial boot past the boot limit the previous
// slot becomes active again, as a bootloader would do; the returned status
// says which slot runs now.
func (d *Dir) Boot(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	st, err := d.Status()
	if err != nil {
		return Status{}, err
	}
	if !st.Trial {
		return st, nil
	}
	st.Attempts++
	if st.Attempts > st.BootLimit {
		st.LastRollback = fmt.Sprintf("slot %s did not commit within %d boots", st.Active, st.BootLimit)
		st.Active, st.Trial, st.Attempts = st.Committed, false, 0
	}
	return st, d.save(st)
}

// Commit marks the trial slot good.
func (d *Dir) Commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := d.Status()
	if err != nil {
		return err
	}
	if !st.Trial {
		return errors.New("commit: no trial boot in progress")
	}
	st.Committed, st.Trial, st.Attempts = st.Active, false, 0
	return d.save(st)
}

// Rollback ends a trial: the committed slot boots again.
func (d *Dir) Rollback(ctx context.Context, reason string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := d.Status()
	if err != nil {
		return err
	}
	if !st.Trial {
		return errors.New("rollback: no trial boot in progress")
	}
	st.LastRollback = reason
	st.Active, st.Trial, st.Attempts = st.Committed, false, 0
	return d.save(st)
}
