package wire

import (
	"fmt"
	"strings"
	"time"
)

// Device configuration as TUF targets (DESIGN.md §2, §7). A phone's SIP
// profile is a target of a delegated config role, under
//
//	config/<tenant>/devices/<device>/<file>   for one device
//	config/<tenant>/groups/<group>/<file>     for a group of devices
//
// The path names who the file is for, so the signature over the path is
// the binding: a phone looks up only its own device path, then its group's,
// and a file published for another device or tenant is never one of them.
// The tenant comes first so that a tenant's own config role can be
// delegated config/<tenant>/*/*/* alone (an MSP's customers sign their own
// profiles); one role for every tenant takes config/*/devices/*/sip.json
// and config/*/groups/*/sip.json. Each element is one path segment, so the
// TUF delegation patterns (matched segment by segment) can pin them.

// Config scopes: whom a config target is for.
const (
	ConfigDevices = "devices"
	ConfigGroups  = "groups"
)

// ConfigSIPProfile is the file name of a SIP profile target.
const ConfigSIPProfile = "sip.json"

// configFiles are the config file names a path may end in.
var configFiles = map[string]bool{ConfigSIPProfile: true}

// ConfigTarget is a parsed config target path.
type ConfigTarget struct {
	Tenant string
	Scope  string // ConfigDevices or ConfigGroups
	Name   string // the device or group
	File   string // ConfigSIPProfile
}

// Path returns config/<tenant>/<scope>/<name>/<file>.
func (c ConfigTarget) Path() string {
	return "config/" + c.Tenant + "/" + c.Scope + "/" + c.Name + "/" + c.File
}

// ConfigPath returns the target path of file for the device or group name
// of tenant, or an error when an element is not a valid ID.
func ConfigPath(tenant, scope, name, file string) (string, error) {
	c := ConfigTarget{Tenant: tenant, Scope: scope, Name: name, File: file}
	if err := c.check(); err != nil {
		return "", err
	}
	return c.Path(), nil
}

// ParseConfigPath parses a config target path.
func ParseConfigPath(p string) (ConfigTarget, error) {
	parts := strings.Split(p, "/")
	if len(parts) != 5 || parts[0] != "config" {
		return ConfigTarget{}, fmt.Errorf("%w: config path %q: want config/<tenant>/{devices,groups}/<name>/<file>", ErrInvalid, p)
	}
	c := ConfigTarget{Tenant: parts[1], Scope: parts[2], Name: parts[3], File: parts[4]}
	if err := c.check(); err != nil {
		return ConfigTarget{}, err
	}
	return c, nil
}

func (c ConfigTarget) check() error {
	if !ValidID(c.Tenant) || !ValidID(c.Name) {
		return fmt.Errorf("%w: config path: bad tenant %q or name %q", ErrInvalid, c.Tenant, c.Name)
	}
	if c.Scope != ConfigDevices && c.Scope != ConfigGroups {
		return fmt.Errorf("%w: config path: scope %q, want %s or %s", ErrInvalid, c.Scope, ConfigDevices, ConfigGroups)
	}
	if !configFiles[c.File] {
		return fmt.Errorf("%w: config path: unknown file %q", ErrInvalid, c.File)
	}
	return nil
}

// ConfigResult is the server's answer to an accepted config publish.
type ConfigResult struct {
	Target    string `json:"target"`
	Role      string `json:"role"`
	Length    int64  `json:"length"`
	SHA256    string `json:"sha256"`
	Version   int64  `json:"version"` // of the role's metadata
	Snapshot  int64  `json:"snapshot"`
	Timestamp int64  `json:"timestamp"`
}

// The SIP password a phone registers with is not part of its profile: the
// server releases it over mTLS, at SIPCredentialPath, only to a device whose
// client certificate the device CA issued and whose attestation is trusted
// at that moment (not untrusted, not stale). The phone keeps it sealed to
// its TPM.

// SIPCredentialPath is the device route a phone fetches its SIP
// credential from: GET, authenticated by the device certificate alone.
const SIPCredentialPath = "/v1/device/sip-credential"

// MaxSIPPassword bounds a SIP password: what the phone's TPM can seal.
const MaxSIPPassword = 128

// Error codes (the "code" field of the error body) of SIPCredentialPath.
const (
	// SIPNoDeviceCert (401): the request carries no client certificate
	// the device CA issued, or one that does not verify.
	SIPNoDeviceCert = "no-device-certificate"
	// SIPUntrusted (403): the device's attestation is not trusted now
	// (untrusted, stale, none yet, or the device is unknown); the message
	// says why. Attest again, then retry.
	SIPUntrusted = "untrusted"
	// SIPNoCredential (404): no SIP password is set for the device.
	SIPNoCredential = "no-credential"
)

// SIPCredential is a device's SIP digest credential, as the server
// releases it to the device (GET SIPCredentialPath, 200).
type SIPCredential struct {
	Device string `json:"device"`
	Tenant string `json:"tenant"`
	// AuthUser, when set, is the digest user name; it overrides the
	// profile's auth_user. Empty: the profile's.
	AuthUser string `json:"auth_user,omitempty"`
	// Password is 1 to MaxSIPPassword bytes without control characters.
	Password string    `json:"password"`
	Updated  time.Time `json:"updated"`
}

