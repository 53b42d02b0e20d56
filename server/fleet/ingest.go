// Package fleet owns turning what devices report over MQTT into fleet state:
// it decodes and checks each report (internal/wire), makes sure a device
// speaks only for itself, and records states and events in the store.
//
// Ingestion is idempotent: events are stored by their ID, so an MQTT QoS 1
// redelivery never double-counts (DESIGN.md §6).
//
// Writes are batched (group commit, see New): a report is decoded and
// checked on the goroutine that hands it over, then queued for one writer
// goroutine that stores whatever queued while its previous transaction ran,
// grouped by tenant, in one UpsertStates and one AddEvents each. A device's
// reports are stored in the order they were handed over.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// ErrMismatch is wrapped by Handle's error when a payload names a device or
// tenant other than its topic: a device may only report about itself.
var ErrMismatch = errors.New("topic and payload disagree")

// Store is what ingestion needs from the fleet store (store.Store has it).
// The batch methods are all-or-nothing: one transaction each.
type Store interface {
	UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error
	AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (inserted bool, err error)
	UpsertStates(ctx context.Context, tenant string, states []wire.State, received time.Time) error
	AddEvents(ctx context.Context, tenant string, events []wire.Event, received time.Time) (inserted int, err error)
}

// Stats are an Ingester's counters since it was made.
type Stats struct {
	Stored     uint64 // states and new events written to the store
	Duplicates uint64 // events already stored (redeliveries)
	Telemetry  uint64 // telemetry messages accepted (not stored yet)
	Rejected   uint64 // messages refused: bad topic or payload, mismatch, tenant conflict
	Failed     uint64 // good messages the store failed to record
	// Batches counts the store writes (UpsertStates, AddEvents, and the
	// single writes of a batch retried report by report) of the batching
	// writer; 0 without batching.
	Batches uint64
}

// DefaultMaxBatch is the number of reports one batch takes at most when
// Options.MaxBatch is 0.
const DefaultMaxBatch = 512

// Options configures an Ingester made by New.
type Options struct {
	// Logger receives the ingester's logs; nil discards them.
	Logger *slog.Logger
	// MaxBatch bounds the reports that one batch of store writes takes;
	// 0 means DefaultMaxBatch. 1 turns batching off: each report is then
	// written by the goroutine that calls Handle, in transactions of its
	// own, and New starts no goroutine.
	MaxBatch int
	// OnReject, if set, is called with every report rejected for good (the
	// errors Retryable says no to), where the report's outcome is known: on
	// the goroutine that called Handle, or the batching writer's. It must
	// not block for long: the writer waits for it.
	OnReject func(topic string, err error)
	// OnEvent, if set, is called after an event is stored, where its
	// outcome is known (as OnReject; it must not block for long either), a
	// device's events in the order they were handed to Handle. A
	// redelivered event already stored may be passed again: consumers must
	// be idempotent (by the event's ID).
	OnEvent func(tenant string, e wire.Event)
}

// Ingester handles MQTT reports. It is safe for concurrent use.
type Ingester struct {
	st       Store
	log      *slog.Logger
	now      func() time.Time
	onReject func(topic string, err error)
	onEvent  func(tenant string, e wire.Event)
	maxBatch int

	// The batching writer (nil wake: no batching). mu guards queue, spare
	// and closed.
	mu     sync.Mutex
	queue  []*request
	spare  []*request // the last batch's slice, reused for the queue
	closed bool
	wake   chan struct{} // capacity 1: the queue has news
	done   chan struct{} // closed when the writer has exited

	stored, duplicates, telemetry, rejected, failed, batches atomic.Uint64
}

// NewIngester returns an Ingester that records into st without batching:
// New(ctx, st, Options{Logger: logger, MaxBatch: 1}). A nil logger discards.
func NewIngester(st Store, logger *slog.Logger) *Ingester {
	return newIngester(st, Options{Logger: logger, MaxBatch: 1})
}

// New returns an Ingester that records into st. Unless o.MaxBatch is 1 it
// batches (group commit): Handle still returns only once its report is
// stored or rejected, but the reports of concurrent calls are written
// together by one writer goroutine — while a batch is being written the
// next reports queue, and the next batch takes all of them (up to MaxBatch)
// at once, so that a busy store writes few large transactions and an idle
// one adds no delay.
//
// The writer's store calls run under ctx; once ctx is done, or Close was
// called and the queue is drained, Handle fails with ErrClosed (retryable).
// Call Close to stop the writer.
func New(ctx context.Context, st Store, o Options) *Ingester {
	i := newIngester(st, o)
	if i.maxBatch > 1 {
		i.wake = make(chan struct{}, 1)
		i.done = make(chan struct{})
		go i.write(ctx)
	}
	return i
}

func newIngester(st Store, o Options) *Ingester {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	i := &Ingester{st: st, log: logger, now: time.Now, onReject: o.OnReject, onEvent: o.OnEvent, maxBatch: o.MaxBatch}
	if i.maxBatch <= 0 {
		i.maxBatch = DefaultMaxBatch
	}
	return i
}

// Stats returns a snapshot of the counters.
func (i *Ingester) Stats() Stats {
	return Stats{
		Stored:     i.stored.Load(),
		Duplicates: i.duplicates.Load(),
		Telemetry:  i.telemetry.Load(),
		Rejected:   i.rejected.Load(),
		Failed:     i.failed.Load(),
		Batches:    i.batches.Load(),
	}
}

