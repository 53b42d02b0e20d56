package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/store"
	"golang.org/x/mod/semver"
)

// ErrRequest is wrapped by every error of a malformed device query or
// command request.
var ErrRequest = errors.New("malformed request")

// Rollouts is what the API needs to steer devices.
type Rollouts interface {
	// SetDesired names the version device should run; "" withdraws it.
	SetDesired(ctx context.Context, device, version string) (store.Desired, error)
	// Command sends device a one-off command (check, attest, reboot, config) and
	// returns it as sent; store.ErrNotFound for an unknown device.
	Command(ctx context.Context, device, name string) (wire.Command, error)
}

// Device is the API's view of a device.
type Device struct {
	ID          string           `json:"id"`
	Tenant      string           `json:"tenant"`
	Model       string           `json:"model"`
	Hardware    string           `json:"hardware"`
	Version     string           `json:"version"`
	Slot        string           `json:"slot"`
	UpdateState string           `json:"update_state"`
	Online      bool             `json:"online"`
	LastSeen    time.Time        `json:"last_seen"`
	TUF         wire.TUFVersions `json:"tuf"`
	// Attestation is the latest attestation outcome, "" until there is
	// one, and Attested when it was reached.
	Attestation string    `json:"attestation,omitempty"`
	Attested    time.Time `json:"attested,omitzero"`
}

func (a *API) apiDevice(d store.Device) Device {
	if a.opts.Attest != nil {
		// A trusted verdict older than the period reads stale at once,
		// not only when the sweeper has recorded it.
		d.Attestation = a.opts.Attest.Status(d)
	}
	return Device{ID: d.ID, Tenant: d.Tenant, Model: d.Model, Hardware: d.Hardware, Version: d.Version,
		Slot: d.Slot, UpdateState: d.UpdateState, Online: d.Online, LastSeen: d.LastSeen, TUF: d.TUF,
		Attestation: d.Attestation, Attested: d.Attested}
}

// DeviceList is the answer of GET /v1/devices.
type DeviceList struct {
	Devices []Device `json:"devices"`
	// Next is the cursor of the next page, "" after the last one.
	Next string `json:"next"`
}

// Bounds of a page of GET /v1/devices.
const (
	DefaultDeviceLimit = 100
	MaxDeviceLimit     = 10000
)

// DeviceQuery is a decoded GET /v1/devices query.
type DeviceQuery struct {
	Filter store.DeviceFilter
	// TUFBehind keeps the devices more than one version behind the
	// repository's current timestamp.
	TUFBehind bool
}

// ParseDeviceQuery decodes and checks the query of GET /v1/devices. Every
// error wraps ErrRequest and names the parameter at fault.
func ParseDeviceQuery(q url.Values) (DeviceQuery, error) {
	dq := DeviceQuery{Filter: store.DeviceFilter{Limit: DefaultDeviceLimit}}
	f := &dq.Filter
	for k, vs := range q {
		if len(vs) != 1 {
			return dq, fmt.Errorf("%w: query parameter %s given %d times", ErrRequest, k, len(vs))
		}
		v := vs[0]
		var err error
		switch k {
		case "tenant", "model":
			if !wire.ValidID(v) {
				err = fmt.Errorf("%q is not a valid name", v)
			}
			if k == "tenant" {
				f.Tenant = v
			} else {
				f.Model = v
			}
		case "version", "attestation":
			if v == "" || len(v) > 64 || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				err = fmt.Errorf("want 1 to 64 bytes of text")
			}
			if k == "version" {
				f.Version = v
			} else {
				f.Attestation = v
			}
		case "online":
			var b bool
			b, err = parseBool(v)
			f.Online = &b
		case "seen_since", "seen_before":
			var t time.Time
			if t, err = time.Parse(time.RFC3339Nano, v); err != nil {
				err = fmt.Errorf("want an RFC 3339 time such as 2026-11-25T10:00:00Z")
			}
			if k == "seen_since" {
				f.SeenSince = t
			} else {
				f.SeenBefore = t
			}
		case "sort":
			switch v {
			case store.SortID, store.SortLastSeen, store.SortVersion, store.SortModel:
				f.Sort = v
			default:
				err = fmt.Errorf("want %s, %s, %s or %s", store.SortID, store.SortLastSeen, store.SortVersion, store.SortModel)
			}
		case "desc":
			f.Desc, err = parseBool(v)
		case "limit":
			f.Limit, err = strconv.Atoi(v)
			if err != nil || f.Limit < 1 || f.Limit > MaxDeviceLimit {
				err = fmt.Errorf("want a number from 1 to %d", MaxDeviceLimit)
			}
		case "cursor":
			if len(v) > 1024 {
				err = fmt.Errorf("too long")
			}
			f.After = v
		case "tuf_behind":
			dq.TUFBehind, err = parseBool(v)
		default:
			return dq, fmt.Errorf("%w: unknown query parameter %q", ErrRequest, k)
		}
		if err != nil {
			return dq, fmt.Errorf("%w: %s=%q: %v", ErrRequest, k, v, err)
		}
	}
	return dq, nil
}

