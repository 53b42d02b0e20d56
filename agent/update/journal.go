package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
)

// Steps of the update flow, in order. Each is journaled before the flow
// moves on, so that a restart knows where the last run stopped; the test
// hook Config.Crash names the same steps.
const (
	StepVerified    = "verified"    // the publisher signature over the TUF digest checked
	StepDownloading = "downloading" // streaming into the resume file and the inactive slot
	StepDownloaded  = "downloaded"  // TUF length and SHA-256 and every payload hash matched
	StepInstalled   = "installed"   // the slot holds the image; not bootable yet
	StepTrial       = "trial"       // the slot boots next, on trial
	StepBooted      = "booted"      // a trial boot is running its health checks
	StepCommitted   = "committed"   // the slot is good; the floor is next
	StepDone        = "done"        // the floor is raised: nothing pending
	StepRolledBack  = "rolled-back" // the trial failed; the old slot runs
)

// Crash points inside a step, for the crash tests.
const (
	CrashMidDownload = "mid-download" // after the first chunk of a download
	CrashMidExtract  = "mid-extract"  // after the first payload was written to the slot
)

// Journal is the last step the update flow recorded.
type Journal struct {
	Step    string    `json:"step"`
	Target  string    `json:"target,omitempty"`
	Version string    `json:"version,omitempty"`
	SHA256  string    `json:"sha256,omitempty"`
	Slot    string    `json:"slot,omitempty"`
	Time    time.Time `json:"time"`
}

func (a *Agent) journalPath() string { return filepath.Join(a.cfg.StateDir, "journal.json") }

// readJournal returns the last journaled step; none is the zero Journal.
// A corrupt journal is reported and treated as none: every step's effects
// are safe to find without it, the journal only says what happened.
func (a *Agent) readJournal() Journal {
	b, err := os.ReadFile(a.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return Journal{}
	}
	var j Journal
	if err == nil {
		err = json.Unmarshal(b, &j)
	}
	if err != nil {
		a.log.Warn("ignoring unreadable update journal", "err", err)
		return Journal{}
	}
	return j
}

// record journals a step durably, then gives the crash hook its chance.
func (a *Agent) record(j Journal) error {
	j.Time = a.cfg.Now().UTC()
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(a.journalPath(), b, 0o600); err != nil {
		return fmt.Errorf("journaling step %s: %w", j.Step, err)
	}
	a.crashPoint(j.Step)
	return nil
}

func (a *Agent) crashPoint(step string) {
	if a.cfg.Crash != nil {
		a.cfg.Crash(step)
	}
}
