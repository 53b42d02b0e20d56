package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/store"
)

// The audit log (package audit, DESIGN.md §8). Every /v1 route goes
// through audited, inside authentication. A mutating request (POST, PUT,
// PATCH, DELETE) that its handler answered with a 2xx status is appended to
// the store's hash-chained log once the handler returns: who (the
// principal), the tenant, the route, the path values, the before and after
// states the handler gave (audit.SetChange), the client's address and the
// status. Logins (POST /v1/login) are recorded whether they succeed (2xx)
// or are refused (401, 403), as action "login"; refusals by the rate limit
// (429) and malformed requests are not, so that a flood of attempts cannot
// flood the log.
//
// A failed append is not silent, and does not fail the request: the change
// was made already, and answering 500 would invite a retry that makes it
// twice. It is logged at error level with the whole entry (so the record
// survives in the server's log), counted, and the count is reported by
// GET /v1/audit/head, whose reader (`dialtone audit verify`) fails on it.

// Proxies are the reverse proxies whose X-Forwarded-For the API believes
// (Options.TrustedProxies).
type Proxies []netip.Prefix

// Contains reports whether addr is one of the proxies.
func (ps Proxies) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// auditState is the API's audit bookkeeping.
type auditState struct {
	failures atomic.Uint64
}

// AuditAppendTimeout bounds an append; it runs after the handler, on a
// context that the client's going away does not cancel.
const AuditAppendTimeout = 10 * time.Second

// loginAction is the action of login entries.
const loginAction = "login"

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// audited records a successful change made through the route pattern in
// the audit log. It wraps each route inside authentication, so that the
// principal is known.
func (a *API) audited(pattern string, next http.Handler) http.Handler {
	if a.opts.Audit == nil {
		return next
	}
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "", pattern
	}
	if method != "" && !mutating(method) {
		return next
	}
	if strings.HasPrefix(path, "/v1/attest") || path == "/v1/enroll" || path == "/v1/device-certificates" {
		// Devices' attestations and enrollment challenges change no
		// configuration: their verdicts have their own history.
		return next
	}
	login := method == http.MethodPost && path == "/v1/login"
	names := wildcards(path)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !mutating(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		rec := &audit.Recorder{}
		sw := &statusWriter{ResponseWriter: w}
		r = r.WithContext(audit.WithRecorder(r.Context(), rec))
		next.ServeHTTP(sw, r)
		status := sw.code()
		switch {
		case status >= 200 && status < 300:
		case login && (status == http.StatusUnauthorized || status == http.StatusForbidden):
		default:
			return
		}
		e := a.auditEntry(r, pattern, names, rec.Recorded(), status)
		if login {
			e.Action = loginAction
		}
		a.appendAudit(r.Context(), e)
	})
}

// auditEntry builds the entry of a request its handler answered with
// status.
func (a *API) auditEntry(r *http.Request, pattern string, names []string, rec audit.Recorded, status int) audit.Entry {
	e := audit.Entry{Action: pattern, Status: status, Remote: a.clientAddr(r), Before: rec.Before, After: rec.After}
	if p, ok := auth.FromContext(r.Context()); ok {
		e.Actor, e.ActorKind = p.String(), p.Kind
	}
	if rec.Actor != "" && e.Actor == "" {
		e.Actor = rec.Actor
	}
	if e.Actor == "" {
		e.Actor = "anonymous"
	}
	// The tenant: as the handler found it, else as the request named it,
	// else the one tenant the authorization let the request touch (a
	// device's or a token's).
	e.Tenant = rec.Tenant
	if e.Tenant == "" {
		e.Tenant = r.URL.Query().Get("tenant")
	}
	if ai, ok := r.Context().Value(authzKey{}).(authzInfo); ok && e.Tenant == "" && len(ai.tenants) == 1 {
		e.Tenant = ai.tenants[0]
	}
	e.Target = rec.Target
	if e.Target == "" {
		var parts []string
		for _, n := range names {
			parts = append(parts, n+"="+r.PathValue(n))
		}
		e.Target = strings.Join(parts, ",")
	}
	if rec.Err != nil {
		a.log.Warn("audit: a handler's before or after state was not recorded", "action", pattern, "err", rec.Err)
	}
	e.Actor, e.Tenant, e.Target, e.Remote = clean(e.Actor), clean(e.Tenant), clean(e.Target), clean(e.Remote)
	return e
}

// appendAudit appends e, logging the new head, or logs and counts the
// failure.
func (a *API) appendAudit(ctx context.Context, e audit.Entry) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AuditAppendTimeout)
	defer cancel()
	got, err := a.opts.Audit.AppendAudit(ctx, e)
	if err != nil {
		n := a.auditLog.failures.Add(1)
		a.log.Error("audit append failed: a change is missing from the audit log", "err", err, "failures", n,
			"actor", e.Actor, "tenant", e.Tenant, "action", e.Action, "target", e.Target, "remote", e.Remote,
			"status", e.Status, "before", string(e.Before), "after", string(e.After))
		return
	}
	// The head, exported: a copy of it outside the database shows a
	// rewrite of both the log and its anchor.
	a.log.Info("audit appended", "seq", got.Seq, "hash", hex.EncodeToString(got.Hash),
		"actor", got.Actor, "tenant", got.Tenant, "action", got.Action, "target", got.Target)
}

// AuditFailures returns how many audit appends failed since the API
// started.
func (a *API) AuditFailures() uint64 { return a.auditLog.failures.Load() }

