package slot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Names of the U-Boot environment variables the uboot backend owns.
// bootcount, bootlimit and upgrade_available are U-Boot's own bootcount
// scheme, so a stock CONFIG_BOOTCOUNT_ENV build counts the trial boots.
const (
	EnvBootCount = "bootcount"          // trial boots so far, decimal
	EnvBootLimit = "bootlimit"          // trial boots allowed, decimal > 0
	EnvUpgrade   = "upgrade_available"  // "1" while a slot boots on trial
	EnvSlot      = "dialtone_slot"      // "a" or "b": the slot the bootloader boots
	EnvCommitted = "dialtone_committed" // "a" or "b": the last slot known good
	EnvRollback  = "dialtone_rollback"  // why the last trial ended on the committed slot
)

// infoFields are the per-slot variables dialtone_<slot>_<field> that
// describe the image in a slot.
var infoFields = []string{"model", "version", "sha256", "installed"}

func infoVar(s, field string) string { return "dialtone_" + s + "_" + field }

// envNames are all the variables the backend reads, in the order it asks
// fw_printenv for them.
var envNames = func() []string {
	n := []string{EnvBootCount, EnvBootLimit, EnvUpgrade, EnvSlot, EnvCommitted, EnvRollback}
	for _, s := range []string{A, B} {
		for _, f := range infoFields {
			n = append(n, infoVar(s, f))
		}
	}
	return n
}()

// ErrTrialNotBooted means a trial slot was set but the bootloader has not
// booted it yet (bootcount is still 0): the agent restarted without a
// reboot. The running image is still the committed one, so its health says
// nothing about the trial slot; reboot instead of committing.
var ErrTrialNotBooted = errors.New("trial slot has not booted yet (reboot to start the trial)")

// Limits on what crosses the fw_printenv/fw_setenv boundary.
const (
	// maxEnvOutput bounds what is read from fw_printenv; the variables it
	// is asked for take well under a kilobyte.
	maxEnvOutput = 64 << 10
	// maxStderr bounds the tool's stderr quoted in an error.
	maxStderr = 1 << 10
	// maxValue keeps every script line below libubootenv's 1024-byte
	// line buffer: a longer line would be split and its tail read as
	// another name=value.
	maxValue = 512
	// maxReason bounds a rollback reason kept in the environment, which
	// is small (often 8–16 KiB) and shared with U-Boot's own variables.
	maxReason = 256

	readTimeout  = 30 * time.Second
	writeTimeout = 2 * time.Minute
)

// UBootConfig configures the uboot backend.
type UBootConfig struct {
	// EnvConfig is the fw_env.config that locates the environment
	// (fw_printenv -c). Two lines make a redundant environment, which is
	// what survives a power cut during a write: a single copy torn by a
	// power cut is lost and U-Boot falls back to its built-in default.
	// Default /etc/fw_env.config.
	EnvConfig string
	// DefaultEnv is the default environment fw_setenv starts from when the
	// environment was never saved (fw_setenv -f). Only ProvisionUBoot uses
	// it: every other call refuses an unreadable environment rather than
	// silently writing the defaults over it. Default /etc/u-boot-initial-env.
	DefaultEnv string
	// FwPrintenv and FwSetenv are the libubootenv tools; default
	// "fw_printenv" and "fw_setenv" from PATH.
	FwPrintenv, FwSetenv string
	// Partitions maps each payload name of a firmware bundle to its
	// destination in slot A and in slot B: block devices on a phone
	// (/dev/mmcblk0p2, /dev/disk/by-partlabel/rootfs_a), regular files in
	// tests. Every payload of an image must be listed, and an install
	// must write all of them, so that no slot boots a mix of two images.
	Partitions map[string][2]string
	// MaxFileSize caps a payload written to a regular-file destination,
	// which could otherwise grow without bound; 0 means no cap. A block
	// device is capped by its size.
	MaxFileSize int64
	// BootLimit is the bootlimit ProvisionUBoot writes; default
	// DefaultBootLimit.
	BootLimit int
}

