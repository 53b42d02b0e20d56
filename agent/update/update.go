// Package update owns the phone's update flow: refresh TUF metadata, pick the
// firmware meant for this device, download it resumably into the inactive
// slot while hashing, check the TUF hash and the publisher's signature,
// install, boot it on trial, and commit or roll back on the health checks
// (DESIGN.md §4). Each step is reported as an event.
package update

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/dialtone-dev/dialtone/agent/floor"
	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"golang.org/x/mod/semver"
)

// Outcome is what one update cycle did.
type Outcome int

// Outcomes of a cycle.
const (
	NoUpdate   Outcome = iota // nothing newer for this device
	Installed                 // a new image was installed and committed
	Refused                   // something failed verification; nothing installed
	Failed                    // an error that is not a security refusal
	RolledBack                // the new image failed its health checks
	Deferred                  // installed; waits for the maintenance window or the call to end
)

func (o Outcome) String() string {
	return [...]string{"no-update", "installed", "refused", "failed", "rolled-back", "deferred"}[o]
}

// RefusedError is a verification failure: the update was refused for
// security reasons and nothing was installed.
type RefusedError struct {
	Reason string
	Err    error
}

func (e *RefusedError) Error() string {
	if e.Err != nil {
		return "update refused: " + e.Reason + ": " + e.Err.Error()
	}
	return "update refused: " + e.Reason
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Slots is what the agent needs of a slot backend.
type Slots interface {
	Status() (slot.Status, error)
	BeginInstall(ctx context.Context) (slot.Installer, error)
	SetTrial(ctx context.Context, s string) error
	Boot(ctx context.Context) (slot.Status, error)
	Commit(ctx context.Context) error
	Rollback(ctx context.Context, reason string) error
}

// Floor is the anti-rollback floor: no version below it installs or
// commits, and each commit raises it.
type Floor interface {
	Get(ctx context.Context) (floor.Version, error)
	Raise(ctx context.Context, v floor.Version) error
	// Secure reports that the floor survives a restored state directory.
	Secure() bool
}

// Reporter is what the agent needs of the MQTT client.
type Reporter interface {
	PublishState(ctx context.Context, s wire.State) error
	Event(ctx context.Context, e wire.Event) (wire.Event, error)
}

// Config of the agent's update flow.
type Config struct {
	Server   string // base URL of the Dialtone server
	StateDir string
	Tenant   string
	Device   string
	Model    string
	Hardware string
	Channel  string // default "stable"
	// Health runs the checks that must pass on a trial boot beyond fresh
	// TUF metadata (broker reached, …). Nil means none.
	Health func(ctx context.Context) error
	// DownloadIdleTimeout ends a download that has received nothing for
	// this long (a server trickling bytes); default 60 s.
	DownloadIdleTimeout time.Duration
	// DownloadAttempts bounds the tries of one download within a check;
	// each resumes where the last stopped. Default 3.
	DownloadAttempts int
	// RetryBackoff is the pause before the second attempt, doubled after
	// each; default 2 s.
	RetryBackoff time.Duration
	HTTPClient   *http.Client
	Logger       *slog.Logger
	Now          func() time.Time

	// Floor is the anti-rollback floor; required.
	Floor Floor
	// Desired returns the version the server wants on this device, or ""
	// when no rollout names one. Nil means never.
	Desired func() string
	// Window, when set, is the only time of day a new slot may be
	// activated (trial boot and reboot).
	Window *Window
	// InCall reports an active call: no slot switch or reboot then.
	InCall func() bool
	// Progress is told the bytes downloaded so far of a target.
	Progress func(done, total int64)
	// Crash is a test hook called after each journaled step and at the
	// Crash* points; the crash tests make it kill the process.
	Crash func(step string)
}

// NewTransport is the agent's HTTP transport for the server and mirrors;
// tlsConfig nil means the system's roots.
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	}
}

// Agent runs the update flow for one device.
type Agent struct {
	cfg   Config
	slots Slots
	rep   Reporter
	http  *http.Client
	log   *slog.Logger
	tuf   wire.TUFVersions
	state string
}

