package alert

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/fleet"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Converters from what the rest of the server sees to alerts. Everything
// they copy comes from outside (topics, client IDs, payload text): it is
// cut to bounded, valid UTF-8 without NUL bytes.

// maxErrorText bounds the error text an ingest alert quotes.
const maxErrorText = 300

// FromEvent returns the alert an agent's event raises: a security event
// (wire.EventSecurity) is KindAgentSecurity, critical, keyed by its "kind"
// field; a refused update (wire.EventRefused) is KindUpdateRefused, a
// warning, keyed by its version. Other events raise none (ok false). The
// event's ID is the occurrence, so a redelivered event counts once.
func FromEvent(tenant string, e wire.Event) (a Alert, ok bool) {
	a = Alert{Source: SourceAgent, Tenant: tenant, Device: e.Device, Message: e.Message, Occurrence: e.ID,
		Fields: map[string]string{"event": e.ID}}
	for k, v := range e.Fields {
		a.Fields[k] = v
	}
	if e.Version != "" {
		a.Fields["version"] = e.Version
	}
	switch e.Type {
	case wire.EventSecurity:
		a.Kind, a.Severity, a.Key = KindAgentSecurity, SeverityCritical, e.Fields["kind"]
		if a.Message == "" {
			a.Message = "security event"
		}
	case wire.EventRefused:
		a.Kind, a.Severity, a.Key = KindUpdateRefused, SeverityWarning, e.Version
		if a.Message == "" {
			a.Message = "update refused"
		}
	default:
		return Alert{}, false
	}
	a.Message = "agent: " + a.Message
	return a, true
}

// FromIngestError returns the alert for a report that ingestion rejected
// for good (fleet.Retryable(err) is false): KindDeviceMismatch, critical,
// for a device speaking for another device or tenant (fleet.ErrMismatch,
// store.ErrConflict); KindMalformedPayload, a warning, otherwise. The
// device and tenant come from the topic when it is a Dialtone one.
func FromIngestError(topic string, err error) Alert {
	a := Alert{Source: SourceIngest, Kind: KindMalformedPayload, Severity: SeverityWarning,
		Fields: map[string]string{"topic": topic}}
	if tenant, device, kind, perr := wire.ParseTopic(topic); perr == nil {
		a.Tenant, a.Device, a.Key = tenant, device, kind
	}
	msg := "report rejected"
	if err != nil {
		msg = cut(err.Error(), maxErrorText)
		a.Fields["error"] = msg
	}
	if errors.Is(err, fleet.ErrMismatch) || errors.Is(err, store.ErrConflict) {
		a.Kind, a.Severity = KindDeviceMismatch, SeverityCritical
	}
	a.Message = "rejected report: " + msg
	return a
}

// FromDenial returns the alert for a broker's denial: a refused publish or
// subscription is KindACLDenied, critical, keyed by what was refused; a
// Mosquitto episode of dropped queued messages is KindQueueOverflow, a
// warning. source is SourceEmbeddedBroker or SourceMosquitto.
func FromDenial(source string, d broker.Denial) Alert {
	a := Alert{Source: source, Time: d.Time, Key: string(d.Kind),
		Fields: map[string]string{"client": d.Client, "action": string(d.Kind)}}
	if wire.ValidID(d.Client) {
		a.Device = d.Client
	}
	if d.Topic != "" {
		a.Fields["topic"] = d.Topic
		if tenant, device, _, err := wire.ParseTopic(d.Topic); err == nil && device == d.Client {
			a.Tenant = tenant
		}
	}
	if d.Truncated {
		a.Fields["truncated"] = "true"
	}
	switch d.Kind {
	case broker.DroppedQueued:
		a.Kind, a.Severity = KindQueueOverflow, SeverityWarning
		a.Message = "broker dropped messages queued for " + strconv.Quote(cut(d.Client, 128))
	default:
		a.Kind, a.Severity = KindACLDenied, SeverityCritical
		what := "publish to"
		if d.Kind == broker.DeniedSubscribe {
			what = "subscription to"
		}
		a.Message = "refused " + what + " " + strconv.Quote(cut(d.Topic, 256)) + " by " + strconv.Quote(cut(d.Client, 128))
	}
	return a
}

// FromAuthFailures returns the KindConnectionFailures alert for n refused
// connections from remote (host:port), the last one as client. It is keyed
// by the remote host, so that a brute force from one host is one alert per
// window.
func FromAuthFailures(source, client, remote string, n int) Alert {
	host := remote
	if i := strings.LastIndexByte(remote, ':'); i > 0 {
		host = strings.Trim(remote[:i], "[]")
	}
	a := Alert{Source: source, Kind: KindConnectionFailures, Severity: SeverityWarning, Key: host,
		Fields:  map[string]string{"client": client, "remote": remote, "failures": strconv.Itoa(n)},
		Message: strconv.Itoa(n) + " refused connections from " + cut(host, 128) + ", the last as " + strconv.Quote(cut(client, 128))}
	if wire.ValidID(client) {
		a.Device = client
	}
	return a
}

// clean bounds s to n bytes of valid UTF-8 without NUL bytes, marking a
// cut with "…".
func clean(s string, n int) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) && len(s) <= n {
		return s
	}
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
	return cut(s, n)
}

// cut bounds valid UTF-8 s to n bytes, ending a cut one with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	i := max(n-len(ell), 0)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + ell
}