func (c UBootConfig) withDefaults() UBootConfig {
	if c.EnvConfig == "" {
		c.EnvConfig = "/etc/fw_env.config"
	}
	if c.DefaultEnv == "" {
		c.DefaultEnv = "/etc/u-boot-initial-env"
	}
	if c.FwPrintenv == "" {
		c.FwPrintenv = "fw_printenv"
	}
	if c.FwSetenv == "" {
		c.FwSetenv = "fw_setenv"
	}
	if c.BootLimit <= 0 {
		c.BootLimit = DefaultBootLimit
	}
	return c
}

func (c UBootConfig) validate() error {
	if len(c.Partitions) == 0 {
		return errors.New("uboot config: no partitions")
	}
	if c.MaxFileSize < 0 {
		return errors.New("uboot config: negative max file size")
	}
	seen := map[string]string{}
	for name, dst := range c.Partitions {
		if name == "" {
			return errors.New("uboot config: empty payload name")
		}
		for i, p := range dst {
			if !filepath.IsAbs(p) {
				return fmt.Errorf("uboot config: payload %q slot %s: destination %q is not an absolute path", name, []string{A, B}[i], p)
			}
			p = filepath.Clean(p)
			if other, dup := seen[p]; dup {
				return fmt.Errorf("uboot config: %s is the destination of both %q and %q", p, other, name)
			}
			seen[p] = name
		}
	}
	return nil
}

// UBoot keeps the boot state in the U-Boot environment, which the phone's
// bootloader reads, and writes images straight to the slot partitions.
//
// It changes the environment only through fw_setenv -s, so each state
// change (several variables) is one environment write: libubootenv writes
// the whole environment with its CRC, and with a redundant environment it
// writes the copy not in use, flagged newer, so a power cut mid-write
// leaves a torn copy that fails its CRC and the old one in force. Slot
// info lives in the environment too, so it changes in the same writes as
// the boot state.
//
// The bootloader's side of the contract: U-Boot built with
// CONFIG_BOOTCOUNT_LIMIT and CONFIG_BOOTCOUNT_ENV (which, while
// upgrade_available=1, increments bootcount and saves the environment on
// each boot, and runs altbootcmd instead of bootcmd once
// bootcount > bootlimit), with a default environment like:
//
//	bootcmd=run dialtone_boot
//	altbootcmd=setenv dialtone_slot ${dialtone_committed}; saveenv; run dialtone_boot
//	dialtone_boot=if test "${dialtone_slot}" = b; then run boot_b; else run boot_a; fi
//	boot_a=... root=/dev/mmcblk0p2 ...
//	boot_b=... root=/dev/mmcblk0p3 ...
//
// A U-Boot without bootcount support runs the same logic as a script
// before booting (setexpr counts in hex, so keep bootlimit below 9):
//
//	if test "${upgrade_available}" = 1; then
//		if test ${bootcount} -le ${bootlimit}; then setexpr bootcount ${bootcount} + 1; fi
//		if test ${bootcount} -gt ${bootlimit}; then setenv dialtone_slot ${dialtone_committed}; fi
//		saveenv
//	fi
//	run dialtone_boot
//
// Either way the fallback must leave upgrade_available and bootcount as
// they are: Boot reads them on the agent's next start to report the
// rollback, then clears them. SimulateBootloader does what the script does.
type UBoot struct {
	cfg UBootConfig
	mu  sync.Mutex
	// gen numbers installs; a newer BeginInstall supersedes an older one.
	gen uint64
}

var _ Backend = (*UBoot)(nil)