// New builds an agent.
func New(cfg Config, slots Slots, rep Reporter) (*Agent, error) {
	if cfg.Server == "" || cfg.StateDir == "" {
		return nil, errors.New("update: server and state dir are required")
	}
	for _, v := range []string{cfg.Tenant, cfg.Device, cfg.Model} {
		if !wire.ValidID(v) {
			return nil, fmt.Errorf("update: bad tenant, device or model name %q", v)
		}
	}
	if cfg.Hardware == "" {
		return nil, errors.New("update: hardware revision is required")
	}
	if cfg.Floor == nil {
		return nil, errors.New("update: an anti-rollback floor is required")
	}
	if cfg.Channel == "" {
		cfg.Channel = "stable"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DownloadIdleTimeout <= 0 {
		cfg.DownloadIdleTimeout = 60 * time.Second
	}
	if cfg.DownloadAttempts <= 0 {
		cfg.DownloadAttempts = 3
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: NewTransport(nil)}
	}
	return &Agent{cfg: cfg, slots: slots, rep: rep, http: hc, log: cfg.Logger, state: wire.UpdateIdle,
		tuf: storedVersions(filepath.Join(cfg.StateDir, "tuf"))}, nil
}

func (a *Agent) event(ctx context.Context, typ, version, msg string, fields map[string]string) {
	_, err := a.rep.Event(ctx, wire.Event{Type: typ, Version: version, Message: msg, Fields: fields})
	if err != nil {
		a.log.Error("recording event", "type", typ, "err", err)
	}
}

// ReportState publishes the device's retained state.
func (a *Agent) ReportState(ctx context.Context) error {
	st, err := a.slots.Status()
	if err != nil {
		return err
	}
	version := st.Slots[st.Active].Version
	s := wire.State{
		Schema: wire.SchemaVersion, Tenant: a.cfg.Tenant, Device: a.cfg.Device, Model: a.cfg.Model,
		Hardware: a.cfg.Hardware, Version: version, Slot: st.Active,
		UpdateState: a.state, Online: true, TUF: a.tuf, Time: a.cfg.Now().UTC(),
	}
	if fl, err := a.cfg.Floor.Get(ctx); err == nil {
		s.Floor = fl.String()
		if belowFloor(version, fl) {
			s.Warnings = append(s.Warnings, wire.WarnBelowFloor)
		}
	} else {
		a.log.Warn("reading anti-rollback floor", "err", err)
	}
	if !a.cfg.Floor.Secure() {
		s.Warnings = append(s.Warnings, wire.WarnInsecureFloor)
	}
	return a.rep.PublishState(ctx, s)
}

func (a *Agent) setState(ctx context.Context, s string) {
	a.state = s
	if err := a.ReportState(ctx); err != nil {
		a.log.Warn("reporting state", "err", err)
	}
}

// belowFloor reports a version older than the floor; one that does not
// parse counts as below, since nothing can show it is not.
func belowFloor(version string, fl floor.Version) bool {
	if !semver.IsValid(semv(version)) {
		return true
	}
	return semver.Compare(semv(version), semv(fl.String())) < 0
}

// raiseFloor lifts the floor to a committed version. It runs at every boot
// too, so a crash between a commit and the raise is repaired.
func (a *Agent) raiseFloor(ctx context.Context, version string) error {
	v, ok, err := floor.Parse(version)
	if err != nil {
		return err
	}
	if !ok {
		return nil // a pre-release does not raise the floor
	}
	return a.cfg.Floor.Raise(ctx, v)
}

