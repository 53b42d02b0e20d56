// Package wire owns the messages that cross between the agent and the server:
// the custom metadata of firmware TUF targets, the MQTT topic layout and the
// JSON payloads published under it. Both sides import it; neither side's
// internals leak into it.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SchemaVersion is the version of every MQTT payload this build writes and
// the only one it accepts.
const SchemaVersion = 1

// MaxPayload bounds every MQTT payload a decoder accepts.
const MaxPayload = 64 << 10

// Topic kinds under dialtone/v1/<tenant>/<device>/.
const (
	KindState     = "state"
	KindEvents    = "events"
	KindTelemetry = "telemetry"
	KindCmd       = "cmd"
)

// TopicRoot is the prefix of every Dialtone topic.
const TopicRoot = "dialtone/v1"

// ErrInvalid is wrapped by every decoding and validation error in this package.
var ErrInvalid = errors.New("invalid message")

// idPattern is what ValidID accepts; ValidID checks it by hand because
// it runs several times for every report the server ingests.
const idPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`

// ValidID reports whether s may be used as a tenant, device or model name:
// it becomes a path element of topics and target paths, so it must not
// contain separators or MQTT wildcards.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Topic returns dialtone/v1/<tenant>/<device>/<kind>.
func Topic(tenant, device, kind string) string {
	return TopicRoot + "/" + tenant + "/" + device + "/" + kind
}

// ParseTopic splits a Dialtone topic into its parts.
func ParseTopic(topic string) (tenant, device, kind string, err error) {
	rest, ok := strings.CutPrefix(topic, TopicRoot+"/")
	if !ok {
		return "", "", "", fmt.Errorf("%w: topic %q outside %s", ErrInvalid, topic, TopicRoot)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: topic %q: want %s/<tenant>/<device>/<kind>", ErrInvalid, topic, TopicRoot)
	}
	if !ValidID(parts[0]) || !ValidID(parts[1]) {
		return "", "", "", fmt.Errorf("%w: topic %q: bad tenant or device", ErrInvalid, topic)
	}
	switch parts[2] {
	case KindState, KindEvents, KindTelemetry, KindCmd:
	default:
		return "", "", "", fmt.Errorf("%w: topic %q: unknown kind %q", ErrInvalid, topic, parts[2])
	}
	return parts[0], parts[1], parts[2], nil
}

// TargetCustom is the custom metadata of a firmware bundle target in the
// publisher's delegated TUF targets metadata (DESIGN.md §2).
type TargetCustom struct {
	Model      string    `json:"model"`
	Version    string    `json:"version"`
	MinVersion string    `json:"min_version,omitempty"`
	Hardware   []string  `json:"hardware"`
	Channel    string    `json:"channel"`
	Publisher  string    `json:"publisher"`
	Signature  string    `json:"signature"` // target path of the bundle's signature file
	Created    time.Time `json:"created"`
}

// TUFVersions are the metadata versions a device trusts; reported in every
// state message so a phone stuck behind a frozen mirror shows (threat A9).
type TUFVersions struct {
	Root      int64 `json:"root"`
	Timestamp int64 `json:"timestamp"`
	Snapshot  int64 `json:"snapshot"`
	Targets   int64 `json:"targets"`
}

// Update states a device reports.
const (
	UpdateIdle        = "idle"
	UpdateDownloading = "downloading"
	UpdateInstalled   = "installed"
	UpdateTrial       = "trial"
	UpdateCommitted   = "committed"
	UpdateRefused     = "refused"
	UpdateFailed      = "failed"
	UpdateRolledBack  = "rolled-back"
)

// State is the retained message on .../state.
type State struct {
	Schema      int         `json:"schema"`
	Tenant      string      `json:"tenant"`
	Device      string      `json:"device"`
	Model       string      `json:"model"`
	Hardware    string      `json:"hardware"`
	Version     string      `json:"version"`
	Slot        string      `json:"slot"`
	UpdateState string      `json:"update_state"`
	Online      bool        `json:"online"`
	TUF         TUFVersions `json:"tuf"`
	// Floor is the anti-rollback floor the phone enforces.
	Floor string `json:"floor,omitempty"`
	// Warnings name weaknesses the operator must see: WarnInsecureFloor,
	// WarnBelowFloor.
	Warnings []string  `json:"warnings,omitempty"`
	Time     time.Time `json:"time"`
	// Conn is when the MQTT connection the state was sent on was made —
	// for the last will, the connection it belongs to. The will is fixed
	// when connecting, so its Time is older than the states sent after
	// it: Conn is what lets the server apply a will of the current
	// connection and ignore one of an earlier connection (a session
	// takeover publishes the old will after the new connection's state).
	Conn time.Time `json:"conn,omitzero"`
	// SIP is the phone's SIP line (config.go) when the agent runs its SIP
	// stack (dialtone-agent --sip); absent otherwise. Optional within
	// schema 1: a state without it is what agents without --sip send.
	SIP *SIPState `json:"sip,omitempty"`
}

// Warnings a device reports in its state.
const (
	// WarnInsecureFloor: no TPM holds the anti-rollback floor, so a
	// restored state directory could lower it.
	WarnInsecureFloor = "insecure-floor"
	// WarnBelowFloor: the running image is older than the floor (a
	// restored disk or state directory).
	WarnBelowFloor = "below-floor"
)

// Event types.
const (
	EventBoot          = "boot"
	EventCheck         = "check"
	EventDownload      = "download"
	EventInstalled     = "installed"
	EventCommitted     = "committed"
	EventRefused       = "refused"
	EventFailed        = "failed"
	EventRolledBack    = "rolled-back"
	EventSecurity      = "security"
	EventUpToDate      = "up-to-date"
	EventAttestation   = "attestation"
	EventUpdateStarted = "update-started"
	EventDeferred      = "deferred" // installed; activation waits (maintenance window, call)
)

var eventTypes = map[string]bool{
	EventBoot: true, EventCheck: true, EventDownload: true, EventInstalled: true,
	EventCommitted: true, EventRefused: true, EventFailed: true, EventRolledBack: true,
	EventSecurity: true, EventUpToDate: true, EventAttestation: true, EventUpdateStarted: true, EventDeferred: true,
}

// Event is one QoS 1 message on .../events. ID is unique per event and is what
// ingestion de-duplicates on; Seq orders one device's events.
type Event struct {
	Schema  int               `json:"schema"`
	ID      string            `json:"id"`
	Device  string            `json:"device"`
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Type    string            `json:"type"`
	Version string            `json:"version,omitempty"`
	Message string            `json:"message,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
}

