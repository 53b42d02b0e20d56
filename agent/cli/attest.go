package cli

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/agent/attest"
	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/internal/cel"
)

// phoneAttestation runs the agent's attestation duties: measuring what
// boots and installs, enrolling once, attesting on every trigger (boot,
// after an install, the server's command, the period) and renewing the
// device certificate after a trusted verdict. Failures are logged: the
// server's view (a stale or untrusted device) is the consequence, and the
// phone keeps updating.
type phoneAttestation struct {
	cl    *attest.Client
	slots slot.Backend
	log   *slog.Logger
	mu    sync.Mutex // one exchange at a time
	// Verdicts, when set, is told each verdict (for the agent's events).
	verdict func(outcome, reason string)
}

func newPhoneAttestation(ctx context.Context, o *runOptions, t attest.TPM, hc *http.Client, device string, slots slot.Backend, log *slog.Logger) (*phoneAttestation, error) {
	if hc == nil {
		hc = &http.Client{}
	}
	hc = &http.Client{Transport: hc.Transport, Timeout: time.Minute}
	cl, err := attest.New(ctx, attest.Config{HTTP: hc, Server: o.Server, Device: device, Model: o.Model, Token: o.EnrollToken,
		TPM: t, Dir: filepath.Join(o.StateDir, "attest"), Logger: log})
	if err != nil {
		return nil, err
	}
	return &phoneAttestation{cl: cl, slots: slots, log: log}, nil
}

// measureBooted measures the active slot's image: once per boot.
func (p *phoneAttestation) measureBooted(ctx context.Context) {
	st, err := p.slots.Status()
	if err != nil {
		p.log.Error("measuring the booted image", "err", err)
		return
	}
	p.measure(ctx, cel.KindBooted, st.Active, st.Slots[st.Active])
}

// measure records an image by its bundle's digest; the log names the slot
// it is in (the server finds the TUF target by the digest).
func (p *phoneAttestation) measure(ctx context.Context, kind, slotName string, info slot.Info) {
	f := cel.Firmware{Kind: kind, Version: info.Version, Target: "slot:" + slotName}
	if b, err := hex.DecodeString(info.SHA256); err == nil && len(b) == 32 {
		copy(f.SHA256[:], b)
	} else {
		// A factory image provisioned without its bundle's digest: it is
		// measured as unknown (all zeros), which no TUF target matches.
		p.log.Warn("the image has no recorded digest: its attestation cannot be trusted", "version", info.Version)
	}
	if err := p.cl.Measure(ctx, f); err != nil {
		p.log.Error("measuring", "kind", kind, "version", info.Version, "err", err)
	}
}

// attest enrolls when needed, attests, and renews the certificate after a
// trusted verdict when it is due.
func (p *phoneAttestation) attest(ctx context.Context, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.cl.Enrolled(); !ok {
		if _, err := p.cl.Enroll(ctx); err != nil {
			p.log.Error("enrollment failed", "err", err)
			return
		}
	}
	// The claim is what booted, which the measurement log knows; the
	// active slot may already be the next image, between an install and
	// the reboot into it.
	version := ""
	if f, ok := p.cl.Booted(); ok {
		version = f.Version
	} else if st, err := p.slots.Status(); err == nil {
		version = st.Slots[st.Active].Version
	}
	v, err := p.cl.Attest(ctx, version)
	if err != nil {
		p.log.Error("attestation failed", "trigger", why, "err", err)
		return
	}
	p.log.Info("attested", "trigger", why, "outcome", v.Outcome, "reason", v.Reason)
	if p.verdict != nil {
		p.verdict(v.Outcome, v.Reason)
	}
	if v.Outcome == "trusted" && p.cl.RenewDue() {
		if err := p.cl.RenewCertificate(ctx); err != nil {
			p.log.Error("renewing the device certificate", "err", err)
		}
	}
}

// run attests every interval until ctx ends.
func (p *phoneAttestation) run(ctx context.Context, every time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(every)):
			p.attest(ctx, "periodic")
		}
	}
}

// clientCertificate serves the device certificate to TLS handshakes: an
// empty one before there is one, which the broker refuses (and the agent
// retries).
func (p *phoneAttestation) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c, err := p.cl.Certificate()
	if errors.Is(err, attest.ErrNoCertificate) {
		p.log.Warn("no device certificate for the broker yet", "err", err)
		return &tls.Certificate{}, nil
	}
	return c, err
}