// Start runs at every boot of the agent: it records the boot and, on a trial
// boot, runs the health checks and commits the slot or rolls back.
func (a *Agent) Start(ctx context.Context) (Outcome, error) {
	st, err := a.slots.Boot(ctx)
	if errors.Is(err, slot.ErrTrialNotBooted) {
		// The agent restarted between setting the trial and the reboot:
		// nothing to check or commit until the bootloader ran the slot.
		a.setState(ctx, wire.UpdateInstalled)
		return Deferred, fmt.Errorf("%w: %w", ErrRebootPending, err)
	}
	if err != nil {
		return Failed, fmt.Errorf("boot: %w", err)
	}
	j := a.readJournal()
	version := st.Slots[st.Active].Version
	a.event(ctx, wire.EventBoot, version, "booted slot "+st.Active, map[string]string{"slot": st.Active})
	if !st.Trial {
		if (j.Step == StepTrial || j.Step == StepBooted) && j.Slot != st.Active {
			// The trial ended without a commit: the boot limit ran out
			// (the agent never got through its checks) and the bootloader
			// went back to the committed slot.
			reason := st.LastRollback
			if reason == "" {
				reason = "slot " + j.Slot + " did not commit"
			}
			a.event(ctx, wire.EventRolledBack, j.Version, reason, map[string]string{"slot": j.Slot})
			j.Step = StepRolledBack
			if err := a.record(j); err != nil {
				return Failed, err
			}
			a.setState(ctx, wire.UpdateRolledBack)
			return RolledBack, errors.New(reason)
		}
		if (j.Step == StepBooted || j.Step == StepCommitted) && j.Slot == st.Active && st.Committed == st.Active {
			// The last run committed the trial but stopped before saying so.
			a.event(ctx, wire.EventCommitted, version, "committed slot "+st.Active, map[string]string{"slot": st.Active})
			os.Remove(a.partPath(j.SHA256))
			j.Step = StepCommitted
		}
		if err := a.raiseFloor(ctx, st.Slots[st.Committed].Version); err != nil {
			a.log.Error("raising anti-rollback floor", "err", err)
		}
		if j.Step == StepCommitted {
			j.Step = StepDone
			if err := a.record(j); err != nil {
				return Failed, err
			}
		}
		if fl, err := a.cfg.Floor.Get(ctx); err == nil && belowFloor(version, fl) {
			a.event(ctx, wire.EventSecurity, version, fmt.Sprintf("running %s, below the anti-rollback floor %s", version, fl),
				map[string]string{"kind": "below-floor"})
		}
		a.setState(ctx, a.state)
		return NoUpdate, nil
	}
	j = Journal{Step: StepBooted, Version: version, SHA256: st.Slots[st.Active].SHA256, Slot: st.Active, Target: j.Target}
	if err := a.record(j); err != nil {
		return Failed, err
	}
	a.setState(ctx, wire.UpdateTrial)
	if err := a.trialChecks(ctx, version); err != nil {
		reason := err.Error()
		if rerr := a.slots.Rollback(ctx, reason); rerr != nil {
			return Failed, fmt.Errorf("rollback: %w", rerr)
		}
		j.Step = StepRolledBack
		if err := a.record(j); err != nil {
			return Failed, err
		}
		a.event(ctx, wire.EventRolledBack, version, reason, map[string]string{"slot": st.Active})
		var ref *RefusedError
		if errors.As(err, &ref) {
			a.event(ctx, wire.EventSecurity, version, reason, map[string]string{"kind": "trial-refused"})
		}
		a.setState(ctx, wire.UpdateRolledBack)
		return RolledBack, err
	}
	if err := a.slots.Commit(ctx); err != nil {
		return Failed, fmt.Errorf("commit: %w", err)
	}
	j.Step = StepCommitted
	if err := a.record(j); err != nil {
		return Failed, err
	}
	// Checks crashed before the trial may have left the download behind.
	os.Remove(a.partPath(j.SHA256))
	if err := a.raiseFloor(ctx, version); err != nil {
		// The slot is committed; the next boot raises the floor again.
		a.log.Error("raising anti-rollback floor", "err", err)
	} else {
		j.Step = StepDone
		if err := a.record(j); err != nil {
			return Failed, err
		}
	}
	a.event(ctx, wire.EventCommitted, version, "committed slot "+st.Active, map[string]string{"slot": st.Active})
	a.setState(ctx, wire.UpdateCommitted)
	return Installed, nil
}

