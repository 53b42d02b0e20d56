// Package voip owns the phone's SIP user agent: registration over TLS with
// digest authentication, calls as caller and callee (INVITE, CANCEL, BYE,
// re-INVITE for hold), the inbound policy (requests only from the configured
// proxy, rate limits, scanner traffic counted and reported) and the state and
// call-quality figures the agent reports. Offer/answer lives in voip/sdp and
// the SRTP media path in voip/media; Phone ties them to the signalling.
package voip

import (
	"errors"
	"strconv"
	"time"
)

// Events receives what the phone reports: the agent forwards them to its
// MQTT topics (security events to events, call quality to telemetry, state
// to the retained state topic). Methods are called from the phone's
// goroutines and must not block for long.
type Events interface {
	Security(SecurityEvent)
	CallEnded(CallReport)
	State(State)
}

// Kinds of security event.
const (
	// SecurityUnsolicited: SIP traffic that did not come from the proxy
	// (scanners, direct INVITEs), dropped without reply.
	SecurityUnsolicited = "sip-unsolicited"
	// SecurityMalformed: messages the SIP parser refused, dropped.
	SecurityMalformed = "sip-malformed"
	// SecurityRateLimited: requests from the proxy over the inbound rate.
	SecurityRateLimited = "sip-rate-limited"
	// SecurityDowngrade: an offer without acceptable SRTP, refused (488).
	SecurityDowngrade = "srtp-downgrade-refused"
	// SecurityTLS: the proxy's certificate did not verify.
	SecurityTLS = "sip-tls-verify-failed"
)

// SecurityEvent is a batch of one kind of security-relevant occurrence:
// reports are rate-limited, so Count says how many happened since the last
// report of that kind.
type SecurityEvent struct {
	Kind  string    `json:"kind"`
	Count uint64    `json:"count"`
	Last  string    `json:"last,omitempty"` // source address or detail of the latest one
	Time  time.Time `json:"time"`
}

// Registration states.
const (
	Unregistered = "unregistered"
	Registering  = "registering"
	Registered   = "registered"
	RegFailed    = "failed"
)

// Call states.
const (
	CallIdle    = "idle"
	CallRinging = "ringing"
	CallActive  = "active"
	CallHeld    = "held"
)

// State is the phone's part of the retained state message.
type State struct {
	Registration RegistrationState `json:"registration"`
	Call         CallState         `json:"call"`
}

// RegistrationState says whether the phone is reachable.
type RegistrationState struct {
	Status  string    `json:"status"`
	Proxy   string    `json:"proxy"`
	Expires time.Time `json:"expires,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// CallState is the current call (the most recent one when several are up).
type CallState struct {
	Status    string `json:"status"`
	Peer      string `json:"peer,omitempty"`
	Direction string `json:"direction,omitempty"` // in or out
	Suite     string `json:"suite,omitempty"`
}

// CallReport is the call-quality telemetry sent when a call ends.
type CallReport struct {
	CallID          string        `json:"call_id"`
	Peer            string        `json:"peer"`
	Direction       string        `json:"direction"`
	Suite           string        `json:"suite"`
	Codec           string        `json:"codec"`
	Start           time.Time     `json:"start"`
	Duration        time.Duration `json:"duration"`
	PacketsSent     uint64        `json:"packets_sent"`
	PacketsReceived uint64        `json:"packets_received"`
	PacketsLost     uint64        `json:"packets_lost"`
	LossPercent     float64       `json:"loss_percent"`
	Jitter          time.Duration `json:"jitter"`
	RTT             time.Duration `json:"rtt"`
	MOS             float64       `json:"mos"`
	EndReason       string        `json:"end_reason"`
}

// Counters are the phone's inbound-traffic counters since New.
type Counters struct {
	Accepted    uint64 // requests from the proxy handled
	Unsolicited uint64 // dropped: not from the proxy (or not on its connection)
	Malformed   uint64 // dropped: the parser refused them
	RateLimited uint64 // refused (503) or dropped: over the inbound rate
}

var (
	// ErrAuth is returned when the proxy refuses the credentials.
	ErrAuth = errors.New("sip credentials refused")
	// ErrNotRegistered is returned by WaitRegistered when Run ended first.
	ErrNotRegistered = errors.New("not registered")
	// ErrBusy is returned by Call when the phone already has MaxCalls calls.
	ErrBusy = errors.New("phone busy")
	// ErrCallEnded is returned by operations on a call that has ended.
	ErrCallEnded = errors.New("call ended")
	// ErrRefused is wrapped (with the status) when the callee refuses.
	ErrRefused = errors.New("call refused")
)

// CallError is a call attempt that ended with a final SIP status.
type CallError struct {
	Status int
	Reason string
}

func (e *CallError) Error() string {
	return "call refused: " + strconv.Itoa(e.Status) + " " + e.Reason
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *CallError) Is(target error) bool { return target == ErrRefused }

type nopEvents struct{}

func (nopEvents) Security(SecurityEvent) {}
func (nopEvents) CallEnded(CallReport)   {}
func (nopEvents) State(State)            {}