func parseBool(v string) (bool, error) {
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errors.New("want true or false")
}

// tufTimestamp returns the repository's current timestamp version, 0 if it
// has none.
func (a *API) tufTimestamp() int64 {
	for _, rs := range a.opts.Repo.Status() {
		if rs.Role == "timestamp" {
			return rs.Version
		}
	}
	return 0
}

// tufBehindBelow is the TUFTimestampBelow that keeps the devices more than
// one version behind the repository's timestamp; 0 if none can be.
func (a *API) tufBehindBelow() int64 {
	return max(a.tufTimestamp()-1, 0)
}

func (a *API) devices(w http.ResponseWriter, r *http.Request) {
	dq, err := ParseDeviceQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f := dq.Filter
	f.Tenants = tenantSet(r) // the tenants the caller may see
	if dq.TUFBehind {
		if f.TUFTimestampBelow = a.tufBehindBelow(); f.TUFTimestampBelow == 0 {
			// The repository is too young for any device to lag.
			writeJSON(w, http.StatusOK, DeviceList{Devices: []Device{}})
			return
		}
	}
	limit := f.Limit
	f.Limit++ // one more tells whether there is a next page
	ds, err := a.opts.Devices.ListDevices(r.Context(), f)
	if errors.Is(err, store.ErrBadFilter) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing devices: "+err.Error())
		return
	}
	out := DeviceList{Devices: make([]Device, 0, min(len(ds), limit))}
	if len(ds) > limit {
		ds = ds[:limit]
		out.Next = f.Cursor(ds[len(ds)-1])
	}
	for _, d := range ds {
		out.Devices = append(out.Devices, a.apiDevice(d))
	}
	writeJSON(w, http.StatusOK, out)
}

// DeviceEvents is how many of its latest events GET /v1/devices/{id} shows.
const DeviceEvents = 20

// DeviceDetail is the answer of GET /v1/devices/{id}: the device's state,
// the version a rollout wants it to run, and its latest events.
type DeviceDetail struct {
	Device
	// DesiredVersion is "" when none is set (or it was withdrawn at
	// DesiredTime).
	DesiredVersion string    `json:"desired_version,omitempty"`
	DesiredTime    time.Time `json:"desired_time,omitzero"`
	// TUFBehind: the device trusts a TUF timestamp more than one version
	// older than the repository's.
	TUFBehind bool `json:"tuf_behind"`
	// Events are the latest DeviceEvents events, oldest first.
	Events []Event `json:"events"`
}

func (a *API) device(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !wire.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad device id %q", id))
		return
	}
	d, err := a.opts.Devices.Device(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no device "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading device: "+err.Error())
		return
	}
	evs, err := a.opts.Devices.Events(r.Context(), id, DeviceEvents)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading events: "+err.Error())
		return
	}
	below := a.tufBehindBelow()
	writeJSON(w, http.StatusOK, DeviceDetail{
		Device:         a.apiDevice(d),
		DesiredVersion: d.DesiredVersion,
		DesiredTime:    d.DesiredTime,
		// As store.DeviceFilter.TUFTimestampBelow has it: a device that
		// reported no state has no TUF versions to lag with.
		TUFBehind: below > 0 && !d.StateTime.IsZero() && d.TUF.Timestamp < below,
		Events:    apiEvents(evs),
	})
}

// Event is one stored event as the API shows it.
type Event struct {
	ID       string            `json:"id"`
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Received time.Time         `json:"received"`
	Type     string            `json:"type"`
	Version  string            `json:"version,omitempty"`
	Message  string            `json:"message,omitempty"`
	Fields   map[string]string `json:"fields,omitempty"`
}

func (a *API) deviceEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !wire.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad device id %q", id))
		return
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 || n > 100000 {
			writeError(w, http.StatusBadRequest, "limit must be a number between 0 and 100000")
			return
		}
		limit = n
	}
	evs, err := a.opts.Devices.Events(r.Context(), id, limit)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no device "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading events: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": apiEvents(evs)})
}

