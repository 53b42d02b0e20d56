package api

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/devca"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Attestation is what the API needs of the attestation service
// (server/attest.Service).
type Attestation interface {
	BeginEnroll(ctx context.Context, req attest.EnrollRequest) (attest.EnrollChallenge, error)
	FinishEnroll(ctx context.Context, handle string, secret []byte) (attest.Enrolled, error)
	Nonce(ctx context.Context, device, token string) ([]byte, error)
	Attest(ctx context.Context, req attest.AttestRequest) (attest.Result, error)
	Status(d store.Device) string
	Certify(ctx context.Context, req attest.CertRequest) (wire.CertResponse, error)
}

// maxAttestBody bounds an attestation: the quote and a boot's measurement
// log, base64 in JSON.
const maxAttestBody = 256 << 10

// DecodeEnrollRequest reads the first step of an enrollment. Every error
// wraps ErrForm.
func DecodeEnrollRequest(r io.Reader) (attest.EnrollRequest, error) {
	var req attest.EnrollRequest
	if err := decodeStrict(r, MaxJSONBodyBytes, &req); err != nil {
		return req, err
	}
	if !wire.ValidID(req.Device) || req.Model == "" || len(req.EKPublic) == 0 || len(req.AKPublic) == 0 {
		return req, fmt.Errorf("%w: device, model, ek_public and ak_public are required", ErrForm)
	}
	return req, nil
}

// ActivateRequest is the second step of an enrollment.
type ActivateRequest = wire.EnrollActivate

// NonceRequest asks for an attestation nonce.
type NonceRequest = wire.NonceRequest

// NonceResponse carries it.
type NonceResponse = wire.NonceResponse

// DecodeAttestRequest reads an attestation. Every error wraps ErrForm.
func DecodeAttestRequest(r io.Reader) (attest.AttestRequest, error) {
	var req attest.AttestRequest
	if err := decodeStrict(r, maxAttestBody, &req); err != nil {
		return req, err
	}
	if !wire.ValidID(req.Device) || len(req.Nonce) == 0 || len(req.Nonce) > 64 || len(req.Quote.Attest) == 0 || len(req.Quote.Signature) == 0 {
		return req, fmt.Errorf("%w: device, nonce and quote are required", ErrForm)
	}
	return req, nil
}

func (a *API) attestation(w http.ResponseWriter) bool {
	if a.opts.Attest == nil || a.opts.Enrollment == nil {
		writeError(w, http.StatusNotImplemented, "this server does not attest devices")
		return false
	}
	return true
}

// attestError maps the service's errors to statuses. A refused enrollment
// says why: the phone's installer needs to know what to fix, and nothing
// in the reason is secret (the EK hash is the phone's own).
func attestError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, attest.ErrUnauthenticated):
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, attest.ErrHijack):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, attest.ErrRefused):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, attest.ErrNotEnrolled), errors.Is(err, attest.ErrNotTrusted):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, attest.ErrBadRequest), errors.Is(err, ErrForm):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "attestation: "+err.Error())
	}
}