// trialChecks decide whether a trial slot commits.
func (a *Agent) trialChecks(ctx context.Context, version string) error {
	fl, err := a.cfg.Floor.Get(ctx)
	if err != nil {
		return fmt.Errorf("anti-rollback floor unreadable: %w", err)
	}
	if belowFloor(version, fl) {
		// Only a restored state directory or disk gets here: nothing below
		// the floor is ever installed.
		return &RefusedError{Reason: fmt.Sprintf("trial image %s is below the anti-rollback floor %s", version, fl)}
	}
	if err := a.health(ctx); err != nil {
		return fmt.Errorf("health check failed: %w", err)
	}
	return nil
}

func (a *Agent) health(ctx context.Context) error {
	if _, err := a.refresh(ctx); err != nil {
		return fmt.Errorf("tuf metadata not fresh: %w", err)
	}
	if a.cfg.Health != nil {
		return a.cfg.Health(ctx)
	}
	return nil
}

// ErrRebootPending means a trial slot is set and waits for a reboot.
var ErrRebootPending = errors.New("reboot pending")

// ErrDeferred means an installed image waits to be activated.
var ErrDeferred = errors.New("activation deferred")

// Check runs one update cycle: check, and when something is there for this
// device, download, verify, install and set a trial boot. It does not
// reboot. An image already installed by an earlier cycle whose activation
// was deferred is activated without downloading it again.
func (a *Agent) Check(ctx context.Context) (Outcome, *slot.Info, error) {
	st, err := a.slots.Status()
	if err != nil {
		return Failed, nil, err
	}
	if st.Trial {
		return Failed, nil, errors.New("check: a trial boot awaits its health checks")
	}
	current := st.Slots[st.Active].Version
	t, err := a.refresh(ctx)
	if err != nil {
		return a.fail(ctx, current, err)
	}
	cands, err := t.firmwareTargets(a.cfg.Model)
	if err != nil {
		return a.fail(ctx, current, err)
	}
	fl, err := a.cfg.Floor.Get(ctx)
	if err != nil {
		return a.fail(ctx, current, fmt.Errorf("reading anti-rollback floor: %w", err))
	}
	desired := ""
	if a.cfg.Desired != nil {
		desired = a.cfg.Desired()
	}
	c, ok, err := a.pick(cands, current, fl, desired)
	if err != nil {
		return a.fail(ctx, desired, err)
	}
	if !ok {
		msg := "no newer firmware"
		if desired != "" && desired != current {
			msg = "desired version " + desired + " is not offered to this device"
		}
		a.log.Info(msg, "version", current)
		a.event(ctx, wire.EventUpToDate, current, msg, nil)
		a.setState(ctx, wire.UpdateIdle)
		return NoUpdate, nil, nil
	}
	shaHex := hex.EncodeToString(c.info.Hashes["sha256"])
	other := slot.Other(st.Active)
	var inst *installed
	if info, ok := st.Slots[other]; ok && shaHex != "" && info.SHA256 == shaHex && info.Version == c.custom.Version {
		a.log.Info("image already installed, activating", "slot", other, "version", info.Version)
		inst = &installed{Info: info, slot: other}
	} else {
		a.log.Info("update found", "target", c.path, "version", c.custom.Version)
		a.event(ctx, wire.EventUpdateStarted, c.custom.Version, c.path, map[string]string{"from": current})
		a.setState(ctx, wire.UpdateDownloading)
		if inst, err = a.install(ctx, t, c); err != nil {
			return a.fail(ctx, c.custom.Version, err)
		}
		a.event(ctx, wire.EventInstalled, c.custom.Version, "installed into slot "+inst.slot, map[string]string{"slot": inst.slot, "sha256": inst.Info.SHA256})
	}
	if why := a.activationBlocked(); why != "" {
		a.log.Info("activation deferred", "why", why)
		a.event(ctx, wire.EventDeferred, c.custom.Version, why, map[string]string{"slot": inst.slot})
		a.setState(ctx, wire.UpdateInstalled)
		return Deferred, &inst.Info, fmt.Errorf("%w: %s", ErrDeferred, why)
	}
	if err := a.slots.SetTrial(ctx, inst.slot); err != nil {
		return a.fail(ctx, c.custom.Version, err)
	}
	if err := a.record(Journal{Step: StepTrial, Target: c.path, Version: c.custom.Version, SHA256: shaHex, Slot: inst.slot}); err != nil {
		return a.fail(ctx, c.custom.Version, err)
	}
	os.Remove(a.partPath(shaHex))
	a.setState(ctx, wire.UpdateInstalled)
	return Installed, &inst.Info, nil
}

