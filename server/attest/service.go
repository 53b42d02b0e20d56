package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/alert"
	"github.com/dialtone-dev/dialtone/server/devca"
	"github.com/dialtone-dev/dialtone/server/store"
)

// DefaultPeriod is how long a trusted verdict stays good: a device that
// has not attested again within it is stale.
const DefaultPeriod = time.Hour

// Store is what the service needs of the fleet store.
type Store interface {
	store.Attestations
	Device(ctx context.Context, id string) (store.Device, error)
}

// Alerts is where the service raises security alerts (server/alert).
type Alerts interface {
	Raise(ctx context.Context, a alert.Alert) error
}

// Options configures a Service.
type Options struct {
	Store   Store
	Targets Targets
	// Roots are the TPM manufacturers' CAs whose EK certificates enroll a
	// device (the allowlist); Intermediates their intermediates.
	Roots, Intermediates *x509.CertPool
	// Period is DefaultPeriod when zero.
	Period time.Duration
	// PCR is the PCR agents measure firmware into (agent/tpm.DefaultPCR).
	PCR uint8
	// Minimum is the lowest version the fleet accepts per model: a phone
	// booted below it attests untrusted, though its image is a target
	// (an old image with a known hole, not yet revoked).
	Minimum map[string]string
	// Alerts, when set, receives hijack attempts, refused enrollments and
	// untrusted verdicts.
	Alerts Alerts
	// OnVerdict, when set, is called after a verdict is stored: the
	// daemon's consequences (disconnecting an untrusted device).
	OnVerdict func(ctx context.Context, tenant, device string, r Result)
	// CA issues device certificates, valid CertTTL (24 h when 0); nil:
	// none are issued.
	CA      Issuer
	CertTTL time.Duration
	Logger  *slog.Logger
	Now     func() time.Time
}

// Service runs enrollment and attestation for the server (DESIGN.md §5).
type Service struct {
	o      Options
	log    *slog.Logger
	nonces *Nonces

	mu      sync.Mutex
	pending map[string]pendingEnrollment
}

// pendingEnrollment is an enrollment waiting for its credential answer.
type pendingEnrollment struct {
	id      store.Identity
	secret  []byte
	expires time.Time
}

// enrollTTL bounds the time between an enrollment's two steps.
const enrollTTL = 60 * time.Second

// maxPending bounds the enrollments waiting for an answer: enrollment is
// unauthenticated until its proofs are checked.
const maxPending = 10000

// NewService returns a Service.
func NewService(o Options) (*Service, error) {
	if o.Store == nil || o.Targets == nil {
		return nil, errors.New("attest: a store and targets are required")
	}
	if o.Period <= 0 {
		o.Period = DefaultPeriod
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := NewNonces()
	n.now = o.Now
	return &Service{o: o, log: log, nonces: n, pending: map[string]pendingEnrollment{}}, nil
}

// Period is the attestation period.
func (s *Service) Period() time.Duration { return s.o.Period }

// Errors the API maps to status codes.
var (
	// ErrRefused: enrollment refused (no grant, unknown CA, bad proof).
	ErrRefused = errors.New("enrollment refused")
	// ErrHijack: the device ID is enrolled with another TPM.
	ErrHijack = errors.New("device enrolled with another TPM")
	// ErrNotEnrolled: attestation by a device that has not enrolled.
	ErrNotEnrolled = errors.New("device not enrolled")
	// ErrBadRequest: a malformed request.
	ErrBadRequest = errors.New("bad attestation request")
	// ErrUnauthenticated: a nonce or attestation request without the
	// device's attestation token. Nothing is recorded: whoever knows a
	// device ID must not be able to have it judged untrusted.
	ErrUnauthenticated = errors.New("not the device's attestation token")
)

// newAttestToken makes a device's attestation token and its hash, the
// one thing the server keeps of it.
func newAttestToken() (string, []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	token := wire.AttestTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(token))
	return token, h[:]
}

// checkToken accepts only the token whose hash id keeps.
func checkToken(id store.Identity, token string) error {
	if token == "" || len(token) > wire.MaxAttestToken {
		return fmt.Errorf("%w: %s", ErrUnauthenticated, id.Device)
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], id.TokenHash) != 1 {
		return fmt.Errorf("%w: %s", ErrUnauthenticated, id.Device)
	}
	return nil
}

// EnrollRequest is the first step of enrollment, from the agent.
type EnrollRequest = wire.EnrollRequest

// EnrollChallenge is the server's answer: the credential to activate.
type EnrollChallenge = wire.EnrollChallenge

// Enrolled is the result of a finished enrollment.
type Enrolled = wire.Enrolled

