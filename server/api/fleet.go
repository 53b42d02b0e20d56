package api

import (
	"fmt"
	"net/http"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// AttestationTrusted is the attestation outcome of a device whose TPM quote
// the server verified. Any other outcome but none ("") counts as untrusted.
const AttestationTrusted = "trusted"

// FleetSummary is the answer of GET /v1/fleet/summary: the devices by
// tenant, model, version, update state, attestation and online, a
// firmware compliance report.
type FleetSummary struct {
	// TUFTimestamp is the repository's current timestamp version; a device
	// trusting one more than one version older counts in TUFBehind.
	TUFTimestamp int64              `json:"tuf_timestamp"`
	Rows         []store.SummaryRow `json:"rows"`
	Totals       FleetTotals        `json:"totals"`
}

// FleetTotals sums a summary's rows.
type FleetTotals struct {
	Devices int64 `json:"devices"`
	Online  int64 `json:"online"`
	Offline int64 `json:"offline"`
	// Untrusted devices have an attestation outcome other than trusted;
	// Unattested ones none yet.
	Untrusted  int64 `json:"untrusted"`
	Unattested int64 `json:"unattested"`
	TUFBehind  int64 `json:"tuf_behind"`
}

// Totals sums rows.
func Totals(rows []store.SummaryRow) FleetTotals {
	var t FleetTotals
	for _, r := range rows {
		t.Devices += r.Devices
		if r.Online {
			t.Online += r.Devices
		} else {
			t.Offline += r.Devices
		}
		switch r.Attestation {
		case AttestationTrusted:
		case "":
			t.Unattested += r.Devices
		default:
			t.Untrusted += r.Devices
		}
		t.TUFBehind += r.TUFBehind
	}
	return t
}

func (a *API) fleetSummary(w http.ResponseWriter, r *http.Request) {
	var f store.SummaryFilter
	for k, vs := range r.URL.Query() {
		switch {
		case k != "tenant":
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q (want tenant)", k))
			return
		case len(vs) != 1 || !wire.ValidID(vs[0]):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tenant=%q: want one valid tenant name", vs))
			return
		}
		f.Tenant = vs[0]
	}
	f.Tenants = tenantSet(r) // the tenants the caller may see
	ts := a.tufTimestamp()
	f.TUFTimestampBelow = a.tufBehindBelow()
	rows, err := a.opts.Devices.FleetSummary(r.Context(), f)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "summarising the fleet: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, FleetSummary{TUFTimestamp: ts, Rows: rows, Totals: Totals(rows)})
}
