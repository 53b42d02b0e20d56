package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
	"golang.org/x/mod/semver"
)

// Rollouts is what the API needs to steer which version a device runs.
type Rollouts interface {
	// SetDesired names the version device should run; "" withdraws it.
	SetDesired(ctx context.Context, device, version string) (store.Desired, error)
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
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, Event{ID: e.Event.ID, Seq: e.Event.Seq, Time: e.Event.Time, Received: e.Received, Type: e.Event.Type,
			Version: e.Event.Version, Message: e.Event.Message, Fields: e.Event.Fields})
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out})
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
	d, err := a.opts.Rollouts.SetDesired(r.Context(), id, dr.Version)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no device "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "setting desired version: "+err.Error())
		return
	}
	a.log.Info("desired version set", "device", id, "version", dr.Version, "by", principal(r).TokenID)
	writeJSON(w, http.StatusOK, d)
}