// EKHash is how enrollment names a TPM: the SHA-256 of its EK's
// TPMT_PUBLIC, what `dialtone devices approve --ek` takes.
func EKHash(ekPublic []byte) []byte {
	h := sha256.Sum256(ekPublic)
	return h[:]
}

// TokenHash is what is stored of an enrollment token.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// SerialHash is what is stored of an allowlisted device ID.
func SerialHash(device string) []byte {
	h := sha256.Sum256([]byte("serial:" + device))
	return h[:]
}

func (s *Service) raise(ctx context.Context, a alert.Alert) {
	if s.o.Alerts != nil {
		_ = s.o.Alerts.Raise(context.WithoutCancel(ctx), a)
	}
}

// refuse logs and alerts a refused enrollment and returns its error.
func (s *Service) refuse(ctx context.Context, req EnrollRequest, tenant string, err error) error {
	s.log.Warn("enrollment refused", "device", req.Device, "error", err)
	kind, sev := alert.KindEnrollRefused, alert.SeverityWarning
	if errors.Is(err, ErrHijack) {
		kind, sev = alert.KindDeviceHijack, alert.SeverityCritical
	}
	a := alert.Alert{Kind: kind, Severity: sev, Source: alert.SourceAttestation, Tenant: tenant, Message: err.Error(),
		Key: hex.EncodeToString(EKHash(req.EKPublic))[:16], Fields: map[string]string{"ek": hex.EncodeToString(EKHash(req.EKPublic))}}
	if wire.ValidID(req.Device) {
		a.Device = req.Device
	}
	s.raise(ctx, a)
	return err
}

