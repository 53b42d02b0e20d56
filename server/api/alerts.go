package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dialtone-dev/dialtone/server/store"
)

// Alerts is what the API needs to list security alerts.
type Alerts interface {
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error)
}

// AlertList is the answer of GET /v1/alerts: alerts newest first, and the
// cursor of the next page (the after parameter) when there may be one.
type AlertList struct {
	Alerts []store.Alert `json:"alerts"`
	Next   string        `json:"next,omitempty"`
}

// Alert listing limits.
const (
	DefaultAlertLimit = 100
	MaxAlertLimit     = 10000
)

// ParseAlertQuery reads the query of GET /v1/alerts: since (RFC 3339),
// kind, device, tenant, limit (DefaultAlertLimit when absent, at most
// MaxAlertLimit) and after (a cursor from AlertList.Next).
func ParseAlertQuery(q map[string][]string) (store.AlertFilter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := store.AlertFilter{Kind: get("kind"), Device: get("device"), Tenant: get("tenant"), After: get("after"), Limit: DefaultAlertLimit}
	for name, v := range map[string]string{"kind": f.Kind, "device": f.Device, "tenant": f.Tenant} {
		if len(v) > store.MaxAlertText {
			return f, fmt.Errorf("%s longer than %d bytes", name, store.MaxAlertText)
		}
	}
	if len(f.After) > 1024 {
		return f, errors.New("after: not a cursor")
	}
	if s := get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return f, fmt.Errorf("since: want an RFC 3339 time: %w", err)
		}
		f.Since = t
	}
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxAlertLimit {
			return f, fmt.Errorf("limit must be a number between 1 and %d", MaxAlertLimit)
		}
		f.Limit = n
	}
	return f, nil
}

func (a *API) alerts(w http.ResponseWriter, r *http.Request) {
	if a.opts.Alerts == nil {
		writeError(w, http.StatusNotImplemented, "this server keeps no alerts")
		return
	}
	f, err := ParseAlertQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f.Tenants = tenantSet(r) // the tenants the caller may see
	as, err := a.opts.Alerts.ListAlerts(r.Context(), f)
	if errors.Is(err, store.ErrBadFilter) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing alerts: "+err.Error())
		return
	}
	out := AlertList{Alerts: as}
	if out.Alerts == nil {
		out.Alerts = []store.Alert{}
	}
	if len(as) == f.Limit {
		out.Next = f.Cursor(as[len(as)-1])
	}
	writeJSON(w, http.StatusOK, out)
}
