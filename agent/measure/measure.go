// Package measure owns the agent's measurements: the digest of every
// firmware bundle the phone boots or installs, extended into a PCR of the
// TPM, and the event log (internal/cel) that tells the server what each
// extension was, so that it can replay the log against a quote.
//
// The log lives in the state directory and belongs to one boot: a PCR is
// reset only by a reboot, so a PCR at zero starts a new log. Every record is
// written and synced before its digest is extended; Open reconciles the two
// after a crash between them.
package measure

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/cel"
)

// Errors of Open: the log cannot explain the PCR. The agent keeps going —
// the server's verdict on the next attestation will be untrusted — but it
// never rewrites the log to match, which would hide an attack.
var (
	// ErrLogLost: the PCR holds measurements but there is no log.
	ErrLogLost = errors.New("measurement log lost: the PCR holds measurements it cannot explain")
	// ErrMismatch: the log does not replay to the PCR (extended out of
	// band, or the log was edited).
	ErrMismatch = errors.New("measurement log does not replay to the PCR")
)

// Log is the measurement log of the current boot.
type Log struct {
	path string
	pcr  uint8
	recs []cel.Record
}

// Open reads the log at path for PCR pcr, whose value is now current. A
// PCR at zero (a fresh boot) starts an empty log. A last record whose
// digest never reached the PCR (a crash between writing and extending) is
// dropped. Otherwise a log that does not replay to current is returned
// with ErrMismatch, a missing one with ErrLogLost.
func Open(path string, pcr uint8, current [32]byte) (*Log, error) {
	l := &Log{path: path, pcr: pcr}
	if current == ([32]byte{}) {
		if err := atomicfile.WriteFile(path, nil, 0o600); err != nil {
			return nil, fmt.Errorf("starting the measurement log: %w", err)
		}
		return l, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return l, ErrLogLost
	}
	if err != nil {
		return nil, fmt.Errorf("reading the measurement log: %w", err)
	}
	recs, err := cel.Decode(b)
	if err != nil {
		return l, fmt.Errorf("%w: %w", ErrMismatch, err)
	}
	l.recs = recs
	switch {
	case l.replay(len(recs)) == current:
		return l, nil
	case len(recs) > 0 && l.replay(len(recs)-1) == current:
		l.recs = recs[:len(recs)-1] // written, never extended
		if err := l.save(); err != nil {
			return nil, err
		}
		return l, nil
	default:
		return l, ErrMismatch
	}
}

func (l *Log) replay(n int) [32]byte { return cel.Replay(l.recs[:n])[l.pcr] }

func (l *Log) encode() []byte {
	var b []byte
	for _, r := range l.recs {
		b = cel.Append(b, r)
	}
	return b
}

func (l *Log) save() error {
	if err := atomicfile.WriteFile(l.path, l.encode(), 0o600); err != nil {
		return fmt.Errorf("writing the measurement log: %w", err)
	}
	return nil
}

// Measure records f in the log, synced, then extends its digest with
// extend. If extend fails the record is taken back out.
func (l *Log) Measure(extend func(pcr uint, digest [32]byte) error, f cel.Firmware) error {
	r := cel.NewRecord(uint64(len(l.recs)), l.pcr, f)
	l.recs = append(l.recs, r)
	if err := l.save(); err != nil {
		l.recs = l.recs[:len(l.recs)-1]
		return err
	}
	if err := extend(uint(l.pcr), r.Digest); err != nil {
		l.recs = l.recs[:len(l.recs)-1]
		if serr := l.save(); serr != nil {
			return errors.Join(err, serr)
		}
		return fmt.Errorf("measuring %s %s: %w", f.Kind, f.Version, err)
	}
	return nil
}

// Records returns the log's records.
func (l *Log) Records() []cel.Record { return append([]cel.Record(nil), l.recs...) }

// Bytes is the log in CEL TLV encoding, as the server takes it.
func (l *Log) Bytes() []byte { return bytes.Clone(l.encode()) }

// Booted reports whether the log already measured a booted image: the
// agent measures the image it runs once per boot.
func (l *Log) Booted() bool {
	for _, r := range l.recs {
		if r.Firmware.Kind == cel.KindBooted {
			return true
		}
	}
	return false
}