// BeginEnroll checks who the device is and whether it may enroll, and
// returns the credential challenge that proves its AK is its TPM's.
//
// The TPM is trusted by its EK certificate (from a manufacturer CA in the
// allowlist) or by an operator's approval of its EK. The device may enroll
// with a one-time token, an allowlisted serial (its device ID), or that
// approval; the grant decides its tenant. The same TPM enrolling again
// needs no new grant; another TPM under an enrolled device ID is refused
// and alerted as a hijack.
func (s *Service) BeginEnroll(ctx context.Context, req EnrollRequest) (EnrollChallenge, error) {
	if !wire.ValidID(req.Device) || req.Model == "" || len(req.Model) > 64 || len(req.EKPublic) == 0 || len(req.AKPublic) == 0 || len(req.Token) > 256 {
		return EnrollChallenge{}, fmt.Errorf("%w: device, model, ek_public and ak_public are required", ErrBadRequest)
	}
	now := s.o.Now()
	ekHash := EKHash(req.EKPublic)
	id := store.Identity{Device: req.Device, Model: req.Model, EKHash: ekHash, EKPublic: req.EKPublic, AKPublic: req.AKPublic}

	// Is the TPM genuine?
	certified := false
	if len(req.EKCert) > 0 {
		if s.o.Roots == nil {
			return EnrollChallenge{}, s.refuse(ctx, req, "", fmt.Errorf("%w: no EK manufacturer CAs configured", ErrRefused))
		}
		if _, err := VerifyEKCert(req.EKCert, s.o.Roots, s.o.Intermediates, req.EKPublic, now); err != nil {
			return EnrollChallenge{}, s.refuse(ctx, req, "", fmt.Errorf("%w: %w", ErrRefused, err))
		}
		certified = true
		id.Method, id.EKCert = store.EnrollEKCert, req.EKCert
	}

	// Enrolled before?
	prev, err := s.o.Store.Identity(ctx, req.Device)
	switch {
	case err == nil && string(prev.EKHash) != string(ekHash):
		return EnrollChallenge{}, s.refuse(ctx, req, prev.Tenant, fmt.Errorf("%w: %s is enrolled with TPM %x, this is TPM %x", ErrHijack, req.Device, prev.EKHash[:8], ekHash[:8]))
	case err == nil:
		// The same TPM: re-enrollment, in its tenant, by the same means.
		id.Tenant, id.Method, id.EKCert = prev.Tenant, prev.Method, prev.EKCert
	case errors.Is(err, store.ErrNotFound):
		g, err := s.grant(ctx, req, ekHash, certified, now)
		if err != nil {
			return EnrollChallenge{}, s.refuse(ctx, req, "", err)
		}
		id.Tenant, id.Grant = g.Tenant, g.ID
		if !certified {
			id.Method = store.EnrollApproved
		}
	default:
		return EnrollChallenge{}, err
	}

	ch, secret, err := NewChallenge(req.EKPublic, req.AKPublic)
	if err != nil {
		return EnrollChallenge{}, s.refuse(ctx, req, id.Tenant, fmt.Errorf("%w: %w", ErrRefused, err))
	}
	pid := make([]byte, 16)
	_, _ = rand.Read(pid)
	handle := hex.EncodeToString(pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.pending {
		if now.After(p.expires) {
			delete(s.pending, k)
		}
	}
	if len(s.pending) >= maxPending {
		return EnrollChallenge{}, fmt.Errorf("%w: too many enrollments in progress", ErrRefused)
	}
	s.pending[handle] = pendingEnrollment{id: id, secret: secret, expires: now.Add(enrollTTL)}
	return EnrollChallenge{ID: handle, Challenge: ch}, nil
}

// grant finds what lets a new device enroll.
func (s *Service) grant(ctx context.Context, req EnrollRequest, ekHash []byte, certified bool, now time.Time) (store.Grant, error) {
	usable := func(g store.Grant) error {
		switch {
		case !g.Used.IsZero():
			return fmt.Errorf("%w: the %s grant %s was used by %s", ErrRefused, g.Kind, g.ID, g.UsedBy)
		case !now.Before(g.Expires):
			return fmt.Errorf("%w: the %s grant %s expired", ErrRefused, g.Kind, g.ID)
		case g.Device != "" && g.Device != req.Device:
			return fmt.Errorf("%w: the %s grant %s is for device %s", ErrRefused, g.Kind, g.ID, g.Device)
		case g.Model != "" && g.Model != req.Model:
			return fmt.Errorf("%w: the %s grant %s is for model %s", ErrRefused, g.Kind, g.ID, g.Model)
		}
		return nil
	}
	// An approved EK is both: the TPM and the device are the operator's word.
	if g, err := s.o.Store.GrantByHash(ctx, store.GrantEK, ekHash); err == nil {
		return g, usable(g)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Grant{}, err
	}
	if !certified {
		return store.Grant{}, fmt.Errorf("%w: the TPM has no EK certificate and its EK %x is not approved (dialtone devices approve %s --ek %x)", ErrRefused, ekHash, req.Device, ekHash)
	}
	if req.Token != "" {
		g, err := s.o.Store.GrantByHash(ctx, store.GrantToken, TokenHash(req.Token))
		if errors.Is(err, store.ErrNotFound) {
			return store.Grant{}, fmt.Errorf("%w: unknown enrollment token", ErrRefused)
		}
		if err != nil {
			return store.Grant{}, err
		}
		return g, usable(g)
	}
	g, err := s.o.Store.GrantByHash(ctx, store.GrantSerial, SerialHash(req.Device))
	if errors.Is(err, store.ErrNotFound) {
		return store.Grant{}, fmt.Errorf("%w: no enrollment token, and %s is not on the serial allowlist", ErrRefused, req.Device)
	}
	if err != nil {
		return store.Grant{}, err
	}
	return g, usable(g)
}

// FinishEnroll checks the device's answer to the credential challenge and
// records the enrollment.
func (s *Service) FinishEnroll(ctx context.Context, handle string, secret []byte) (Enrolled, error) {
	now := s.o.Now()
	s.mu.Lock()
	p, ok := s.pending[handle]
	delete(s.pending, handle) // one answer per challenge
	s.mu.Unlock()
	if !ok || now.After(p.expires) {
		return Enrolled{}, fmt.Errorf("%w: unknown or expired enrollment", ErrRefused)
	}
	req := EnrollRequest{Device: p.id.Device, EKPublic: p.id.EKPublic}
	if !CheckResponse(p.secret, secret) {
		return Enrolled{}, s.refuse(ctx, req, p.id.Tenant, fmt.Errorf("%w: the credential was not activated: the AK is not that TPM's", ErrRefused))
	}
	token, hash := newAttestToken()
	p.id.TokenHash = hash
	if err := s.o.Store.Enroll(ctx, p.id, now); err != nil {
		switch {
		case errors.Is(err, store.ErrIdentity):
			return Enrolled{}, s.refuse(ctx, req, p.id.Tenant, fmt.Errorf("%w: %w", ErrHijack, err))
		case errors.Is(err, store.ErrGrantUsed), errors.Is(err, store.ErrConflict):
			return Enrolled{}, s.refuse(ctx, req, p.id.Tenant, fmt.Errorf("%w: %w", ErrRefused, err))
		}
		return Enrolled{}, err
	}
	s.log.Info("device enrolled", "device", p.id.Device, "tenant", p.id.Tenant, "method", p.id.Method, "grant", p.id.Grant)
	return Enrolled{Device: p.id.Device, Tenant: p.id.Tenant, Method: p.id.Method, Token: token}, nil
}

// Nonce issues a single-use nonce for an enrolled device that presents
// its attestation token.
func (s *Service) Nonce(ctx context.Context, device, token string) ([]byte, error) {
	id, err := s.o.Store.Identity(ctx, device)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrNotEnrolled, device)
		}
		return nil, err
	}
	if err := checkToken(id, token); err != nil {
		return nil, err
	}
	return s.nonces.Issue(device), nil
}