func apiEvents(evs []store.StoredEvent) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, Event{ID: e.Event.ID, Seq: e.Event.Seq, Time: e.Event.Time, Received: e.Received, Type: e.Event.Type,
			Version: e.Event.Version, Message: e.Event.Message, Fields: e.Event.Fields})
	}
	return out
}

// DesiredRequest is the body of PUT /v1/devices/{id}/desired.
type DesiredRequest struct {
	// Version the device should run; "" withdraws the desired version.
	Version string `json:"version"`
}

// DecodeDesiredRequest reads and checks a desired-version request.
func DecodeDesiredRequest(r io.Reader) (DesiredRequest, error) {
	var dr DesiredRequest
	dec := json.NewDecoder(io.LimitReader(r, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&dr); err != nil {
		return dr, fmt.Errorf("%w: %v", ErrForm, err)
	}
	if dr.Version != "" && (len(dr.Version) > 64 || !semver.IsValid("v"+dr.Version) || semver.Canonical("v"+dr.Version) != "v"+strings.SplitN(dr.Version, "+", 2)[0]) {
		return dr, fmt.Errorf("%w: version %q is not MAJOR.MINOR.PATCH", ErrForm, dr.Version)
	}
	return dr, nil
}

func (a *API) setDesired(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !wire.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad device id %q", id))
		return
	}
	if a.opts.Rollouts == nil {
		writeError(w, http.StatusNotImplemented, "this server steers no devices (no broker)")
		return
	}
	dr, err := DecodeDesiredRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	before := a.desiredBefore(r.Context(), id)
	d, err := a.opts.Rollouts.SetDesired(r.Context(), id, dr.Version)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no device "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "setting desired version: "+err.Error())
		return
	}
	audit.SetTenant(r.Context(), d.Tenant)
	audit.SetChange(r.Context(), before, d)
	a.log.Info("desired version set", "device", id, "version", dr.Version, "by", principal(r).String())
	writeJSON(w, http.StatusOK, d)
}

// CommandRequest is the body of POST /v1/devices/{id}/cmd.
type CommandRequest struct {
	// Name is check, attest, reboot or config.
	Name string `json:"name"`
}

// MaxCommandRequestBytes bounds the body of POST /v1/devices/{id}/cmd.
const MaxCommandRequestBytes = 1 << 10

// DecodeCommandRequest reads and checks a command request: one JSON object,
// at most MaxCommandRequestBytes, no unknown fields, naming check, attest or
// reboot. Every error wraps ErrRequest.
func DecodeCommandRequest(r io.Reader) (CommandRequest, error) {
	var cr CommandRequest
	b, err := io.ReadAll(io.LimitReader(r, MaxCommandRequestBytes+1))
	if err != nil {
		return cr, fmt.Errorf("%w: reading: %v", ErrRequest, err)
	}
	if len(b) > MaxCommandRequestBytes {
		return cr, fmt.Errorf("%w: body exceeds %d bytes", ErrRequest, MaxCommandRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cr); err != nil {
		return cr, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	if dec.More() {
		return cr, fmt.Errorf("%w: trailing data after the JSON object", ErrRequest)
	}
	switch cr.Name {
	case wire.CmdCheck, wire.CmdAttest, wire.CmdReboot, wire.CmdConfig:
	case wire.CmdDesired:
		return cr, fmt.Errorf("%w: a desired version is set with PUT /v1/devices/{id}/desired", ErrRequest)
	default:
		return cr, fmt.Errorf("%w: command %q: want check, attest, reboot or config", ErrRequest, cr.Name)
	}
	return cr, nil
}

// CommandSent is the answer of POST /v1/devices/{id}/cmd.
type CommandSent struct {
	Device string    `json:"device"`
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Time   time.Time `json:"time"`
}

func (a *API) deviceCommand(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !wire.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad device id %q", id))
		return
	}
	if a.opts.Rollouts == nil {
		writeError(w, http.StatusNotImplemented, "this server sends no commands (no broker)")
		return
	}
	cr, err := DecodeCommandRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	cmd, err := a.opts.Rollouts.Command(r.Context(), id, cr.Name)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no device "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "sending command: "+err.Error())
		return
	}
	a.log.Info("command sent", "device", id, "name", cmd.Name, "id", cmd.ID, "by", principal(r).String())
	// Accepted: the broker has it; whether the device acts on it shows in
	// its events.
	writeJSON(w, http.StatusAccepted, CommandSent{Device: id, ID: cmd.ID, Name: cmd.Name, Time: cmd.Time})
}