// Command is a message on .../cmd from the server to a device.
type Command struct {
	Schema int    `json:"schema"`
	ID     string `json:"id"`
	Name   string `json:"name"` // check, attest, reboot, desired
	// Version is the desired version of a "desired" command; empty
	// withdraws it.
	Version string    `json:"version,omitempty"`
	Time    time.Time `json:"time"`
}

func decodeStrict(b []byte, v any) error {
	if len(b) > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrInvalid, len(b), MaxPayload)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after JSON value", ErrInvalid)
	}
	return nil
}

// DecodeState parses and validates a state payload.
func DecodeState(b []byte) (State, error) {
	var s State
	if err := decodeStrict(b, &s); err != nil {
		return State{}, err
	}
	if s.Schema != SchemaVersion {
		return State{}, fmt.Errorf("%w: schema version %d, want %d", ErrInvalid, s.Schema, SchemaVersion)
	}
	if !ValidID(s.Device) || !ValidID(s.Tenant) {
		return State{}, fmt.Errorf("%w: state: bad device or tenant", ErrInvalid)
	}
	if s.Model != "" && !ValidID(s.Model) {
		return State{}, fmt.Errorf("%w: state: bad model %q", ErrInvalid, s.Model)
	}
	if len(s.Version) > 64 || len(s.Hardware) > 64 || len(s.Slot) > 16 || len(s.UpdateState) > 32 || len(s.Floor) > 64 {
		return State{}, fmt.Errorf("%w: state: field too long", ErrInvalid)
	}
	if len(s.Warnings) > 8 {
		return State{}, fmt.Errorf("%w: state: too many warnings", ErrInvalid)
	}
	for _, w := range s.Warnings {
		if len(w) > 64 {
			return State{}, fmt.Errorf("%w: state: warning too long", ErrInvalid)
		}
	}
	if s.SIP != nil {
		if err := s.SIP.check(); err != nil {
			return State{}, err
		}
	}
	return s, nil
}

// DecodeEvent parses and validates an event payload.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if err := decodeStrict(b, &e); err != nil {
		return Event{}, err
	}
	if e.Schema != SchemaVersion {
		return Event{}, fmt.Errorf("%w: schema version %d, want %d", ErrInvalid, e.Schema, SchemaVersion)
	}
	if !ValidID(e.ID) {
		return Event{}, fmt.Errorf("%w: event: bad id %q", ErrInvalid, e.ID)
	}
	if !ValidID(e.Device) {
		return Event{}, fmt.Errorf("%w: event: bad device", ErrInvalid)
	}
	if !eventTypes[e.Type] {
		return Event{}, fmt.Errorf("%w: event: unknown type %q", ErrInvalid, e.Type)
	}
	if len(e.Message) > 4096 || len(e.Fields) > 32 || len(e.Version) > 64 {
		return Event{}, fmt.Errorf("%w: event: field too long", ErrInvalid)
	}
	return e, nil
}

// Command names.
const (
	CmdCheck  = "check"
	CmdAttest = "attest"
	CmdReboot = "reboot"
	// CmdConfig: look for new device configuration (the SIP profile) now,
	// rather than at the next periodic check.
	CmdConfig  = "config"
	CmdDesired = "desired" // the version a rollout wants; retained on the device's cmd/desired topic
)

// DecodeCommand parses and validates a command payload.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := decodeStrict(b, &c); err != nil {
		return Command{}, err
	}
	if c.Schema != SchemaVersion {
		return Command{}, fmt.Errorf("%w: schema version %d, want %d", ErrInvalid, c.Schema, SchemaVersion)
	}
	if len(c.ID) > 64 || len(c.Version) > 64 {
		return Command{}, fmt.Errorf("%w: command: field too long", ErrInvalid)
	}
	switch c.Name {
	case CmdCheck, CmdAttest, CmdReboot, CmdConfig:
		if c.Version != "" {
			return Command{}, fmt.Errorf("%w: command %q takes no version", ErrInvalid, c.Name)
		}
	case CmdDesired:
	default:
		return Command{}, fmt.Errorf("%w: command: unknown name %q", ErrInvalid, c.Name)
	}
	return c, nil
}