// ProvisionUBoot records factory as the committed image in slot A, and
// slot B as empty. It refuses an environment that already names slots.
// An environment that was never saved starts from cfg.DefaultEnv.
func ProvisionUBoot(ctx context.Context, cfg UBootConfig, factory Info) (*UBoot, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u := &UBoot{cfg: cfg}
	if factory.Installed.IsZero() {
		factory.Installed = time.Now().UTC().Truncate(time.Second)
	}
	changes := map[string]string{
		EnvSlot: A, EnvCommitted: A, EnvUpgrade: "0", EnvBootCount: "0",
		EnvBootLimit: strconv.Itoa(cfg.BootLimit), EnvRollback: "",
	}
	if err := recordInfo(changes, A, factory); err != nil {
		return nil, fmt.Errorf("provisioning slots: %w", err)
	}
	forgetInfo(changes, B)
	u.mu.Lock()
	defer u.mu.Unlock()
	defenv := ""
	if e, err := u.readEnv(ctx); err == nil {
		if e[EnvSlot] != "" {
			return nil, fmt.Errorf("provisioning slots in %s: %w", cfg.EnvConfig, fs.ErrExist)
		}
	} else {
		// Never saved (or unreadable): U-Boot itself runs on its built-in
		// defaults then, which the default environment file mirrors.
		defenv = cfg.DefaultEnv
	}
	if _, err := u.writeEnv(ctx, changes, defenv); err != nil {
		return nil, fmt.Errorf("provisioning slots: %w", err)
	}
	return u, nil
}

// OpenUBoot opens provisioned slots.
func OpenUBoot(ctx context.Context, cfg UBootConfig) (*UBoot, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u := &UBoot{cfg: cfg}
	if _, err := u.state(ctx); err != nil {
		return nil, err
	}
	return u, nil
}

// ubootState is the boot state as the environment holds it.
type ubootState struct {
	slot, committed      string
	upgrade              bool
	bootCount, bootLimit int
	rollback             string
	slots                map[string]Info
}

// fellBack reports that the bootloader has given up on the trial slot and
// boots the committed one; Boot has not recorded it yet.
func (s ubootState) fellBack() bool { return s.upgrade && s.bootCount > s.bootLimit }

func (s ubootState) fallbackReason() string {
	return fmt.Sprintf("slot %s did not commit within %d boots", Other(s.committed), s.bootLimit)
}

func (s ubootState) status() Status {
	st := Status{Active: s.slot, Committed: s.committed, BootLimit: s.bootLimit, Slots: s.slots, LastRollback: s.rollback}
	switch {
	case s.fellBack():
		st.Active, st.LastRollback = s.committed, s.fallbackReason()
	case s.upgrade:
		st.Trial, st.Attempts = true, s.bootCount
	}
	return st
}

func parseState(e map[string]string) (ubootState, error) {
	s := ubootState{slot: e[EnvSlot], committed: e[EnvCommitted], rollback: e[EnvRollback], slots: map[string]Info{}}
	if s.slot == "" {
		return s, ErrNoSlots
	}
	if (s.slot != A && s.slot != B) || (s.committed != A && s.committed != B) {
		return s, fmt.Errorf("u-boot env names unknown slots %q/%q", s.slot, s.committed)
	}
	switch e[EnvUpgrade] {
	case "", "0":
	case "1":
		s.upgrade = true
	default:
		return s, fmt.Errorf("u-boot env: %s=%q, want 0 or 1", EnvUpgrade, e[EnvUpgrade])
	}
	var err error
	if s.bootCount, err = parseCount(EnvBootCount, e[EnvBootCount], true); err != nil {
		return s, err
	}
	if s.bootLimit, err = parseCount(EnvBootLimit, e[EnvBootLimit], false); err != nil {
		return s, err
	}
	if s.bootLimit == 0 {
		return s, fmt.Errorf("u-boot env: %s is 0: the bootloader would never fall back", EnvBootLimit)
	}
	for _, sl := range []string{A, B} {
		info, ok, err := parseInfo(e, sl)
		if err != nil {
			return s, err
		}
		if ok {
			s.slots[sl] = info
		}
	}
	return s, nil
}