// wildcards returns the names of a route pattern's path wildcards.
func wildcards(path string) []string {
	var names []string
	for {
		i := strings.IndexByte(path, '{')
		if i < 0 {
			return names
		}
		j := strings.IndexByte(path[i:], '}')
		if j < 0 {
			return names
		}
		n := strings.TrimSuffix(path[i+1:i+j], "...")
		if n != "$" && n != "" {
			names = append(names, n)
		}
		path = path[i+j+1:]
	}
}

// clean makes s storable text: valid UTF-8 without NUL bytes, at most 512
// bytes.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) > 512 {
		s = s[:512]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// clientAddr returns the request's client address: the connection's, or,
// when that is a trusted proxy, the last address of X-Forwarded-For that is
// not one, noted with the proxy ("198.51.100.7 via 10.0.0.2:443").
func (a *API) clientAddr(r *http.Request) string {
	remote := r.RemoteAddr
	if len(a.opts.TrustedProxies) == 0 {
		return remote
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !a.opts.TrustedProxies.Contains(addr) {
		return remote
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		for f := range strings.SplitSeq(h, ",") {
			hops = append(hops, strings.TrimSpace(f))
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(hops[i])
		if err != nil {
			break // not an address: believe nothing further left
		}
		if !a.opts.TrustedProxies.Contains(ip) || i == 0 {
			return ip.Unmap().String() + " via " + remote
		}
	}
	return remote
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK // a handler that wrote nothing answered 200
	}
	return w.status
}

// AuditPage is the answer of GET /v1/audit: entries in seq order, and the
// after= of the next page when this one is full (0 when it is not).
type AuditPage struct {
	Entries []audit.Entry `json:"entries"`
	Next    uint64        `json:"next,omitempty"`
}

// AuditHead is the answer of GET /v1/audit/head: the anchored head, and
// how many appends failed since this server started (changes missing from
// the log).
type AuditHead struct {
	audit.Head
	AppendFailures uint64 `json:"append_failures"`
}

// auditList answers GET /v1/audit?after=SEQ&limit=N&tenant=T: a page of
// the entries of the tenants the caller may read the audit log of.
func (a *API) auditList(w http.ResponseWriter, r *http.Request) {
	if a.opts.Audit == nil {
		writeError(w, http.StatusNotImplemented, "this server keeps no audit log")
		return
	}
	q := r.URL.Query()
	f := store.AuditFilter{Limit: store.DefaultAuditLimit}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 63)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("after=%q: want a seq", s))
			return
		}
		f.AfterSeq = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > store.MaxAuditLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want 1 to %d", s, store.MaxAuditLimit))
			return
		}
		f.Limit = n
	}
	f.Tenant = q.Get("tenant")
	if f.Tenant != "" && !wire.ValidID(f.Tenant) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("tenant=%q: not a valid name", f.Tenant))
		return
	}
	if f.Tenant == "" {
		// nil for a platform admin: every entry, platform-wide ones too.
		f.Tenants = tenantSet(r)
	}
	es, err := a.opts.Audit.ListAudit(r.Context(), f)
	if errors.Is(err, wire.ErrInvalid) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		a.log.Error("listing the audit log", "err", err)
		writeError(w, http.StatusInternalServerError, "listing the audit log")
		return
	}
	page := AuditPage{Entries: es}
	if len(es) == f.Limit {
		page.Next = es[len(es)-1].Seq
	}
	writeJSON(w, http.StatusOK, page)
}

// auditHead answers GET /v1/audit/head.
func (a *API) auditHead(w http.ResponseWriter, r *http.Request) {
	if a.opts.Audit == nil {
		writeError(w, http.StatusNotImplemented, "this server keeps no audit log")
		return
	}
	h, err := a.opts.Audit.AuditHead(r.Context())
	if err != nil {
		a.log.Error("reading the audit head", "err", err)
		writeError(w, http.StatusInternalServerError, "reading the audit head")
		return
	}
	writeJSON(w, http.StatusOK, AuditHead{Head: h, AppendFailures: a.AuditFailures()})
}

// desiredBefore returns device's desired version before a change, for the
// audit log: nil when nothing records it or it cannot be read.
func (a *API) desiredBefore(ctx context.Context, device string) any {
	if !audit.Recording(ctx) {
		return nil
	}
	d, err := a.opts.Devices.Device(ctx, device)
	if err != nil {
		return nil
	}
	return store.Desired{Tenant: d.Tenant, Device: d.ID, Version: d.DesiredVersion, Time: d.DesiredTime}
}

// tokenState returns token id as the audit log shows it (never its secret,
// which is not stored anyway): nil when nothing records it or it cannot be
// read.
func (a *API) tokenState(ctx context.Context, id string) any {
	if !audit.Recording(ctx) {
		return nil
	}
	t, err := a.opts.Tokens.TokenByID(ctx, id)
	if err != nil {
		return nil
	}
	return tokenInfo(t)
}

// auditTokenCreated records a new token, without its secret.
func auditTokenCreated(ctx context.Context, t store.Token) {
	audit.SetTenant(ctx, t.Tenant)
	audit.SetTarget(ctx, "id="+t.ID)
	audit.SetChange(ctx, nil, tokenInfo(t))
}

// sipCredentialState is a device's SIP credential as the audit log shows
// it: the fact that one is set, for whom and since when — never the
// password nor its ciphertext. nil when none is set, nothing records it or
// it cannot be read.
func (a *API) sipCredentialState(ctx context.Context, device string) any {
	if !audit.Recording(ctx) || a.opts.SIPCredentials == nil {
		return nil
	}
	_, tenant, updated, err := a.opts.SIPCredentials.SIPCredential(ctx, device)
	if err != nil {
		return nil
	}
	return SIPCredentialInfo{Device: device, Tenant: tenant, Updated: updated}
}
