// Package fleet owns turning what devices report over MQTT into fleet state:
// it decodes and checks each report (internal/wire), makes sure a device
// speaks only for itself, and records states and events in the store.
//
// Ingestion is idempotent: events are stored by their ID, so an MQTT QoS 1
// redelivery never double-counts (DESIGN.md §6).
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// ErrMismatch is wrapped by Handle's error when a payload names a device or
// tenant other than its topic: a device may only report about itself.
var ErrMismatch = errors.New("topic and payload disagree")

// Store is what ingestion needs from the fleet store (store.Store has it).
type Store interface {
	UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error
	AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (inserted bool, err error)
}

// Stats are an Ingester's counters since it was made.
type Stats struct {
	Stored     uint64 // states and new events written to the store
	Duplicates uint64 // events already stored (redeliveries)
	Telemetry  uint64 // telemetry messages accepted (not stored yet)
	Rejected   uint64 // messages refused: bad topic or payload, mismatch, tenant conflict
	Failed     uint64 // good messages the store failed to record
}

// Ingester handles MQTT reports. It is safe for concurrent use.
type Ingester struct {
	st  Store
	log *slog.Logger
	now func() time.Time

	stored, duplicates, telemetry, rejected, failed atomic.Uint64
}

// NewIngester returns an Ingester that records into st. A nil logger discards.
func NewIngester(st Store, logger *slog.Logger) *Ingester {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Ingester{st: st, log: logger, now: time.Now}
}

// Stats returns a snapshot of the counters.
func (i *Ingester) Stats() Stats {
	return Stats{
		Stored:     i.stored.Load(),
		Duplicates: i.duplicates.Load(),
		Telemetry:  i.telemetry.Load(),
		Rejected:   i.rejected.Load(),
		Failed:     i.failed.Load(),
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
// is the store's, and a redelivery may succeed.
func (i *Ingester) Handle(ctx context.Context, topic string, payload []byte) error {
	err := i.handle(ctx, topic, payload)
	switch {
	case err == nil:
	case errors.Is(err, wire.ErrInvalid), errors.Is(err, ErrMismatch), errors.Is(err, store.ErrConflict):
		i.rejected.Add(1)
		level := slog.LevelDebug
		if errors.Is(err, ErrMismatch) || errors.Is(err, store.ErrConflict) {
			level = slog.LevelWarn // a device speaking for another: worth a look
		}
		i.log.Log(ctx, level, "report rejected", "topic", truncate(topic, 256), "err", err)
	default:
		i.failed.Add(1)
		i.log.Error("storing report", "topic", topic, "err", err)
	}
	return err
}

func (i *Ingester) handle(ctx context.Context, topic string, payload []byte) error {
	tenant, device, kind, err := wire.ParseTopic(topic)
	if err != nil {
		return err
	}
	if len(payload) > wire.MaxPayload {
		return fmt.Errorf("%w: %s: payload of %d bytes exceeds %d", wire.ErrInvalid, kind, len(payload), wire.MaxPayload)
	}
	switch kind {
	case wire.KindState:
		st, err := wire.DecodeState(payload)
		if err != nil {
			return fmt.Errorf("state from %s/%s: %w", tenant, device, err)
		}
		if st.Tenant != tenant || st.Device != device {
			return fmt.Errorf("%w: state on %s/%s names %s/%s", ErrMismatch, tenant, device, st.Tenant, st.Device)
		}
		if err := i.st.UpsertState(ctx, tenant, st, i.now()); err != nil {
			return fmt.Errorf("state from %s/%s: %w", tenant, device, err)
		}
		i.stored.Add(1)
		return nil

	case wire.KindEvents:
		e, err := wire.DecodeEvent(payload)
		if err != nil {
			return fmt.Errorf("event from %s/%s: %w", tenant, device, err)
		}
		if e.Device != device {
			return fmt.Errorf("%w: event %s on %s/%s names device %s", ErrMismatch, e.ID, tenant, device, e.Device)
		}
		inserted, err := i.st.AddEvent(ctx, tenant, e, i.now())
		if err != nil {
			return fmt.Errorf("event %s from %s/%s: %w", e.ID, tenant, device, err)
		}
		if inserted {
			i.stored.Add(1)
		} else {
			i.duplicates.Add(1)
		}
		return nil

	case wire.KindTelemetry:
		// No schema for telemetry yet: accept any JSON object.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
			return fmt.Errorf("%w: telemetry from %s/%s: not a JSON object", wire.ErrInvalid, tenant, device)
		}
		i.telemetry.Add(1)
		return nil

	default: // wire.KindCmd: the server's own direction, never a report
		return fmt.Errorf("%w: %s is not a report topic", wire.ErrInvalid, kind)
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