// activationBlocked says why a new slot may not boot now, or "".
func (a *Agent) activationBlocked() string {
	if a.cfg.InCall != nil && a.cfg.InCall() {
		return "a call is active"
	}
	if w := a.cfg.Window; w != nil && !w.Contains(a.cfg.Now()) {
		return "outside the maintenance window " + w.String()
	}
	return ""
}

func (a *Agent) fail(ctx context.Context, version string, err error) (Outcome, *slot.Info, error) {
	var ref *RefusedError
	if errors.As(err, &ref) {
		a.log.Warn("update refused", "err", err)
		a.event(ctx, wire.EventRefused, version, err.Error(), map[string]string{"reason": ref.Reason})
		a.event(ctx, wire.EventSecurity, version, err.Error(), map[string]string{"kind": "update-refused"})
		a.setState(ctx, wire.UpdateRefused)
		return Refused, nil, err
	}
	a.log.Error("update failed", "err", err)
	a.event(ctx, wire.EventFailed, version, err.Error(), nil)
	a.setState(ctx, wire.UpdateFailed)
	return Failed, nil, err
}

func semv(v string) string { return "v" + v }

// pick chooses the target to install: the server's desired version when a
// rollout names one (from any channel: the operator chose it), otherwise
// the newest for this model, hardware and channel that is newer than
// current. Never one below the anti-rollback floor, never one whose
// min_version excludes current, and never an image that already failed its
// trial here (its SHA-256 is in the journal).
func (a *Agent) pick(cands []candidate, current string, fl floor.Version, desired string) (candidate, bool, error) {
	if desired != "" {
		if !semver.IsValid(semv(desired)) {
			return candidate{}, false, fmt.Errorf("desired version %q is not a version", desired)
		}
		if belowFloor(desired, fl) {
			return candidate{}, false, &RefusedError{Reason: fmt.Sprintf("desired version %s is below the anti-rollback floor %s", desired, fl)}
		}
		if desired == current {
			return candidate{}, false, nil
		}
	}
	failed := ""
	if j := a.readJournal(); j.Step == StepRolledBack {
		failed = j.SHA256
	}
	var best candidate
	found := false
	for _, c := range cands {
		cu := c.custom
		if cu.Model != a.cfg.Model || !slices.Contains(cu.Hardware, a.cfg.Hardware) || !semver.IsValid(semv(cu.Version)) {
			continue
		}
		if failed != "" && hex.EncodeToString(c.info.Hashes["sha256"]) == failed {
			continue
		}
		if belowFloor(cu.Version, fl) {
			continue
		}
		if cu.MinVersion != "" && semver.Compare(semv(current), semv(cu.MinVersion)) < 0 {
			continue
		}
		if desired != "" {
			if semver.Compare(semv(cu.Version), semv(desired)) == 0 && (!found || cu.Channel == a.cfg.Channel) {
				best, found = c, true
			}
			continue
		}
		if cu.Channel != a.cfg.Channel || semver.Compare(semv(cu.Version), semv(current)) <= 0 {
			continue
		}
		if !found || semver.Compare(semv(cu.Version), semv(best.custom.Version)) > 0 {
			best, found = c, true
		}
	}
	return best, found, nil
}

type installed struct {
	slot.Info
	slot string
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
