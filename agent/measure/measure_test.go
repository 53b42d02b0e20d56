package measure

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

func fw(kind, version string) cel.Firmware {
	return cel.Firmware{Kind: kind, Version: version, Target: "firmware/dt100/dt100-" + version + ".tar", SHA256: sha256.Sum256([]byte(version))}
}

// onTPM opens sw for the duration of fn, as the agent does per exchange
// (swtpm serves one connection at a time).
func onTPM(t *testing.T, sw *testutil.Swtpm, fn func(extend func(uint, [32]byte) error, pcr [32]byte)) {
	t.Helper()
	tp, err := tpm.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	pcr, err := tpm.ReadPCR(tp, tpm.DefaultPCR)
	if err != nil {
		t.Fatal(err)
	}
	fn(func(p uint, d [32]byte) error { return tpm.Extend(tp, p, d) }, pcr)
}

// TestLogFollowsThePCR on a real swtpm: measurements replay to the PCR; a
// crash between writing a record and extending it is repaired; a PCR
// extended behind the agent's back, or a lost log, is reported and the log
// left as it is; a reboot starts a new log.
func TestLogFollowsThePCR(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	path := filepath.Join(t.TempDir(), "measurements.cel")
	var l *Log
	onTPM(t, sw, func(extend func(uint, [32]byte) error, pcr [32]byte) {
		var err error
		if l, err = Open(path, tpm.DefaultPCR, pcr); err != nil {
			t.Fatalf("Open on a fresh boot: %v", err)
		}
		for _, f := range []cel.Firmware{fw(cel.KindBooted, "1.0.0"), fw(cel.KindInstalled, "1.1.0")} {
			if err := l.Measure(extend, f); err != nil {
				t.Fatal(err)
			}
		}
	})
	if !l.Booted() || len(l.Records()) != 2 {
		t.Fatalf("records %+v", l.Records())
	}
	onTPM(t, sw, func(_ func(uint, [32]byte) error, pcr [32]byte) {
		if got := cel.Replay(l.Records())[tpm.DefaultPCR]; got != pcr {
			t.Fatalf("log replays to %x, PCR is %x", got, pcr)
		}
		again, err := Open(path, tpm.DefaultPCR, pcr)
		if err != nil || len(again.Records()) != 2 {
			t.Fatalf("reopening: %d records, %v", len(again.Records()), err)
		}
	})

	t.Run("crash between writing and extending", func(t *testing.T) {
		b, _ := os.ReadFile(path)
		b = cel.Append(b, cel.NewRecord(2, tpm.DefaultPCR, fw(cel.KindInstalled, "1.2.0")))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		onTPM(t, sw, func(_ func(uint, [32]byte) error, pcr [32]byte) {
			l, err := Open(path, tpm.DefaultPCR, pcr)
			if err != nil || len(l.Records()) != 2 {
				t.Fatalf("Open = %d records, %v; want the unextended record dropped", len(l.Records()), err)
			}
		})
		if b, _ := os.ReadFile(path); len(b) != len(l.Bytes()) {
			t.Fatal("the repaired log was not written back")
		}
	})

	t.Run("extend fails", func(t *testing.T) {
		onTPM(t, sw, func(_ func(uint, [32]byte) error, pcr [32]byte) {
			l, err := Open(path, tpm.DefaultPCR, pcr)
			if err != nil {
				t.Fatal(err)
			}
			boom := errors.New("tpm gone")
			if err := l.Measure(func(uint, [32]byte) error { return boom }, fw(cel.KindInstalled, "1.3.0")); !errors.Is(err, boom) {
				t.Fatalf("Measure = %v", err)
			}
			if again, err := Open(path, tpm.DefaultPCR, pcr); err != nil || len(again.Records()) != 2 {
				t.Fatalf("after a failed extend: %d records, %v", len(again.Records()), err)
			}
		})
	})

	t.Run("extended out of band", func(t *testing.T) {
		before, _ := os.ReadFile(path)
		onTPM(t, sw, func(extend func(uint, [32]byte) error, _ [32]byte) {
			if err := extend(tpm.DefaultPCR, sha256.Sum256([]byte("evil"))); err != nil {
				t.Fatal(err)
			}
		})
		onTPM(t, sw, func(_ func(uint, [32]byte) error, pcr [32]byte) {
			if _, err := Open(path, tpm.DefaultPCR, pcr); !errors.Is(err, ErrMismatch) {
				t.Fatalf("Open = %v, want ErrMismatch", err)
			}
		})
		if after, _ := os.ReadFile(path); string(after) != string(before) {
			t.Fatal("the agent rewrote a log that does not match: that would hide the attack")
		}
	})

	t.Run("log lost", func(t *testing.T) {
		lost := filepath.Join(t.TempDir(), "none.cel")
		onTPM(t, sw, func(_ func(uint, [32]byte) error, pcr [32]byte) {
			if _, err := Open(lost, tpm.DefaultPCR, pcr); !errors.Is(err, ErrLogLost) {
				t.Fatalf("Open = %v, want ErrLogLost", err)
			}
		})
	})

	t.Run("reboot starts a new log", func(t *testing.T) {
		sw.Kill()
		sw.Start() // startup-clear: PCRs back to zero
		onTPM(t, sw, func(_ func(uint, [32]byte) error, pcr [32]byte) {
			l, err := Open(path, tpm.DefaultPCR, pcr)
			if err != nil || len(l.Records()) != 0 || l.Booted() {
				t.Fatalf("after a reboot: %d records, %v", len(l.Records()), err)
			}
		})
	})
}