// AttestRequest is one attestation, from the agent.
type AttestRequest = wire.AttestRequest

// Attest verifies one attestation, stores the verdict with its evidence,
// and applies its consequences. A nonce that was not issued to this
// device, or was used or expired, makes the verdict untrusted (a replay):
// it is still stored, since a replay is news.
func (s *Service) Attest(ctx context.Context, req AttestRequest) (Result, error) {
	if !wire.ValidID(req.Device) || len(req.Nonce) == 0 || len(req.Nonce) > 64 || len(req.Version) > 64 {
		return Result{}, fmt.Errorf("%w: device and nonce are required", ErrBadRequest)
	}
	id, err := s.o.Store.Identity(ctx, req.Device)
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, fmt.Errorf("%w: %s", ErrNotEnrolled, req.Device)
	}
	if err != nil {
		return Result{}, err
	}
	if err := checkToken(id, req.Token); err != nil {
		return Result{}, err
	}
	// The version is judged twice: what the agent says it booted, in the
	// attestation, and what its reported state says it runs — except
	// between an install and the reboot into it (update state
	// "installed"), when the state names the image it will boot.
	claim := Claim{Model: id.Model, Version: req.Version}
	var state store.Device
	if d, err := s.o.Store.Device(ctx, req.Device); err == nil {
		state = d
		if d.Model != "" {
			claim.Model = d.Model
		}
		if claim.Version == "" {
			claim.Version = d.Version
		}
	}
	claim.Minimum = s.o.Minimum[claim.Model]
	var r Result
	if !s.nonces.Take(req.Device, req.Nonce) {
		r = untrusted(ReasonNonce, "the nonce was not issued to this device, or was used or expired")
	} else {
		key, err := quote.AKPublic(id.AKPublic)
		if err != nil {
			r = untrusted(ReasonKey, err.Error())
		} else {
			r = VerifyKey(key, Evidence{Quote: quote.Quote(req.Quote), Log: req.Log}, req.Nonce, s.o.PCR, claim, s.o.Targets)
		}
	}
	// A state reported before the last verdict was judged then: the claim
	// in this attestation is the device's newer word (and the way back for
	// a device the broker keeps out, which cannot report a state).
	fresh := state.StateTime.After(state.Attested)
	if r.Outcome == Trusted && fresh && state.Version != "" && state.UpdateState != wire.UpdateInstalled && state.Version != r.Booted.Version {
		booted := r.Booted
		r = untrusted(ReasonVersion, fmt.Sprintf("measured %s, reported state says %s", booted.Version, state.Version))
		r.Booted = booted
	}
	now := s.o.Now()
	a := store.Attestation{Device: req.Device, Time: now, Outcome: r.Outcome, Reason: r.Reason, Detail: clip(r.Detail, 1024),
		Nonce: req.Nonce, Quote: req.Quote.Attest, Signature: req.Quote.Signature, PCR: int(s.o.PCR), Log: req.Log}
	if r.Booted != nil {
		a.Booted = r.Booted.Version
	}
	if r.Outcome == Trusted {
		a.PCRValue = r.PCR[:]
	} else if len(req.PCRValue) == 32 {
		a.PCRValue = req.PCRValue
	}
	if err := s.o.Store.AddAttestation(ctx, a); err != nil {
		return Result{}, err
	}
	s.log.Info("attestation", "device", req.Device, "outcome", r.Outcome, "reason", r.Reason, "detail", r.Detail)
	if r.Outcome != Trusted {
		s.raise(ctx, alert.Alert{Kind: alert.KindUntrusted, Severity: alert.SeverityCritical, Source: alert.SourceAttestation,
			Tenant: id.Tenant, Device: req.Device, Key: r.Reason, Message: "attestation untrusted: " + r.Reason,
			Fields: map[string]string{"reason": r.Reason, "detail": clip(r.Detail, 512)}})
	}
	if s.o.OnVerdict != nil {
		s.o.OnVerdict(ctx, id.Tenant, req.Device, r)
	}
	return r, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Status is a device's attestation state as it stands now: a trusted
