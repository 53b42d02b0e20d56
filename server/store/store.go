// Package store owns the server's persistence: the fleet's devices and the
// events they report. Store is the interface the rest of the server codes
// against; SQLite (modernc.org/sqlite, pure Go) is the embedded default and a
// PostgreSQL implementation will sit behind the same interface. Both must pass
// the shared conformance suite in package storetest.
//
// Schemas are versioned with goose; the SQL migrations are embedded in the
// binary and applied when a store is opened, so opening is also upgrading.
//
// Times are kept with microsecond precision (what PostgreSQL's timestamptz
// keeps) and come back in UTC.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// ErrNotFound is returned when a named device does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a write contradicts what is stored: a device
// reporting under a tenant other than the one it is registered with, or a
// state whose Tenant field differs from the tenant it is stored under.
var ErrConflict = errors.New("conflicts with stored data")

// Device is one device as the fleet last saw it: its latest accepted state and
// when it was last heard from.
type Device struct {
	ID, Tenant, Model, Hardware, Version, Slot, UpdateState string
	Online                                                  bool
	// LastSeen is the latest server receive time of a state or a new event.
	LastSeen time.Time
	TUF      wire.TUFVersions
}

// DeviceFilter narrows ListDevices. Zero fields do not filter; Limit zero (or
// negative) means all.
type DeviceFilter struct {
	Tenant, Model string
	Limit         int
}

// Desired is the version a rollout wants a device to run.
type Desired struct {
	Tenant  string    `json:"tenant"`
	Device  string    `json:"device"`
	Version string    `json:"version"` // "" when withdrawn
	Time    time.Time `json:"time"`    // when it was set or withdrawn
}

// StoredEvent is an event as stored: the tenant it arrived under, the event,
// and when the server received it.
type StoredEvent struct {
	Tenant   string
	Event    wire.Event
	Received time.Time
}

// Store is the fleet store. Implementations are safe for concurrent use.
//
// Device IDs are unique across tenants: a device belongs to the tenant it
// first reported under, and a report for it under another tenant fails with
// ErrConflict.
type Store interface {
	// UpsertState records a device's state, creating the device if needed.
	// A state older (by st.Time) than the stored one is ignored without
	// error, so a late retained message never rolls the fleet view back; a
	// state as new as the stored one replaces it. LastSeen becomes received
	// unless it is already later. An ignored state changes nothing.
	UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error

	// AddEvent stores an event, creating its device if needed. It is
	// idempotent by event ID (per device): a duplicate returns false, nil and
	// changes nothing. A new event also raises the device's LastSeen to
	// received.
	AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (inserted bool, err error)

	// ListDevices returns the devices matching f, ordered by tenant, then ID.
	ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error)

	// Events returns a device's events in Seq order (ties by receive order).
	// With limit > 0 it returns the limit most recent ones (highest Seq),
	// still in ascending Seq order; otherwise all. An unknown device is
	// ErrNotFound; a known device without events is an empty slice.
	Events(ctx context.Context, device string, limit int) ([]StoredEvent, error)

	// Close releases the store's resources.
	Close() error
}