func (a *API) enrollBegin(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	req, err := DecodeEnrollRequest(r.Body)
	if err != nil {
		attestError(w, err)
		return
	}
	ch, err := a.opts.Attest.BeginEnroll(r.Context(), req)
	if err != nil {
		attestError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

func (a *API) enrollFinish(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	var req ActivateRequest
	if err := decodeStrict(r.Body, MaxJSONBodyBytes, &req); err != nil {
		attestError(w, err)
		return
	}
	res, err := a.opts.Attest.FinishEnroll(r.Context(), r.PathValue("id"), req.Secret)
	if err != nil {
		attestError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *API) attestNonce(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	var req NonceRequest
	if err := decodeStrict(r.Body, MaxJSONBodyBytes, &req); err != nil {
		attestError(w, err)
		return
	}
	if !wire.ValidID(req.Device) {
		attestError(w, fmt.Errorf("%w: bad device id", ErrForm))
		return
	}
	n, err := a.opts.Attest.Nonce(r.Context(), req.Device, req.Token)
	if err != nil {
		attestError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, NonceResponse{Nonce: n, Expires: time.Now().Add(attest.NonceTTL).UTC()})
}

func (a *API) attest(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	req, err := DecodeAttestRequest(r.Body)
	if err != nil {
		attestError(w, err)
		return
	}
	res, err := a.opts.Attest.Attest(r.Context(), req)
	if err != nil {
		attestError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// GrantRequest creates an enrollment grant.
type GrantRequest struct {
	// Kind is token (a one-time token, returned once), serial (the device
	// ID may enroll once, with an EK certificate) or ek (an operator
	// approves a TPM without an EK certificate for a device ID).
	Kind   string `json:"kind"`
	Tenant string `json:"tenant"`
	Device string `json:"device,omitempty"`
	Model  string `json:"model,omitempty"`
	// EK is the hex SHA-256 of the EK's TPMT_PUBLIC (kind ek).
	EK string `json:"ek,omitempty"`
	// TTL is how long the grant stays usable, in seconds; 0: 7 days.
	TTL int64 `json:"ttl_seconds,omitempty"`
}

// Grant is an enrollment grant as the API shows it.
type Grant struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Tenant  string    `json:"tenant"`
	Device  string    `json:"device,omitempty"`
	Model   string    `json:"model,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Used    time.Time `json:"used,omitzero"`
	UsedBy  string    `json:"used_by,omitempty"`
	// Token is the enrollment token, in the answer that creates it only.
	Token string `json:"token,omitempty"`
}

const (
	defaultGrantTTL = 7 * 24 * time.Hour
	maxGrantTTL     = 90 * 24 * time.Hour
)

// DecodeGrantRequest reads and checks a grant request. Every error wraps
// ErrForm.
func DecodeGrantRequest(r io.Reader) (GrantRequest, []byte, error) {
	var gr GrantRequest
	if err := decodeStrict(r, MaxJSONBodyBytes, &gr); err != nil {
		return gr, nil, err
	}
	if !wire.ValidID(gr.Tenant) {
		return gr, nil, fmt.Errorf("%w: a valid tenant is required", ErrForm)
	}
	if gr.Device != "" && !wire.ValidID(gr.Device) {
		return gr, nil, fmt.Errorf("%w: bad device id %q", ErrForm, gr.Device)
	}
	if len(gr.Model) > 64 || gr.TTL < 0 || time.Duration(gr.TTL)*time.Second > maxGrantTTL {
		return gr, nil, fmt.Errorf("%w: model at most 64 bytes, ttl_seconds between 0 and %d", ErrForm, int64(maxGrantTTL/time.Second))
	}
	var hash []byte
	switch gr.Kind {
	case store.GrantToken:
		if gr.EK != "" {
			return gr, nil, fmt.Errorf("%w: a token grant takes no ek", ErrForm)
		}
	case store.GrantSerial:
		if gr.Device == "" || gr.EK != "" {
			return gr, nil, fmt.Errorf("%w: a serial grant names a device and no ek", ErrForm)
		}
		hash = attest.SerialHash(gr.Device)
	case store.GrantEK:
		b, err := hex.DecodeString(gr.EK)
		if err != nil || len(b) != 32 || gr.Device == "" {
			return gr, nil, fmt.Errorf("%w: an ek grant names a device and the EK's SHA-256 in hex", ErrForm)
		}
		hash = b
	default:
		return gr, nil, fmt.Errorf("%w: kind %q: want token, serial or ek", ErrForm, gr.Kind)
	}
	return gr, hash, nil
}

func apiGrant(g store.Grant) Grant {
	return Grant{ID: g.ID, Kind: g.Kind, Tenant: g.Tenant, Device: g.Device, Model: g.Model, Created: g.Created, Expires: g.Expires, Used: g.Used, UsedBy: g.UsedBy}
}

func (a *API) createGrant(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	gr, hash, err := DecodeGrantRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if set := tenantSet(r); set != nil && !slices.Contains(set, gr.Tenant) {
		writeError(w, http.StatusForbidden, "no role in tenant "+gr.Tenant+" that lets devices enroll")
		return
	}
	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	now := time.Now().UTC().Truncate(time.Microsecond)
	ttl := defaultGrantTTL
	if gr.TTL > 0 {
		ttl = time.Duration(gr.TTL) * time.Second
	}
	g := store.Grant{ID: hex.EncodeToString(idb), Kind: gr.Kind, Hash: hash, Tenant: gr.Tenant, Device: gr.Device, Model: gr.Model,
		Created: now, Expires: now.Add(ttl)}
	var token string
	if gr.Kind == store.GrantToken {
		tb := make([]byte, 24)
		_, _ = rand.Read(tb)
		token = "dte_" + base64.RawURLEncoding.EncodeToString(tb)
		g.Hash = attest.TokenHash(token)
	}
	if err := a.opts.Enrollment.CreateGrant(r.Context(), g); err != nil {
		if errors.Is(err, store.ErrConflict) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	a.log.Info("enrollment grant created", "id", g.ID, "kind", g.Kind, "tenant", g.Tenant, "device", g.Device, "by", principal(r).String())
	out := apiGrant(g)
	out.Token = token
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) listGrants(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	gs, err := a.opts.Enrollment.ListGrants(r.Context(), tenantSet(r))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]Grant, 0, len(gs))
	for _, g := range gs {
		out = append(out, apiGrant(g))
	}
	writeJSON(w, http.StatusOK, struct {
		Grants []Grant `json:"grants"`
	}{out})
}

// AttestationEntry is one verdict of a device's history.
type AttestationEntry struct {
	Time    time.Time `json:"time"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	Booted  string    `json:"booted,omitempty"`
}

func (a *API) attestations(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: want 1 to 1000")
			return
		}
		limit = n
	}
	h, err := a.opts.Enrollment.Attestations(r.Context(), r.PathValue("id"), limit)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]AttestationEntry, 0, len(h))
	for _, e := range h {
		out = append(out, AttestationEntry{Time: e.Time, Outcome: e.Outcome, Reason: e.Reason, Detail: e.Detail, Booted: e.Booted})
	}
	writeJSON(w, http.StatusOK, struct {
		Attestations []AttestationEntry `json:"attestations"`
	}{out})
}

