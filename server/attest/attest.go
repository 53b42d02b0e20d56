// Package attest owns the server's judgement of a phone's attestation
// (DESIGN.md §5): the single-use nonces it hands out, and Verify, which
// checks a quote against its nonce, replays the measurement log against the
// quoted PCR, and applies the firmware policy — every bundle the log names
// is a TUF target for the phone's model and not revoked, the image the
// phone booted is the version it reports, and it is not below the fleet's
// minimum for the model.
//
// Verify is pure: enrollment (which AK belongs to which device), history
// and the consequences of a verdict belong to the callers.
package attest

import (
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/mod/semver"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote"
)

// Outcomes of an attestation. Stale is not Verify's: a device's last
// verdict becomes stale when it is older than the attestation period.
const (
	Trusted   = "trusted"
	Untrusted = "untrusted"
	Stale     = "stale"
)

// Reasons of an untrusted verdict.
const (
	ReasonKey       = "attestation key not acceptable"
	ReasonSignature = "quote signature invalid"
	ReasonNonce     = "quote not over the issued nonce (replayed)"
	ReasonQuote     = "malformed quote"
	ReasonLog       = "event log malformed or edited"
	ReasonReplay    = "event log does not replay to the quoted PCR"
	ReasonNoBoot    = "no booted image measured"
	ReasonUnknown   = "measured firmware is not a TUF target for the model"
	ReasonRevoked   = "measured firmware is revoked"
	ReasonVersion   = "booted image contradicts the reported version"
	ReasonMinimum   = "booted image is below the fleet minimum"
)

// Target is what the TUF repository says of a firmware digest.
type Target struct {
	Model, Version, Path string
	Revoked              bool
}

// Targets looks firmware up in the TUF repository by its SHA-256 (hex).
type Targets interface {
	TargetBySHA256(model, sha256hex string) (Target, bool)
}

// Evidence is what a phone sends for one attestation.
type Evidence struct {
	Quote quote.Quote `json:"quote"`
	// Log is the measurement log, CEL TLV (internal/cel).
	Log []byte `json:"log"`
}

// Claim is what the phone says it runs, from its reported state, and the
// lowest version the fleet accepts for its model (empty: any).
type Claim struct {
	Model, Version string
	Minimum        string
}

// Result is a verdict.
type Result struct {
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
	// Booted is the last image the log says was booted, when the log was
	// good enough to say.
	Booted *cel.Firmware `json:"booted,omitempty"`
	// PCR is the replayed (and quoted) PCR value of a trusted verdict.
	PCR [32]byte `json:"-"`
}

func untrusted(reason, detail string) Result {
	return Result{Outcome: Untrusted, Reason: reason, Detail: detail}
}

// Verify judges ev against the enrolled AK (its TPMT_PUBLIC), the nonce
// the server issued for this exchange, the PCR the agent measures into,
// what the phone claims to run, and the repository.
func Verify(akPublic []byte, ev Evidence, nonce []byte, pcr uint8, claim Claim, targets Targets) Result {
	key, err := quote.AKPublic(akPublic)
	if err != nil {
		return untrusted(ReasonKey, err.Error())
	}
	return VerifyKey(key, ev, nonce, pcr, claim, targets)
}

// VerifyKey is Verify with the AK parsed at enrollment (quote.AKPublic).
func VerifyKey(key *ecdsa.PublicKey, ev Evidence, nonce []byte, pcr uint8, claim Claim, targets Targets) Result {
	recs, err := cel.Decode(ev.Log)
	if err != nil {
		return untrusted(ReasonLog, err.Error())
	}
	want := cel.Replay(recs)[pcr]
	if _, err := quote.VerifyKey(key, ev.Quote, nonce, map[uint][32]byte{uint(pcr): want}); err != nil {
		switch {
		case errors.Is(err, quote.ErrKey):
			return untrusted(ReasonKey, err.Error())
		case errors.Is(err, quote.ErrSignature):
			return untrusted(ReasonSignature, err.Error())
		case errors.Is(err, quote.ErrNonce):
			return untrusted(ReasonNonce, err.Error())
		case errors.Is(err, quote.ErrPCRs):
			return untrusted(ReasonReplay, err.Error())
		default:
			return untrusted(ReasonQuote, err.Error())
		}
	}
	// The log is the TPM's: judge what it says.
	var booted *cel.Firmware
	for _, r := range recs {
		if r.PCR != pcr {
			return untrusted(ReasonLog, fmt.Sprintf("record %d measures PCR %d, not %d", r.Num, r.PCR, pcr))
		}
		f := r.Firmware
		sha := hex.EncodeToString(f.SHA256[:])
		t, ok := targets.TargetBySHA256(claim.Model, sha)
		if !ok || t.Model != claim.Model || t.Version != f.Version {
			return untrusted(ReasonUnknown, fmt.Sprintf("record %d: %s %s (sha256 %s) for model %s", r.Num, f.Kind, f.Version, sha, claim.Model))
		}
		if t.Revoked {
			return untrusted(ReasonRevoked, fmt.Sprintf("record %d: %s %s", r.Num, f.Kind, f.Version))
		}
		if f.Kind == cel.KindBooted {
			booted = &f
		}
	}
	if booted == nil {
		return untrusted(ReasonNoBoot, "")
	}
	if booted.Version != claim.Version {
		r := untrusted(ReasonVersion, fmt.Sprintf("measured %s, reports %s", booted.Version, claim.Version))
		r.Booted = booted
		return r
	}
	if claim.Minimum != "" && semver.Compare("v"+booted.Version, "v"+claim.Minimum) < 0 {
		r := untrusted(ReasonMinimum, fmt.Sprintf("booted %s, the minimum for %s is %s", booted.Version, claim.Model, claim.Minimum))
		r.Booted = booted
		return r
	}
	return Result{Outcome: Trusted, Booted: booted, PCR: want}
}