// parseCount reads a decimal count as U-Boot's env_get_ulong(…, 10, …)
// would, but refuses what U-Boot would silently read as 0.
func parseCount(name, v string, emptyIsZero bool) (int, error) {
	if v == "" && emptyIsZero {
		return 0, nil
	}
	if v == "" || len(v) > 9 || strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("u-boot env: %s=%q is not a count", name, v)
	}
	return strconv.Atoi(v)
}

func parseInfo(e map[string]string, s string) (Info, bool, error) {
	info := Info{
		Model:   e[infoVar(s, "model")],
		Version: e[infoVar(s, "version")],
		SHA256:  e[infoVar(s, "sha256")],
	}
	installed := e[infoVar(s, "installed")]
	if info.Model == "" && info.Version == "" && info.SHA256 == "" && installed == "" {
		return Info{}, false, nil
	}
	if info.Model == "" || info.Version == "" || installed == "" {
		return Info{}, false, fmt.Errorf("u-boot env: info of slot %s is incomplete", s)
	}
	t, err := time.Parse(time.RFC3339Nano, installed)
	if err != nil {
		return Info{}, false, fmt.Errorf("u-boot env: install time of slot %s: %w", s, err)
	}
	info.Installed = t
	return info, true, nil
}

// forgetInfo adds to changes the unsetting of slot s's info.
func forgetInfo(changes map[string]string, s string) {
	for _, f := range infoFields {
		changes[infoVar(s, f)] = ""
	}
}

// recordInfo adds to changes the variables recording info for slot s.
func recordInfo(changes map[string]string, s string, info Info) error {
	if info.Model == "" || info.Version == "" {
		return errors.New("image info needs a model and a version")
	}
	changes[infoVar(s, "model")] = info.Model
	changes[infoVar(s, "version")] = info.Version
	changes[infoVar(s, "sha256")] = info.SHA256
	changes[infoVar(s, "installed")] = info.Installed.UTC().Format(time.RFC3339Nano)
	return nil
}

// validValue reports a value that survives a fw_setenv script line intact.
func validValue(v string) error {
	if len(v) > maxValue {
		return fmt.Errorf("%d bytes, more than %d", len(v), maxValue)
	}
	if !utf8.ValidString(v) {
		return errors.New("not UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character %q", r)
		}
	}
	return nil
}

// cleanReason makes a rollback reason fit one environment variable: error
// text may hold newlines and be long.
func cleanReason(r string) string {
	r = strings.ToValidUTF8(r, "?")
	r = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, r)
	r = strings.TrimSpace(r)
	if len(r) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(r[cut]) {
			cut--
		}
		r = r[:cut]
	}
	if r == "" {
		r = "rolled back"
	}
	return r
}

// state reads and parses the environment.
func (u *UBoot) state(ctx context.Context) (ubootState, error) {
	e, err := u.readEnv(ctx)
	if err != nil {
		return ubootState{}, err
	}
	s, err := parseState(e)
	if errors.Is(err, ErrNoSlots) {
		return s, fmt.Errorf("%w in u-boot env %s (run dialtone-agent provision)", ErrNoSlots, u.cfg.EnvConfig)
	}
	return s, err
}

// Status reads the boot state.
func (u *UBoot) Status() (Status, error) {
	// The Backend interface gives Status no context; the timeout keeps a
	// hung tool from blocking the agent for good.
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	s, err := u.state(ctx)
	if err != nil {
		return Status{}, err
	}
	return s.status(), nil
}

