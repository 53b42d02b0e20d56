package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/store"
)

// SIP credentials (issue 7, item 4). Operators set a device's SIP password
// (sip.manage, in the device's tenant); the server keeps it encrypted by
// server/sipsecret, bound to the device and tenant, and releases it only to
// that device, over mTLS (its attestation-issued certificate), while its
// attestation is trusted. The password is never logged, audited or shown
// to an operator again.

// maxSIPCredentialBody bounds a SIP credential request.
const maxSIPCredentialBody = 4 << 10

// SIPCredentialRequest sets a device's SIP password (PUT
// /v1/devices/{id}/sip-credential).
type SIPCredentialRequest struct {
	Password string `json:"password"`
	// AuthUser, when set, is the digest user name, overriding the SIP
	// profile's auth_user.
	AuthUser string `json:"auth_user,omitempty"`
}

// SIPCredentialInfo is a device's SIP credential as operators see it: never
// the password.
type SIPCredentialInfo struct {
	Device   string    `json:"device"`
	Tenant   string    `json:"tenant"`
	AuthUser string    `json:"auth_user,omitempty"`
	Updated  time.Time `json:"updated,omitzero"`
	Deleted  bool      `json:"deleted,omitempty"`
}

// DecodeSIPCredentialRequest reads and checks a SIP credential request:
// the password is 1 to sipsecret.MaxPassword bytes of UTF-8 without control
// characters, the user name empty or as a SIP profile's auth_user. Every
// error wraps ErrForm, and none repeats the password.
func DecodeSIPCredentialRequest(r io.Reader) (SIPCredentialRequest, error) {
	var req SIPCredentialRequest
	if err := decodeStrict(r, maxSIPCredentialBody, &req); err != nil {
		// The decoder's message may quote the body: say only what failed.
		return SIPCredentialRequest{}, fmt.Errorf("%w: want {\"password\": \"…\", \"auth_user\": \"…\"}", ErrForm)
	}
	if err := checkSIPPassword(req.Password); err != nil {
		return SIPCredentialRequest{}, err
	}
	if req.AuthUser != "" && !validAuthUser(req.AuthUser) {
		return SIPCredentialRequest{}, fmt.Errorf("%w: auth_user: 1 to %d letters, digits or .-_+!~*'()&=$,;?/@", ErrForm, sipsecret.MaxAuthUser)
	}
	return req, nil
}

func checkSIPPassword(pw string) error {
	if len(pw) == 0 || len(pw) > sipsecret.MaxPassword {
		return fmt.Errorf("%w: password: 1 to %d bytes", ErrForm, sipsecret.MaxPassword)
	}
	if !utf8.ValidString(pw) {
		return fmt.Errorf("%w: password: not UTF-8", ErrForm)
	}
	for _, c := range pw {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: password: control characters are not allowed", ErrForm)
		}
	}
	return nil
}

// validAuthUser is sipprofile's rule for auth_user: what a digest user
// name may hold without escaping.
func validAuthUser(s string) bool {
	if len(s) == 0 || len(s) > sipsecret.MaxAuthUser {
		return false
	}
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.ContainsRune(".-_+!~*'()&=$,;?/@", c):
		default:
			return false
		}
	}
	return true
}

func (a *API) sipCredentials(w http.ResponseWriter) bool {
	if a.opts.SIPCredentials == nil || a.opts.SIPBox == nil {
		writeError(w, http.StatusNotImplemented, "this server keeps no SIP credentials")
		return false
	}
	return true
}

// writeCoded writes an error with a machine-readable code (the device
// routes: wire.SIPUntrusted…).
func writeCoded(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Code: code})
}

// sipDeviceTenant returns the tenant of the device in the path, which the
// auth middleware found; a tenant query parameter, when given, must be it.
func (a *API) sipDeviceTenant(w http.ResponseWriter, r *http.Request) (device, tenant string, ok bool) {
	device = r.PathValue("id")
	tenant, err := a.tenantOf(r.Context(), fromDevice, device)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "looking up the device")
		return "", "", false
	}
	if q := r.URL.Query().Get("tenant"); q != "" && q != tenant {
		writeError(w, http.StatusConflict, fmt.Sprintf("device %s is not in tenant %s", device, q))
		return "", "", false
	}
	return device, tenant, true
}

func (a *API) setSIPCredential(w http.ResponseWriter, r *http.Request) {
	if !a.sipCredentials(w) {
		return
	}
	device, tenant, ok := a.sipDeviceTenant(w, r)
	if !ok {
		return
	}
	req, err := DecodeSIPCredentialRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ct, err := a.opts.SIPBox.SealCredential(tenant, device, sipsecret.Credential{AuthUser: req.AuthUser, Password: []byte(req.Password)})
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	before := a.sipCredentialState(r.Context(), device)
	now := time.Now().UTC().Truncate(time.Microsecond)
	err = a.opts.SIPCredentials.SetSIPCredential(r.Context(), tenant, device, ct, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no device "+device)
		return
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, fmt.Sprintf("device %s is not in tenant %s", device, tenant))
		return
	case err != nil:
		a.log.Error("storing a SIP credential", "device", device, "err", err)
		writeError(w, http.StatusInternalServerError, "storing the SIP credential")
		return
	}
	audit.SetChange(r.Context(), before, a.sipCredentialState(r.Context(), device))
	a.log.Info("SIP credential set", "device", device, "tenant", tenant, "by", principal(r).String())
	writeJSON(w, http.StatusOK, SIPCredentialInfo{Device: device, Tenant: tenant, AuthUser: req.AuthUser, Updated: now})
}