// Handle decodes one MQTT message (topic and payload) under
// dialtone/v1/<tenant>/<device>/, checks that the payload is about the device
// (and tenant) its topic names, and stores it:
//
//   - state: the payload's Tenant and Device must match the topic; stored with
//     Store.UpsertState (an older state is ignored by the store).
//   - events: the payload's Device must match the topic; stored with
//     Store.AddEvent, a redelivered event counting as a duplicate.
//   - telemetry: must be a JSON object within wire.MaxPayload; counted, not
//     stored yet.
//
// Anything else (another topic, cmd, malformed or oversized payload, unknown
// schema) is rejected with an error wrapping wire.ErrInvalid; a payload about
// another device or tenant with one wrapping ErrMismatch. A device reporting
// under a tenant other than its own is rejected with the store's
// store.ErrConflict. Nothing is stored for a rejected message. Any other error
// is the store's (or ErrClosed, or ctx's when ctx ends while the report waits
// for its batch), and a redelivery may succeed.
func (i *Ingester) Handle(ctx context.Context, topic string, payload []byte) error {
	res := make(chan error, 1)
	i.HandleAsync(ctx, topic, payload, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		// The writer skips the report if it has not taken it yet, else it
		// may still be stored: either way a redelivery is safe.
		return fmt.Errorf("waiting for the store: %w", context.Cause(ctx))
	}
}

// HandleAsync is Handle without the wait: it decodes and checks the report
// on the calling goroutine, queues it for the store, and passes the outcome
// — what Handle would return — to done, once; on the calling goroutine for
// a report that needs no store write (or without batching), else on the
// batching writer's goroutine, so done must not block. Reports handed over
// one after the other are stored, and their done called, in that order:
// a broker can hand over a device's next report before the last one is
// stored, and acknowledge each when its done comes.
func (i *Ingester) HandleAsync(ctx context.Context, topic string, payload []byte, done func(error)) {
	i.handle(ctx, topic, payload, func(err error) { done(i.account(ctx, topic, err)) })
}

// account counts and logs the outcome of a report.
func (i *Ingester) account(ctx context.Context, topic string, err error) error {
	switch {
	case err == nil:
	case errors.Is(err, wire.ErrInvalid), errors.Is(err, ErrMismatch), errors.Is(err, store.ErrConflict):
		i.rejected.Add(1)
		level := slog.LevelDebug
		if errors.Is(err, ErrMismatch) || errors.Is(err, store.ErrConflict) {
			level = slog.LevelWarn // a device speaking for another: worth a look
		}
		i.log.Log(ctx, level, "report rejected", "topic", truncate(topic, 256), "err", err)
		if i.onReject != nil {
			i.onReject(topic, err)
		}
	default:
		i.failed.Add(1)
		i.log.Error("storing report", "topic", topic, "err", err)
	}
	return err
}

// handle passes the outcome of one report to done.
func (i *Ingester) handle(ctx context.Context, topic string, payload []byte, done func(error)) {
	tenant, device, kind, err := wire.ParseTopic(topic)
	if err != nil {
		done(err)
		return
	}
	if len(payload) > wire.MaxPayload {
		done(fmt.Errorf("%w: %s: payload of %d bytes exceeds %d", wire.ErrInvalid, kind, len(payload), wire.MaxPayload))
		return
	}
	switch kind {
	case wire.KindState:
		st, err := wire.DecodeState(payload)
		if err != nil {
			done(fmt.Errorf("state from %s/%s: %w", tenant, device, err))
			return
		}
		if st.Tenant != tenant || st.Device != device {
			done(fmt.Errorf("%w: state on %s/%s names %s/%s", ErrMismatch, tenant, device, st.Tenant, st.Device))
			return
		}
		i.upsertState(ctx, tenant, st, func(err error) {
			if err != nil {
				err = fmt.Errorf("state from %s/%s: %w", tenant, device, err)
			}
			done(err)
		})

	case wire.KindEvents:
		e, err := wire.DecodeEvent(payload)
		if err != nil {
			done(fmt.Errorf("event from %s/%s: %w", tenant, device, err))
			return
		}
		if e.Device != device {
			done(fmt.Errorf("%w: event %s on %s/%s names device %s", ErrMismatch, e.ID, tenant, device, e.Device))
			return
		}
		i.addEvent(ctx, tenant, e, func(err error) {
			if err != nil {
				done(fmt.Errorf("event %s from %s/%s: %w", e.ID, tenant, device, err))
				return
			}
			if i.onEvent != nil {
				i.onEvent(tenant, e)
			}
			done(nil)
		})

	case wire.KindTelemetry:
		// No schema for telemetry yet: accept any JSON object.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
			done(fmt.Errorf("%w: telemetry from %s/%s: not a JSON object", wire.ErrInvalid, tenant, device))
			return
		}
		i.telemetry.Add(1)
		done(nil)

	default: // wire.KindCmd: the server's own direction, never a report
		done(fmt.Errorf("%w: %s is not a report topic", wire.ErrInvalid, kind))
	}
}

// Retryable reports whether err from Handle is the store's, so that a
// redelivery may succeed; a rejected message (malformed, a device speaking
// for another, a tenant conflict) would be rejected again.
func Retryable(err error) bool {
	return err != nil && !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, ErrMismatch) && !errors.Is(err, store.ErrConflict)
}

// truncate bounds attacker-controlled strings in logs.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