// Boot reads what the bootloader decided for this boot. The bootloader
// counts trial boots itself; when it has fallen back to the committed
// slot, Boot records why and ends the trial. A trial slot the bootloader
// has not booted yet is ErrTrialNotBooted.
func (u *UBoot) Boot(ctx context.Context) (Status, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, err := u.state(ctx)
	if err != nil {
		return Status{}, err
	}
	switch {
	case s.fellBack():
		e, err := u.writeEnv(ctx, map[string]string{
			EnvSlot: s.committed, EnvUpgrade: "0", EnvBootCount: "0", EnvRollback: s.fallbackReason(),
		}, "")
		if err != nil {
			return Status{}, fmt.Errorf("recording fallback: %w", err)
		}
		if s, err = parseState(e); err != nil {
			return Status{}, err
		}
	case s.upgrade && s.bootCount == 0:
		return Status{}, fmt.Errorf("boot: slot %s: %w", s.slot, ErrTrialNotBooted)
	}
	return s.status(), nil
}

// SetTrial makes slot s boot next, on trial.
func (u *UBoot) SetTrial(ctx context.Context, s string) error {
	if s != A && s != B {
		return fmt.Errorf("set trial: unknown slot %q", s)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.state(ctx)
	if err != nil {
		return err
	}
	if st.upgrade {
		return errors.New("set trial: a trial boot is in progress")
	}
	if _, ok := st.slots[s]; !ok {
		return fmt.Errorf("set trial: slot %s holds no finished image", s)
	}
	if s == st.slot {
		return fmt.Errorf("set trial: slot %s is already active", s)
	}
	_, err = u.writeEnv(ctx, map[string]string{EnvSlot: s, EnvUpgrade: "1", EnvBootCount: "0", EnvRollback: ""}, "")
	if err != nil {
		return fmt.Errorf("set trial: %w", err)
	}
	return nil
}

// Commit marks the trial slot good.
func (u *UBoot) Commit(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.state(ctx)
	if err != nil {
		return err
	}
	if !st.upgrade || st.fellBack() {
		return errors.New("commit: no trial boot in progress")
	}
	if st.bootCount == 0 {
		return fmt.Errorf("commit: slot %s: %w", st.slot, ErrTrialNotBooted)
	}
	_, err = u.writeEnv(ctx, map[string]string{EnvUpgrade: "0", EnvBootCount: "0", EnvCommitted: st.slot}, "")
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Rollback ends a trial: the committed slot boots again.
func (u *UBoot) Rollback(ctx context.Context, reason string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.state(ctx)
	if err != nil {
		return err
	}
	if !st.upgrade || st.fellBack() {
		return errors.New("rollback: no trial boot in progress")
	}
	_, err = u.writeEnv(ctx, map[string]string{
		EnvSlot: st.committed, EnvUpgrade: "0", EnvBootCount: "0", EnvRollback: cleanReason(reason),
	}, "")
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// SimulateBootloader does, through fw_printenv and fw_setenv, what the
// phone's bootloader does on a boot (see UBoot) and returns the slot it
// boots. It is test and simulation support: on a phone U-Boot does this.
func SimulateBootloader(ctx context.Context, cfg UBootConfig) (string, error) {
	u := &UBoot{cfg: cfg.withDefaults()}
	u.mu.Lock()
	defer u.mu.Unlock()
	s, err := u.state(ctx)
	if err != nil {
		return "", err
	}
	if !s.upgrade {
		return s.slot, nil
	}
	if s.bootCount <= s.bootLimit {
		s.bootCount++
	}
	changes := map[string]string{EnvBootCount: strconv.Itoa(s.bootCount)}
	if s.bootCount > s.bootLimit {
		changes[EnvSlot] = s.committed
	}
	e, err := u.writeEnv(ctx, changes, "")
	if err != nil {
		return "", fmt.Errorf("simulated bootloader: %w", err)
	}
	return e[EnvSlot], nil
}

// readEnv asks fw_printenv for the backend's variables by name (an unset
// one prints as "name="), so a multi-line value elsewhere in the
// environment cannot pass for one of them. It refuses an environment with
// a bad CRC instead of reading defaults in its place: -f "" names no
// default environment.
func (u *UBoot) readEnv(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	args := append([]string{"-c", u.cfg.EnvConfig, "-f", ""}, envNames...)
	out, err := runTool(ctx, u.cfg.FwPrintenv, args...)
	if err != nil {
		return nil, fmt.Errorf("reading u-boot env: %w", err)
	}
	e, err := parsePrintenv(out, envNames)
	if err != nil {
		return nil, fmt.Errorf("reading u-boot env: %w", err)
	}
	return e, nil
}

// parsePrintenv parses fw_printenv's answer for names: exactly one
// name=value line for each, in order.
func parsePrintenv(out []byte, names []string) (map[string]string, error) {
	if len(out) > maxEnvOutput {
		return nil, fmt.Errorf("fw_printenv printed more than %d bytes", maxEnvOutput)
	}
	e := make(map[string]string, len(names))
	if len(names) == 0 {
		if len(out) > 0 {
			return nil, errors.New("fw_printenv printed variables it was not asked for")
		}
		return e, nil
	}
	rest, ok := bytes.CutSuffix(out, []byte("\n"))
	if !ok {
		return nil, errors.New("fw_printenv output does not end in a newline")
	}
	lines := strings.Split(string(rest), "\n")
	if len(lines) != len(names) {
		return nil, fmt.Errorf("fw_printenv printed %d lines for %d variables", len(lines), len(names))
	}
	for i, name := range names {
		v, ok := strings.CutPrefix(lines[i], name+"=")
		if !ok {
			return nil, fmt.Errorf("fw_printenv line %d is not %s=…", i+1, name)
		}
		e[name] = v
	}
	return e, nil
}

// writeEnv changes several variables in one environment write; "" unsets
// one. defenv, when set, is the default environment to start from if the
// current one is unreadable. It returns the environment read back after
// the write, which it has checked holds the changes: fw_setenv -s reports
// neither an unreadable script nor a variable it refused.
func (u *UBoot) writeEnv(ctx context.Context, changes map[string]string, defenv string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(changes))
	for name := range changes {
		names = append(names, name)
	}
	slices.Sort(names)
	var script strings.Builder
	for _, name := range names {
		v := changes[name]
		if err := validValue(v); err != nil {
			return nil, fmt.Errorf("value of %s: %w", name, err)
		}
		fmt.Fprintf(&script, "%s=%s\n", name, v)
	}
	f, err := os.CreateTemp("", "dialtone-fw_setenv-*")
	if err != nil {
		return nil, fmt.Errorf("writing u-boot env: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(script.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("writing u-boot env: %w", err)
	}
	// Killing fw_setenv mid-write could tear a single-copy environment,
	// so once started it runs to the end, bounded only by a timeout for a
	// tool that hangs.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if _, err := runTool(wctx, u.cfg.FwSetenv, "-c", u.cfg.EnvConfig, "-f", defenv, "-s", f.Name()); err != nil {
		return nil, fmt.Errorf("writing u-boot env: %w", err)
	}
	e, err := u.readEnv(wctx)
	if err != nil {
		return nil, fmt.Errorf("checking u-boot env write: %w", err)
	}
	for _, name := range names {
		if e[name] != changes[name] {
			return nil, fmt.Errorf("writing u-boot env: %s is %q after fw_setenv, want %q", name, e[name], changes[name])
		}
	}
	return e, nil
}

// runTool runs one of the libubootenv tools and returns its bounded
// stdout; a failure carries the start of its stderr.
func runTool(ctx context.Context, tool string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, tool, args...)
	stdout := &capBuffer{max: maxEnvOutput}
	stderr := &capBuffer{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	name := filepath.Base(tool)
	err := cmd.Run()
	if stdout.over {
		return nil, fmt.Errorf("%s printed more than %d bytes", name, maxEnvOutput)
	}
	if err != nil {
		if msg := oneLine(stderr.buf.String()); msg != "" {
			return nil, fmt.Errorf("%s: %w: %s", name, err, msg)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return stdout.buf.Bytes(), nil
}

func oneLine(s string) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "?")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// capBuffer keeps the first max bytes written to it. Past that it fails
// the write, which closes the pipe, so a runaway tool dies of SIGPIPE
// instead of running until the timeout. It wraps rather than embeds its
// buffer: an embedded bytes.Buffer's ReadFrom would let io.Copy around
// the limit.
type capBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

var errOverflow = errors.New("output limit reached")

func (b *capBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		n, _ := b.buf.Write(p[:max(room, 0)])
		return n, errOverflow
	}
	return b.buf.Write(p)
}

// ubootInstall writes an image straight into the partitions of the
// inactive slot.
type ubootInstall struct {
	u       *UBoot
	gen     uint64
	slot    string
	writers map[string]*partWriter
	done    bool
}

var _ Installer = (*ubootInstall)(nil)

// BeginInstall starts an install into the inactive slot. It forgets the
// slot's image info first: the payloads overwrite the partitions in
// place, and a crash while they do must not leave info describing the
// image that was there.
func (u *UBoot) BeginInstall(ctx context.Context) (Installer, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := u.state(ctx)
	if err != nil {
		return nil, err
	}
	if st.upgrade {
		return nil, errors.New("begin install: a trial boot is in progress")
	}
	target := Other(st.slot)
	if target == st.committed {
		return nil, fmt.Errorf("begin install: slot %s is the committed slot", target)
	}
	if _, ok := st.slots[target]; ok {
		forget := map[string]string{}
		forgetInfo(forget, target)
		if _, err := u.writeEnv(ctx, forget, ""); err != nil {
			return nil, fmt.Errorf("begin install: %w", err)
		}
	}
	u.gen++
	return &ubootInstall{u: u, gen: u.gen, slot: target, writers: map[string]*partWriter{}}, nil
}

// Slot is the slot being installed.
func (in *ubootInstall) Slot() string { return in.slot }

func (in *ubootInstall) current() error {
	if in.done {
		return errors.New("install: already finished or aborted")
	}
	in.u.mu.Lock()
	defer in.u.mu.Unlock()
	if in.gen != in.u.gen {
		return errors.New("install: superseded by a newer install")
	}
	return nil
}

// Payload opens the partition of payload name in the slot being installed.
// A block device is opened exclusively, which the kernel refuses while it
// is mounted, and is never truncated; a regular file is cut to size.
func (in *ubootInstall) Payload(name string, size int64) (io.WriteCloser, error) {
	if err := in.current(); err != nil {
		return nil, err
	}
	dst, ok := in.u.cfg.Partitions[name]
	if !ok {
		return nil, fmt.Errorf("install: payload %q has no partition", name)
	}
	if _, dup := in.writers[name]; dup {
		return nil, fmt.Errorf("install: payload %q written twice", name)
	}
	if size < 0 {
		return nil, fmt.Errorf("install: payload %q: negative size", name)
	}
	i := 0
	if in.slot == B {
		i = 1
	}
	path := dst[i]
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("install: payload %q: %w", name, err)
	}
	// A symlink (/dev/disk/by-partlabel/…) pointing at the other slot's
	// partition would overwrite the running image.
	if ofi, err := os.Stat(dst[1-i]); err == nil && os.SameFile(fi, ofi) {
		return nil, fmt.Errorf("install: payload %q: %s is also the partition of slot %s", name, path, Other(in.slot))
	}
	var f *os.File
	switch {
	case fi.Mode().IsRegular():
		if in.u.cfg.MaxFileSize > 0 && size > in.u.cfg.MaxFileSize {
			return nil, fmt.Errorf("install: payload %q: %d bytes do not fit %s (at most %d)", name, size, path, in.u.cfg.MaxFileSize)
		}
		if f, err = os.OpenFile(path, os.O_WRONLY, 0); err != nil {
			return nil, fmt.Errorf("install: payload %q: %w", name, err)
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("install: payload %q: %w", name, err)
		}
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_EXCL, 0); err != nil {
			return nil, fmt.Errorf("install: payload %q: %w", name, err)
		}
		devSize, err := f.Seek(0, io.SeekEnd)
		if err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("install: payload %q: sizing %s: %w", name, path, err)
		}
		if size > devSize {
			f.Close()
			return nil, fmt.Errorf("install: payload %q: %d bytes do not fit %s (%d bytes)", name, size, path, devSize)
		}
	default:
		return nil, fmt.Errorf("install: payload %q: %s is neither a block device nor a regular file", name, path)
	}
	w := &partWriter{name: name, wb: &writeback{f: f}, size: size}
	in.writers[name] = w
	return w, nil
}