func (a *API) deleteSIPCredential(w http.ResponseWriter, r *http.Request) {
	if !a.sipCredentials(w) {
		return
	}
	device, tenant, ok := a.sipDeviceTenant(w, r)
	if !ok {
		return
	}
	before := a.sipCredentialState(r.Context(), device)
	err := a.opts.SIPCredentials.DeleteSIPCredential(r.Context(), device)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeCoded(w, http.StatusNotFound, wire.SIPNoCredential, "no SIP credential is set for device "+device)
		return
	case err != nil:
		a.log.Error("deleting a SIP credential", "device", device, "err", err)
		writeError(w, http.StatusInternalServerError, "deleting the SIP credential")
		return
	}
	audit.SetChange(r.Context(), before, a.sipCredentialState(r.Context(), device))
	a.log.Info("SIP credential deleted", "device", device, "tenant", tenant, "by", principal(r).String())
	writeJSON(w, http.StatusOK, SIPCredentialInfo{Device: device, Tenant: tenant, Deleted: true})
}

// deviceSIPCredential releases a device's SIP credential to the device
// itself: identified by its attestation-issued client certificate, and
// only while its attestation is trusted (a stale verdict is not).
func (a *API) deviceSIPCredential(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !a.sipCredentials(w) {
		return
	}
	if a.opts.Attest == nil {
		writeError(w, http.StatusNotImplemented, "this server does not attest devices")
		return
	}
	id, err := a.DeviceIdentity(r)
	if err != nil {
		writeCoded(w, http.StatusUnauthorized, wire.SIPNoDeviceCert, err.Error())
		return
	}
	ctx := r.Context()
	refuse := func(reason string) {
		a.log.Warn("SIP credential refused", "device", id.DeviceID, "tenant", id.Tenant, "reason", reason)
		writeCoded(w, http.StatusForbidden, wire.SIPUntrusted, "SIP credential refused: "+reason)
	}
	d, err := a.opts.Devices.Device(ctx, id.DeviceID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		refuse("the device is unknown to the fleet")
		return
	case err != nil:
		a.log.Error("looking up a device", "device", id.DeviceID, "err", err)
		writeError(w, http.StatusInternalServerError, "looking up the device")
		return
	}
	if d.Tenant != id.Tenant {
		refuse(fmt.Sprintf("the certificate names tenant %s, the device is in %s", id.Tenant, d.Tenant))
		return
	}
	if st := a.opts.Attest.Status(d); st != attest.Trusted {
		refuse(a.untrustedReason(r, st, id.DeviceID))
		return
	}
	ct, tenant, updated, err := a.opts.SIPCredentials.SIPCredential(ctx, id.DeviceID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeCoded(w, http.StatusNotFound, wire.SIPNoCredential, "no SIP credential is set for device "+id.DeviceID)
		return
	case err != nil:
		a.log.Error("reading a SIP credential", "device", id.DeviceID, "err", err)
		writeError(w, http.StatusInternalServerError, "reading the SIP credential")
		return
	}
	if tenant != id.Tenant {
		a.log.Warn("a SIP credential stored for another tenant", "device", id.DeviceID, "tenant", id.Tenant, "stored", tenant)
		writeCoded(w, http.StatusNotFound, wire.SIPNoCredential, "no SIP credential is set for device "+id.DeviceID)
		return
	}
	c, err := a.opts.SIPBox.OpenCredential(tenant, id.DeviceID, ct)
	if err != nil {
		a.log.Error("a stored SIP credential does not open", "device", id.DeviceID, "err", err)
		writeError(w, http.StatusInternalServerError, "the stored SIP credential does not decrypt: set it again")
		return
	}
	a.log.Info("SIP credential released", "device", id.DeviceID, "tenant", tenant)
	writeJSON(w, http.StatusOK, wire.SIPCredential{Device: id.DeviceID, Tenant: tenant, AuthUser: c.AuthUser, Password: string(c.Password), Updated: updated})
}

// untrustedReason says why a device with attestation status st is not
// trusted, with its latest verdict's reason when there is one.
func (a *API) untrustedReason(r *http.Request, st, device string) string {
	switch st {
	case "":
		return "the device has not attested yet"
	case attest.Stale:
		return "the device's attestation is stale: attest again"
	}
	msg := "the device's attestation is " + st
	if a.opts.Enrollment != nil {
		if h, err := a.opts.Enrollment.Attestations(r.Context(), device, 1); err == nil && len(h) == 1 && h[0].Reason != "" {
			msg += ": " + h[0].Reason
		}
	}
	return msg
}