// SIP stack statuses in SIPState.Status.
const (
	// SIPRunning: the stack runs with Profile (see Registration).
	SIPRunning = "running"
	// SIPWaiting: enabled, not running; Reason says what it waits for (a
	// committed image, a verified profile, the password).
	SIPWaiting = "waiting"
)

// SIPState is the phone's SIP line in its retained state: the stack,
// its registration and the current call.
type SIPState struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Profile is the TUF target path of the profile in use, ProfileSHA256
	// the first 16 hex digits of its digest.
	Profile       string `json:"profile,omitempty"`
	ProfileSHA256 string `json:"profile_sha256,omitempty"`

	Registration string    `json:"registration,omitempty"` // unregistered, registering, registered, failed
	Proxy        string    `json:"proxy,omitempty"`
	Expires      time.Time `json:"expires,omitzero"`
	Error        string    `json:"error,omitempty"`

	Call      string `json:"call,omitempty"` // idle, ringing, active, held
	Peer      string `json:"peer,omitempty"`
	Direction string `json:"direction,omitempty"` // in or out
	Suite     string `json:"suite,omitempty"`
}

func (s *SIPState) check() error {
	switch s.Status {
	case SIPRunning, SIPWaiting:
	default:
		return fmt.Errorf("%w: state: sip status %q", ErrInvalid, s.Status)
	}
	for _, f := range []struct {
		v   string
		max int
	}{{s.Reason, 256}, {s.Profile, 256}, {s.ProfileSHA256, 64}, {s.Registration, 32}, {s.Proxy, 256},
		{s.Error, 256}, {s.Call, 32}, {s.Peer, 256}, {s.Direction, 8}, {s.Suite, 64}} {
		if len(f.v) > f.max {
			return fmt.Errorf("%w: state: sip field too long", ErrInvalid)
		}
	}
	return nil
}

// Telemetry types.
const (
	TelemetryCallQuality = "call-quality"
)

// Telemetry is one QoS 0 message on .../telemetry: figures worth keeping
// but not worth a retransmission. ID lets the server drop a duplicate.
type Telemetry struct {
	Schema int       `json:"schema"`
	ID     string    `json:"id"`
	Device string    `json:"device"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	// Call is set for TelemetryCallQuality.
	Call *CallQuality `json:"call,omitempty"`
}

// CallQuality is one call's quality figures, sent when it ends.
type CallQuality struct {
	CallID          string    `json:"call_id"`
	Peer            string    `json:"peer,omitempty"`
	Direction       string    `json:"direction"`
	Suite           string    `json:"suite,omitempty"`
	Codec           string    `json:"codec,omitempty"`
	Start           time.Time `json:"start"`
	DurationMS      int64     `json:"duration_ms"`
	PacketsSent     uint64    `json:"packets_sent"`
	PacketsReceived uint64    `json:"packets_received"`
	PacketsLost     uint64    `json:"packets_lost"`
	LossPercent     float64   `json:"loss_percent"`
	JitterMS        float64   `json:"jitter_ms"`
	RTTMS           float64   `json:"rtt_ms"`
	MOS             float64   `json:"mos"`
	EndReason       string    `json:"end_reason,omitempty"`
}

// DecodeTelemetry parses and validates a telemetry payload.
func DecodeTelemetry(b []byte) (Telemetry, error) {
	var t Telemetry
	if err := decodeStrict(b, &t); err != nil {
		return Telemetry{}, err
	}
	if t.Schema != SchemaVersion {
		return Telemetry{}, fmt.Errorf("%w: schema version %d, want %d", ErrInvalid, t.Schema, SchemaVersion)
	}
	if !ValidID(t.ID) || !ValidID(t.Device) {
		return Telemetry{}, fmt.Errorf("%w: telemetry: bad id or device", ErrInvalid)
	}
	switch t.Type {
	case TelemetryCallQuality:
		c := t.Call
		if c == nil {
			return Telemetry{}, fmt.Errorf("%w: telemetry: call-quality without call", ErrInvalid)
		}
		if len(c.CallID) > 256 || len(c.Peer) > 256 || len(c.Direction) > 8 || len(c.Suite) > 64 || len(c.Codec) > 16 || len(c.EndReason) > 256 {
			return Telemetry{}, fmt.Errorf("%w: telemetry: field too long", ErrInvalid)
		}
		for _, v := range []float64{c.LossPercent, c.JitterMS, c.RTTMS, c.MOS} {
			if v < 0 || v != v { // NaN cannot be encoded; negative is nonsense
				return Telemetry{}, fmt.Errorf("%w: telemetry: negative figure", ErrInvalid)
			}
		}
		if c.LossPercent > 100 || c.MOS > 5 || c.DurationMS < 0 {
			return Telemetry{}, fmt.Errorf("%w: telemetry: figure out of range", ErrInvalid)
		}
	default:
		return Telemetry{}, fmt.Errorf("%w: telemetry: unknown type %q", ErrInvalid, t.Type)
	}
	return t, nil
}

// EncodeTelemetry marshals t and checks that DecodeTelemetry accepts it.
func EncodeTelemetry(t Telemetry) ([]byte, error) {
	return encodeChecked(t, func(b []byte) error { _, err := DecodeTelemetry(b); return err })
}