// partWriter writes one payload. Close only ends the writing: the file
// stays open until Finish fsyncs it, because an fsync on the descriptor
// that wrote is what reliably reports a failed write-back.
type partWriter struct {
	name    string
	wb      *writeback
	size, n int64
	closed  bool
}

func (w *partWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, fmt.Errorf("payload %q: %w", w.name, os.ErrClosed)
	}
	over := int64(len(p)) > w.size-w.n
	if over {
		p = p[:w.size-w.n]
	}
	n, err := w.wb.Write(p)
	w.n += int64(n)
	if err == nil && over {
		err = fmt.Errorf("payload %q: more than the declared %d bytes", w.name, w.size)
	}
	return n, err
}

func (w *partWriter) Close() error {
	w.closed = true
	return nil
}

// Finish fsyncs every partition written and records info for the slot.
// The slot is still not bootable: SetTrial does that.
func (in *ubootInstall) Finish(ctx context.Context, info Info) error {
	if err := in.current(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if info.Installed.IsZero() {
		info.Installed = time.Now().UTC().Truncate(time.Second)
	}
	changes := map[string]string{}
	if err := recordInfo(changes, in.slot, info); err != nil {
		return fmt.Errorf("finish install: %w", err)
	}
	for name := range in.u.cfg.Partitions {
		w, ok := in.writers[name]
		switch {
		case !ok:
			return fmt.Errorf("finish install: payload %q was not written", name)
		case !w.closed:
			return fmt.Errorf("finish install: payload %q is still open", name)
		case w.n != w.size:
			return fmt.Errorf("finish install: payload %q: wrote %d of %d bytes", name, w.n, w.size)
		}
	}
	for _, w := range in.writers {
		if w.wb.f == nil {
			continue // synced and closed by an earlier Finish that failed later
		}
		if err := w.wb.f.Sync(); err != nil {
			return fmt.Errorf("finish install: syncing payload %q: %w", w.name, err)
		}
	}
	if err := in.closeFiles(); err != nil {
		return fmt.Errorf("finish install: %w", err)
	}
	in.u.mu.Lock()
	defer in.u.mu.Unlock()
	if in.gen != in.u.gen {
		return errors.New("finish install: superseded by a newer install")
	}
	st, err := in.u.state(ctx)
	if err != nil {
		return err
	}
	if st.upgrade || st.slot == in.slot || st.committed == in.slot {
		return fmt.Errorf("finish install: slot %s became active during the install", in.slot)
	}
	if _, err := in.u.writeEnv(ctx, changes, ""); err != nil {
		return fmt.Errorf("finish install: %w", err)
	}
	in.done = true
	return nil
}

func (in *ubootInstall) closeFiles() error {
	var errs []error
	for _, w := range in.writers {
		if w.wb.f != nil {
			if err := w.wb.f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing payload %q: %w", w.name, err))
			}
			w.wb.f = nil
			w.closed = true
		}
	}
	return errors.Join(errs...)
}

// Abort stops the install. The slot's info was forgotten when it began,
// so the partly written slot can never be set on trial.
func (in *ubootInstall) Abort() error {
	in.done = true
	return in.closeFiles()
}
