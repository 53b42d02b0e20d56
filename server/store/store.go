// Package store owns the server's persistence: the fleet's devices and the
// events they report. Store is the interface the rest of the server codes
// against; SQLite (modernc.org/sqlite, pure Go) is the embedded default and
// PostgreSQL (pgx) the one for several server replicas. Both pass the shared
// conformance suite in package storetest.
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

// ErrBadFilter is returned by ListDevices for a DeviceFilter it cannot apply:
// an unknown sort order, or a cursor that is malformed or from another order.
var ErrBadFilter = errors.New("bad device filter")

// Device is one device as the fleet last saw it: its latest accepted state and
// when it was last heard from.
type Device struct {
	ID, Tenant, Model, Hardware, Version, Slot, UpdateState string
	Online                                                  bool
	// LastSeen is the latest server receive time of a state or a new event.
	LastSeen time.Time
	TUF      wire.TUFVersions
	// Attestation is the latest attestation outcome, "" until there is one;
	// Attested is the time of that outcome, zero until there is one.
	Attestation string
	Attested    time.Time

	// Store.Device fills the fields below; ListDevices leaves them zero.

	// StateTime is the time of the latest state the device reported, zero
	// if it reported none (it is known from events only).
	StateTime time.Time
	// DesiredVersion and DesiredTime are the version a rollout wants the
	// device to run ("" for none) and when that was set or withdrawn.
	DesiredVersion string
	DesiredTime    time.Time
}

// Sort orders of ListDevices. Each sorts by its key, then tenant, then
// device ID, which is unique, so that pages never skip or repeat a device.
// Strings sort by their bytes (so "1.10.0" sorts before "1.9.0").
const (
	SortID       = "id" // tenant, then ID; the default
	SortLastSeen = "last_seen"
	SortVersion  = "version"
	SortModel    = "model"
)

// DeviceFilter narrows and orders ListDevices. Zero fields do not filter.
type DeviceFilter struct {
	// Exact matches. Case matters.
	Tenant, Model, Version, Attestation string
	// Tenants, when not nil, keeps the devices of these tenants only (the
	// tenants the caller may see); an empty, non-nil set keeps none.
	Tenants []string
	// Online, when set, keeps the devices whose online flag equals it.
	Online *bool
	// SeenSince keeps devices with LastSeen at or after it; SeenBefore those
	// with LastSeen strictly before it.
	SeenSince, SeenBefore time.Time
	// TUFTimestampBelow, when positive, keeps the devices that reported a
	// state whose TUF timestamp version is below it: phones behind a frozen
	// mirror. Devices that never reported a state are not kept.
	TUFTimestampBelow int64

	// Sort is one of the Sort constants; "" is SortID. Desc reverses it.
	Sort string
	Desc bool

	// Limit caps the number of devices; zero or negative means all.
	Limit int
	// After continues a listing after the device that Cursor named: keyset
	// pagination, which stays fast deep into the fleet and does not skip or
	// repeat devices when others are added between pages. The filter and
	// order must be the same as for the page the cursor came from.
	After string
	// Offset skips that many devices (after After, if both are set). Deep
	// offsets cost as much as reading the skipped devices; prefer After.
	Offset int
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
//
// Stored strings must be valid UTF-8 without NUL bytes (PostgreSQL's text
// cannot hold NUL); a write carrying anything else fails with an error
// wrapping wire.ErrInvalid, on every implementation alike.
type Store interface {
	// UpsertState records a device's state, creating the device if needed.
	// A state older (by st.Time) than the stored one is ignored without
	// error, so a late retained message never rolls the fleet view back; a
	// state as new as the stored one replaces it. LastSeen becomes received
	// unless it is already later. An ignored state changes nothing.
	UpsertState(ctx context.Context, tenant string, st wire.State, received time.Time) error

	// UpsertStates records states as UpsertState would one after the other,
	// in one transaction: if any of them fails (ErrConflict, invalid), none
	// is recorded.
	UpsertStates(ctx context.Context, tenant string, states []wire.State, received time.Time) error

	// AddEvent stores an event, creating its device if needed. It is
	// idempotent by event ID (per device): a duplicate returns false, nil and
	// changes nothing. A new event also raises the device's LastSeen to
	// received.
	AddEvent(ctx context.Context, tenant string, e wire.Event, received time.Time) (inserted bool, err error)

	// AddEvents stores events as AddEvent would one after the other, in one
	// transaction, and returns how many were new. A duplicate, of a stored
	// event or of an earlier one in the batch, is skipped. If any event fails
	// (ErrConflict, invalid), none is stored. Events of a batch that share a
	// device and Seq keep their batch order.
	AddEvents(ctx context.Context, tenant string, events []wire.Event, received time.Time) (inserted int, err error)

	// SetAttestation records the outcome of a device's attestation at time
	// at. An outcome older than the stored one is ignored without error; one
	// as new replaces it. It does not change LastSeen. An unknown device is
	// ErrNotFound.
	SetAttestation(ctx context.Context, device, state string, at time.Time) error

	// ListDevices returns the devices matching f, in the order f names.
	ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error)

	// Events returns a device's events in Seq order (ties by receive order).
	// With limit > 0 it returns the limit most recent ones (highest Seq),
	// still in ascending Seq order; otherwise all. An unknown device is
	// ErrNotFound; a known device without events is an empty slice.
	Events(ctx context.Context, device string, limit int) ([]StoredEvent, error)

	// CountEvents returns how many events a device has. An unknown device is
	// ErrNotFound.
	CountEvents(ctx context.Context, device string) (int, error)

	// SetDesired records the version a rollout wants device to run ("" for
	// none) and returns it with the device's tenant; an unknown device is
	// ErrNotFound. A change older (by at) than the recorded one is ignored
	// and the recorded one returned.
	SetDesired(ctx context.Context, device, version string, at time.Time) (Desired, error)

	// DesiredVersions lists every device whose desired version was ever
	// set, withdrawn ones (Version "") included, by tenant and ID.
	DesiredVersions(ctx context.Context) ([]Desired, error)

	// Close releases the store's resources.
	Close() error

	// Device returns one device, its desired version included. An unknown
	// device is ErrNotFound.
	Device(ctx context.Context, id string) (Device, error)

	// FleetSummary counts the devices matching f grouped by tenant, model,
	// version, update state, attestation and online, in that order.
	FleetSummary(ctx context.Context, f SummaryFilter) ([]SummaryRow, error)

	// AddAlert stores a security alert; it is idempotent by ID: an ID
	// already stored returns false, adds nothing, and leaves the stored
	// alert with the larger Count and the later Last of the two.
	AddAlert(ctx context.Context, a Alert) (inserted bool, err error)

	// ListAlerts returns the alerts matching f, newest first.
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
}