// verdict older than the period reads stale even before the sweeper has
// recorded it, so that no reader ever sees an expired trust.
func (s *Service) Status(d store.Device) string {
	if d.Attestation == Trusted && s.o.Now().Sub(d.Attested) > s.o.Period {
		return Stale
	}
	return d.Attestation
}

// Trusted reports whether a device's latest verdict is trusted and within
// the period: what renewing its certificate and letting it onto the broker
// need.
func (s *Service) Trusted(ctx context.Context, device string) (bool, error) {
	d, err := s.o.Store.Device(ctx, device)
	if err != nil {
		return false, err
	}
	return s.Status(d) == Trusted, nil
}

// Sweep records stale verdicts: devices whose trusted verdict is older
// than the period. It returns their IDs.
func (s *Service) Sweep(ctx context.Context) ([]string, error) {
	now := s.o.Now()
	ids, err := s.o.Store.ExpireAttestations(ctx, now.Add(-s.o.Period), now)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		s.log.Warn("attestation stale", "device", id, "period", s.o.Period)
		if s.o.OnVerdict != nil {
			s.o.OnVerdict(ctx, "", id, Result{Outcome: Stale, Reason: "no attestation within the period"})
		}
	}
	return ids, nil
}

// Run sweeps at start (a restarted server shows no expired trust) and
// then every tenth of the period, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	every := s.o.Period / 10
	if every < time.Second {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping stale attestations", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// AKKey returns a device's enrolled AK.
func (s *Service) AKKey(ctx context.Context, device string) (*ecdsa.PublicKey, store.Identity, error) {
	id, err := s.o.Store.Identity(ctx, device)
	if errors.Is(err, store.ErrNotFound) {
		return nil, id, fmt.Errorf("%w: %s", ErrNotEnrolled, device)
	}
	if err != nil {
		return nil, id, err
	}
	key, err := quote.AKPublic(id.AKPublic)
	return key, id, err
}

// TakeNonce consumes a nonce issued by Nonce, for exchanges other than a
// quote (the device key's certification).
func (s *Service) TakeNonce(device string, nonce []byte) bool { return s.nonces.Take(device, nonce) }

// CertRequest asks for a device certificate.
type CertRequest = wire.CertRequest

// ErrNotTrusted: a certificate for a device whose attestation is not
// trusted now (untrusted, stale or none) is not issued or renewed.
var ErrNotTrusted = errors.New("device attestation is not trusted")

// Issuer issues device certificates (server/devca.CA).
type Issuer interface {
	IssueCertified(d devca.Identity, ak *ecdsa.PublicKey, c quote.Certification, nonce []byte, keyPublic []byte, ttl time.Duration) ([]byte, error)
	CertPEM() []byte
}

// Certify issues a short-lived certificate for the device key the AK
// certified, to a device whose latest verdict is trusted and within the
// period: an untrusted or stale device's certificate is not renewed.
func (s *Service) Certify(ctx context.Context, req CertRequest) (wire.CertResponse, error) {
	ca, ttl := s.o.CA, s.o.CertTTL
	if ca == nil {
		return wire.CertResponse{}, fmt.Errorf("%w: this server issues no device certificates", ErrRefused)
	}
	if !wire.ValidID(req.Device) || len(req.Nonce) == 0 || len(req.KeyPublic) == 0 || len(req.CertifyAttest) == 0 || len(req.CertifySig) == 0 {
		return wire.CertResponse{}, fmt.Errorf("%w: device, nonce, key and certification are required", ErrBadRequest)
	}
	ak, id, err := s.AKKey(ctx, req.Device)
	if err != nil {
		return wire.CertResponse{}, err
	}
	if !s.nonces.Take(req.Device, req.Nonce) {
		return wire.CertResponse{}, fmt.Errorf("%w: the nonce was not issued to this device, or was used or expired", ErrRefused)
	}
	ok, err := s.Trusted(ctx, req.Device)
	if err != nil {
		return wire.CertResponse{}, err
	}
	if !ok {
		return wire.CertResponse{}, fmt.Errorf("%w: attest first", ErrNotTrusted)
	}
	der, err := ca.IssueCertified(devca.Identity{Tenant: id.Tenant, DeviceID: req.Device}, ak,
		quote.Certification{Attest: req.CertifyAttest, Signature: req.CertifySig}, req.Nonce, req.KeyPublic, ttl)
	if err != nil {
		return wire.CertResponse{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return wire.CertResponse{}, err
	}
	s.log.Info("device certificate issued", "device", req.Device, "tenant", id.Tenant, "expires", c.NotAfter)
	return wire.CertResponse{Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), CA: ca.CertPEM(), Expires: c.NotAfter}, nil
}