// Evidence is a device's last quote with what verifies it independently
// (`dialtone devices evidence` writes it as tpm2_checkquote's files).
type Evidence struct {
	Device    string    `json:"device"`
	Time      time.Time `json:"time"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason,omitempty"`
	AKPublic  []byte    `json:"ak_public"` // TPMT_PUBLIC
	Nonce     []byte    `json:"nonce"`
	Quote     []byte    `json:"quote"`     // TPMS_ATTEST
	Signature []byte    `json:"signature"` // TPMT_SIGNATURE
	PCR       int       `json:"pcr"`
	// PCRValue is the value the log replays to (and, when trusted, the
	// quoted one); Log the measurement log (CEL).
	PCRValue []byte `json:"pcr_value"`
	Log      []byte `json:"log"`
}

func (a *API) evidence(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	id := r.PathValue("id")
	ev, err := a.opts.Enrollment.LastEvidence(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no attestation evidence for "+id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	ident, err := a.opts.Enrollment.Identity(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, Evidence{Device: id, Time: ev.Time, Outcome: ev.Outcome, Reason: ev.Reason, AKPublic: ident.AKPublic,
		Nonce: ev.Nonce, Quote: ev.Quote, Signature: ev.Signature, PCR: ev.PCR, PCRValue: ev.PCRValue, Log: ev.Log})
}

// DecodeCertRequest reads a device certificate request. Every error wraps
// ErrForm.
func DecodeCertRequest(r io.Reader) (attest.CertRequest, error) {
	var req attest.CertRequest
	if err := decodeStrict(r, MaxJSONBodyBytes, &req); err != nil {
		return req, err
	}
	if !wire.ValidID(req.Device) || len(req.Nonce) == 0 || len(req.KeyPublic) == 0 || len(req.CertifyAttest) == 0 || len(req.CertifySig) == 0 {
		return req, fmt.Errorf("%w: device, nonce, key_public, certify_attest and certify_sig are required", ErrForm)
	}
	return req, nil
}

func (a *API) deviceCertificate(w http.ResponseWriter, r *http.Request) {
	if !a.attestation(w) {
		return
	}
	req, err := DecodeCertRequest(r.Body)
	if err != nil {
		attestError(w, err)
		return
	}
	res, err := a.opts.Attest.Certify(r.Context(), req)
	if err != nil {
		attestError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// DeviceVerifier verifies a device's certificate chain (server/devca.CA).
type DeviceVerifier interface {
	Verify(chain []*x509.Certificate) (devca.Identity, error)
}

// ErrNoDevice: the request carries no valid device certificate.
var ErrNoDevice = errors.New("no valid device certificate")

// DeviceIdentity authenticates a device by the client certificate of its
// TLS connection (mTLS): the certificate the device CA issued it after a
// trusted attestation. Routes that release secrets to devices use it.
func (a *API) DeviceIdentity(r *http.Request) (devca.Identity, error) {
	if a.opts.DeviceCA == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return devca.Identity{}, ErrNoDevice
	}
	id, err := a.opts.DeviceCA.Verify(r.TLS.PeerCertificates)
	if err != nil {
		return devca.Identity{}, fmt.Errorf("%w: %v", ErrNoDevice, err)
	}
	return id, nil
}
