package report

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// On-disk layout of the outbox directory:
//
//	seq                         last Seq assigned, decimal
//	ev-<20-digit seq>.json      one pending event, exactly the payload sent
//	bad-ev-<seq>.json           a pending event that failed to decode at startup (kept for inspection)
//	.*                          temporary files of an interrupted atomic write (removed at startup)
const (
	seqFile     = "seq"
	eventPrefix = "ev-"
	eventSuffix = ".json"
	badPrefix   = "bad-"
	tmpPrefix   = "." // atomicfile's temporary files
)

// entry is one pending event.
type entry struct {
	seq     uint64
	id      string
	payload []byte
}

// outbox is the durable queue of events not yet acknowledged by the broker.
// Events are written (atomically, fsynced) before they are sent and removed
// after the PUBACK.
type outbox struct {
	dir string
	max int
	log *slog.Logger

	mu      sync.Mutex
	seq     uint64   // last assigned
	pending []*entry // ascending seq
	changed chan struct{}
}

func openOutbox(dir string, limit int, log *slog.Logger) (*outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating outbox: %w", err)
	}
	o := &outbox{dir: dir, max: limit, log: log, changed: make(chan struct{})}
	b, err := os.ReadFile(filepath.Join(dir, seqFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading outbox sequence: %w", err)
	default:
		o.seq, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parsing outbox sequence %s: %w", filepath.Join(dir, seqFile), err)
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing outbox: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, tmpPrefix) && de.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("removing interrupted write: %w", err)
			}
			continue
		}
		seq, ok := parseEventName(name)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		e, err := o.load(name, seq)
		if err != nil {
			// Never drop an event silently: set it aside, loudly.
			o.log.Error("outbox: setting aside unreadable event", "file", name, "error", err)
			if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, badPrefix+name)); err != nil {
				return nil, fmt.Errorf("setting aside %s: %w", name, err)
			}
			continue
		}
		o.pending = append(o.pending, e)
		o.seq = max(o.seq, seq)
	}
	slices.SortFunc(o.pending, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	if n := len(o.pending); n > 0 {
		o.log.Info("outbox: resending events from a previous run", "events", n,
			"first_seq", o.pending[0].seq, "last_seq", o.pending[n-1].seq)
	}
	return o, nil
}

func bySeq(e *entry, seq uint64) int { return cmp.Compare(e.seq, seq) }

func eventName(seq uint64) string { return fmt.Sprintf("%s%020d%s", eventPrefix, seq, eventSuffix) }

func parseEventName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, eventPrefix)
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, eventSuffix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil
}

func (o *outbox) load(name string, seq uint64) (*entry, error) {
	f, err := os.Open(filepath.Join(o.dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, wire.MaxPayload+1))
	if err != nil {
		return nil, err
	}
	e, err := wire.DecodeEvent(b) // also bounds the size
	if err != nil {
		return nil, err
	}
	if e.Seq != seq {
		return nil, fmt.Errorf("seq %d in a file named for %d", e.Seq, seq)
	}
	return &entry{seq: seq, id: e.ID, payload: b}, nil
}

// add assigns the next Seq to e, encodes it and persists it.
func (o *outbox) add(e wire.Event) (wire.Event, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending) >= o.max {
		return wire.Event{}, fmt.Errorf("%d events waiting for the broker: %w", len(o.pending), ErrOutboxFull)
	}
	e.Seq = o.seq + 1
	payload, err := wire.EncodeEvent(e)
	if err != nil {
		return wire.Event{}, fmt.Errorf("encoding event: %w", err)
	}
	// The sequence first: a crash between the two writes leaves a gap in
	// Seq, never a reused Seq.
	if err := atomicfile.WriteFile(filepath.Join(o.dir, seqFile), []byte(strconv.FormatUint(e.Seq, 10)+"\n"), 0o600); err != nil {
		return wire.Event{}, fmt.Errorf("persisting outbox sequence: %w", err)
	}
	o.seq = e.Seq
	if err := atomicfile.WriteFile(filepath.Join(o.dir, eventName(e.Seq)), payload, 0o600); err != nil {
		return wire.Event{}, fmt.Errorf("persisting event: %w", err)
	}
	o.pending = append(o.pending, &entry{seq: e.Seq, id: e.ID, payload: payload})
	o.notifyLocked()
	return e, nil
}

// next returns the first pending event with a Seq above after.
func (o *outbox) next(after uint64) (*entry, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i, _ := slices.BinarySearchFunc(o.pending, after+1, bySeq)
	if i == len(o.pending) {
		return nil, false
	}
	return o.pending[i], true
}

// remove deletes an acknowledged event; removing it twice is harmless.
func (o *outbox) remove(seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	i, found := slices.BinarySearchFunc(o.pending, seq, bySeq)
	if !found {
		return nil
	}
	o.pending = slices.Delete(o.pending, i, i+1)
	o.notifyLocked()
	// A removal lost in a crash only means a duplicate, which the server
	// drops by event ID: no directory fsync here.
	if err := os.Remove(filepath.Join(o.dir, eventName(seq))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing acknowledged event: %w", err)
	}
	return nil
}

// state returns the number of pending events and a channel closed at the
// next change.
func (o *outbox) state() (int, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending), o.changed
}

func (o *outbox) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}
