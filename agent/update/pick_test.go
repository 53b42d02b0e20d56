package update

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/floor"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func cand(version, channel string, hw []string, minVersion string, sha byte) candidate {
	return candidate{
		path:   "firmware/dt100/dt100-" + version + ".tar",
		info:   &metadata.TargetFiles{Length: 1, Hashes: metadata.Hashes{"sha256": bytes.Repeat([]byte{sha * 0x11}, 32)}},
		custom: wire.TargetCustom{Model: "dt100", Version: version, Channel: channel, Hardware: hw, MinVersion: minVersion},
	}
}

func TestPick(t *testing.T) {
	revB := []string{"rev-b"}
	cands := []candidate{
		cand("1.1.0", "stable", revB, "", 1),
		cand("1.2.0", "stable", revB, "", 2),
		cand("1.3.0", "beta", revB, "", 3),
		cand("1.4.0", "stable", []string{"rev-z"}, "", 4),
		cand("2.0.0", "stable", revB, "1.2.0", 5),
		{path: "firmware/dt100/other.tar", info: &metadata.TargetFiles{}, custom: wire.TargetCustom{Model: "dt200", Version: "9.0.0", Channel: "stable", Hardware: revB}},
		cand("not-a-version", "stable", revB, "", 6),
	}
	for _, tc := range []struct {
		name     string
		current  string
		floor    floor.Version
		desired  string
		rolled   byte // SHA-256 byte of a version that failed its trial here
		want     string
		refused  bool
		badInput bool
	}{
		{name: "newest on the channel", current: "1.0.0", want: "1.2.0"},
		{name: "min_version lets 1.2.0 go to 2.0.0", current: "1.2.0", want: "2.0.0"},
		{name: "nothing newer", current: "2.0.0", want: ""},
		{name: "floor above every newer one", current: "1.0.0", floor: floor.Version{Major: 1, Minor: 5}, want: ""},
		{name: "floor skips the older", current: "1.0.0", floor: floor.Version{Major: 1, Minor: 2}, want: "1.2.0"},
		{name: "rolled-back image not retried", current: "1.1.0", rolled: 2, want: ""},
		{name: "desired from another channel", current: "1.1.0", desired: "1.3.0", want: "1.3.0"},
		{name: "desired older but above floor", current: "1.2.0", floor: floor.Version{Major: 1, Minor: 1}, desired: "1.1.0", want: "1.1.0"},
		{name: "desired below floor refused", current: "1.2.0", floor: floor.Version{Major: 1, Minor: 2}, desired: "1.1.0", refused: true},
		{name: "desired is current", current: "1.2.0", desired: "1.2.0", want: ""},
		{name: "desired not offered", current: "1.0.0", desired: "1.9.0", want: ""},
		{name: "desired for other hardware", current: "1.0.0", desired: "1.4.0", want: ""},
		{name: "desired below its min_version", current: "1.0.0", desired: "2.0.0", want: ""},
		{name: "desired not a version", current: "1.0.0", desired: "x", badInput: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := &Agent{cfg: Config{StateDir: dir, Model: "dt100", Hardware: "rev-b", Channel: "stable", Now: time.Now}}
			a.log = discard()
			if tc.rolled != 0 {
				j := Journal{Step: StepRolledBack, SHA256: string(bytes.Repeat([]byte{hexDigit(tc.rolled)}, 64))}
				if err := a.record(j); err != nil {
					t.Fatal(err)
				}
			}
			c, ok, err := a.pick(cands, tc.current, tc.floor, tc.desired)
			var ref *RefusedError
			switch {
			case tc.refused:
				if !errors.As(err, &ref) {
					t.Fatalf("err = %v, want a refusal", err)
				}
				return
			case tc.badInput:
				if err == nil || errors.As(err, &ref) {
					t.Fatalf("err = %v, want a plain error", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			got := ""
			if ok {
				got = c.custom.Version
			}
			if got != tc.want {
				t.Fatalf("picked %q, want %q", got, tc.want)
			}
		})
	}
}

// hexDigit is the digit of a candidate's SHA-256 hex: cand repeats the
// byte sha*0x11, whose hex is that digit twice.
func hexDigit(b byte) byte { return "0123456789abcdef"[b] }

func TestWindow(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	at := func(h, m int) time.Time { return time.Date(2026, 11, 25, h, m, 0, 0, loc) }
	for _, tc := range []struct {
		spec string
		in   []time.Time
		out  []time.Time
		err  bool
	}{
		{spec: "02:00-04:30", in: []time.Time{at(2, 0), at(4, 29)}, out: []time.Time{at(1, 59), at(4, 30), at(14, 0)}},
		{spec: "22:00-02:00", in: []time.Time{at(22, 0), at(23, 59), at(0, 0), at(1, 59)}, out: []time.Time{at(2, 0), at(21, 59), at(12, 0)}},
		{spec: "02:00-02:00", err: true},
		{spec: "24:00-02:00", err: true},
		{spec: "02:60-03:00", err: true},
		{spec: "2-3", err: true},
		{spec: "02:00-03:00 ", err: true},
		{spec: "02:00-03:00x", err: true},
		{spec: "", err: true},
	} {
		w, err := ParseWindow(tc.spec)
		if (err != nil) != tc.err {
			t.Errorf("ParseWindow(%q) err = %v", tc.spec, err)
			continue
		}
		if err != nil {
			continue
		}
		if w.String() != tc.spec {
			t.Errorf("String() = %q, want %q", w.String(), tc.spec)
		}
		for _, x := range tc.in {
			if !w.Contains(x) {
				t.Errorf("%s does not contain %s", tc.spec, x.Format("15:04"))
			}
		}
		for _, x := range tc.out {
			if w.Contains(x) {
				t.Errorf("%s contains %s", tc.spec, x.Format("15:04"))
			}
		}
	}
}

func TestCorruptJournalIsIgnored(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{StateDir: dir, Now: time.Now}, log: discard()}
	if err := os.WriteFile(filepath.Join(dir, "journal.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if j := a.readJournal(); j != (Journal{}) {
		t.Fatalf("corrupt journal read as %+v", j)
	}
	var seen []string
	a.cfg.Crash = func(step string) { seen = append(seen, step) }
	if err := a.record(Journal{Step: StepDownloaded, Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if j := a.readJournal(); j.Step != StepDownloaded || j.Version != "1.0.0" || j.Time.IsZero() {
		t.Fatalf("journal = %+v", j)
	}
	if len(seen) != 1 || seen[0] != StepDownloaded {
		t.Fatalf("crash hook saw %v", seen)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestActivationBlocked(t *testing.T) {
	w, err := ParseWindow("02:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	night := time.Date(2026, 11, 25, 3, 0, 0, 0, time.Local)
	noon := time.Date(2026, 11, 25, 12, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		name   string
		window *Window
		inCall bool
		now    time.Time
		want   string
	}{
		{name: "no window, no call", now: noon},
		{name: "inside the window", window: w, now: night},
		{name: "outside the window", window: w, now: noon, want: "outside the maintenance window 02:00-04:00"},
		{name: "call active", inCall: true, now: noon, want: "a call is active"},
		{name: "call active inside the window", window: w, inCall: true, now: night, want: "a call is active"},
	} {
		a := &Agent{cfg: Config{Window: tc.window, InCall: func() bool { return tc.inCall }, Now: func() time.Time { return tc.now }}}
		if got := a.activationBlocked(); got != tc.want {
			t.Errorf("%s: blocked = %q, want %q", tc.name, got, tc.want)
		}
	}
}
