package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Defaults of MosquittoOptions.
const (
	DefaultMosquittoPort     = 8883
	DefaultServerIdentity    = "dialtone-server"
	DefaultAutosaveInterval  = time.Minute
	DefaultMaxQueuedMessages = 100_000
	DefaultMaxInflight       = 100
)

// MosquittoOptions configures MosquittoConfig. Paths are those the broker
// will use on its own host; they must exist when the configuration is made,
// except ACLFile and LogFile, whose directories must.
type MosquittoOptions struct {
	// Port of the TLS listener; 0 means DefaultMosquittoPort.
	Port int
	// Bind is the address the listener binds to; empty means all.
	Bind string
	// CAFile is the CA (PEM) that issues device and server client
	// certificates; CertFile and KeyFile are the broker's own.
	CAFile, CertFile, KeyFile string
	// CRLFile, optional, lists revoked client certificates (PEM).
	CRLFile string
	// ServerIdentities are the CNs of the server's client certificates, one
	// per replica (the CN is also the client ID, which keys the replica's
	// persistent session); nil means DefaultServerIdentity.
	ServerIdentities []string
	// ACLFile is where the ACL returned by MosquittoConfig will be written
	// (the configuration's acl_file).
	ACLFile string
	// PersistenceDir holds mosquitto.db: retained states and the messages
	// queued for disconnected persistent sessions.
	PersistenceDir string
	// LogFile is where Mosquitto logs; WatchMosquittoLog follows it.
	LogFile string
	// LogDenials adds log_type debug, the only level at which Mosquitto 2.0
	// logs a denied publish. It also logs every packet: rotate the file.
	LogDenials bool
	// AutosaveInterval is how often Mosquitto saves its database (and so
	// how much of the queued messages a broker crash can lose); 0 means
	// DefaultAutosaveInterval.
	AutosaveInterval time.Duration
	// MaxQueuedMessages bounds the QoS 1 messages queued per client beyond
	// those in flight (Mosquitto drops the excess and logs it); 0 means
	// DefaultMaxQueuedMessages.
	MaxQueuedMessages int
	// MaxInflight bounds the unacknowledged QoS 1 messages Mosquitto sends a
	// client at once; 0 means DefaultMaxInflight. Keep it below
	// mqttingest's queue size.
	MaxInflight int
}

// ErrMosquittoOptions is wrapped by MosquittoConfig's validation errors.
var ErrMosquittoOptions = errors.New("invalid mosquitto options")

func (o *MosquittoOptions) setDefaults() {
	if o.Port == 0 {
		o.Port = DefaultMosquittoPort
	}
	if len(o.ServerIdentities) == 0 {
		o.ServerIdentities = []string{DefaultServerIdentity}
	}
	if o.AutosaveInterval == 0 {
		o.AutosaveInterval = DefaultAutosaveInterval
	}
	if o.MaxQueuedMessages == 0 {
		o.MaxQueuedMessages = DefaultMaxQueuedMessages
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
}

// MosquittoConfig returns a Mosquitto 2.x configuration file and the ACL
// file it names, so that an external Mosquitto stands in for the embedded
// broker (DESIGN.md §6): it enforces what the package doc describes as far
// as Mosquitto's acl_file can, and differs where it cannot:
//
//   - Clients authenticate with a client certificate from the CA (TLS 1.2
//     or later); its CN is the username (use_identity_as_username) and also
//     the client ID (use_username_as_clientid). A device's CN must be its
//     device ID. Tying the client ID to the certificate matters: a device
//     choosing the server's client ID would otherwise take over the server's
//     persistent session and discard the reports queued in it (seen with
//     Mosquitto 2.0.11).
//   - A device may publish only to dialtone/v1/+/<CN>/{state,events,telemetry}
//     and receive only dialtone/v1/+/<CN>/cmd; each server identity may
//     receive everything under dialtone/v1/ and publish any device's cmd.
//     The CA must never issue a device certificate whose CN is a server
//     identity, nor one whose CN is not a valid wire ID.
//   - A refused publish is dropped (an MQTT 3.1.1 QoS 1 publisher still gets
//     its PUBACK) and logged as "Denied PUBLISH" at log level debug only.
//   - Mosquitto's acl_file never refuses a SUBSCRIBE: the SUBACK grants it
//     and messages the client may not read are silently not delivered. A
//     last will outside the device's subtree is likewise silently dropped,
//     and the ACL cannot restrict the retain flag to state topics.
//   - Messages queued for a disconnected persistent session — the server's
//     — survive a clean broker restart (persistence), but a crash loses
//     those queued since the last autosave (AutosaveInterval).
//
// WatchMosquittoLog turns denied publishes, subscriptions outside a
// device's subtree and dropped queued messages into Denials.
//
// MosquittoConfig validates opts: the files and directories must exist, the
// server identities must be valid wire IDs, the port in range. Relative
// paths are made absolute.
func MosquittoConfig(opts MosquittoOptions) (conf, acl string, err error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return "", "", err
	}
	var c strings.Builder
	c.WriteString(`# Mosquitto 2.x configuration for Dialtone, written by
# "dialtone broker mosquitto-config". Clients authenticate with a client
# certificate; its CN is their username and client ID. See the ACL file for
# what each may publish and receive.
per_listener_settings false
allow_anonymous false
`)
	fmt.Fprintf(&c, "acl_file %s\n", opts.ACLFile)
	c.WriteString("\n# Queued QoS 1 messages for the server's persistent sessions survive a restart.\n")
	c.WriteString("persistence true\n")
	fmt.Fprintf(&c, "persistence_location %s\n", dirPath(opts.PersistenceDir))
	fmt.Fprintf(&c, "autosave_interval %d\n", max(1, int(opts.AutosaveInterval/time.Second)))
	fmt.Fprintf(&c, "max_queued_messages %d\n", opts.MaxQueuedMessages)
	fmt.Fprintf(&c, "max_inflight_messages %d\n", opts.MaxInflight)
	fmt.Fprintf(&c, "max_packet_size %d\n", maxPacket)
	c.WriteString("\n# WatchMosquittoLog parses this file: keep the timestamp format.\n")
	fmt.Fprintf(&c, "log_dest file %s\n", opts.LogFile)
	for _, t := range []string{"error", "warning", "notice", "information", "subscribe"} {
		fmt.Fprintf(&c, "log_type %s\n", t)
	}
	if opts.LogDenials {
		c.WriteString("# Denied publishes are logged at debug level only (every packet is).\nlog_type debug\n")
	}
	c.WriteString("log_timestamp true\nlog_timestamp_format " + mosquittoTimestampFormat + "\nconnection_messages true\n")
	c.WriteString("\n")
	if opts.Bind != "" {
		fmt.Fprintf(&c, "listener %d %s\n", opts.Port, opts.Bind)
	} else {
		fmt.Fprintf(&c, "listener %d\n", opts.Port)
	}
	c.WriteString("protocol mqtt\n")
	fmt.Fprintf(&c, "cafile %s\ncertfile %s\nkeyfile %s\n", opts.CAFile, opts.CertFile, opts.KeyFile)
	if opts.CRLFile != "" {
		fmt.Fprintf(&c, "crlfile %s\n", opts.CRLFile)
	}
	c.WriteString("tls_version tlsv1.2\nrequire_certificate true\nuse_identity_as_username true\nuse_username_as_clientid true\n")

	var a strings.Builder
	a.WriteString(`# Dialtone ACL for Mosquitto 2.x, written by "dialtone broker mosquitto-config".
# %u is the client certificate's CN: a device's ID, or a server identity.
# Mosquitto checks publishes against write rules and deliveries against read
# rules; it grants every SUBSCRIBE and delivers only what the client may read.

# Devices: their own subtree under any tenant.
`)
	for _, k := range []string{wire.KindState, wire.KindEvents, wire.KindTelemetry} {
		fmt.Fprintf(&a, "pattern write %s/+/%%u/%s\n", wire.TopicRoot, k)
	}
	fmt.Fprintf(&a, "pattern read %s/+/%%u/%s\n", wire.TopicRoot, wire.KindCmd)
	for _, id := range opts.ServerIdentities {
		fmt.Fprintf(&a, "\n# The server (%s): every report, any device's commands, alerts.\n", id)
		fmt.Fprintf(&a, "user %s\n", id)
		fmt.Fprintf(&a, "topic read %s/#\n", wire.TopicRoot)
		fmt.Fprintf(&a, "topic write %s/+/+/%s\n", wire.TopicRoot, wire.KindCmd)
		// Security alerts (server/alert), dialtone/v1/<tenant>/_alerts.
		fmt.Fprintf(&a, "topic write %s/+/_alerts\n", wire.TopicRoot)
	}
	return c.String(), a.String(), nil
}

// mosquittoTimestampFormat is the strftime format of the generated
// configuration's log timestamps; mosquittoTimestampLayout parses it.
const (
	mosquittoTimestampFormat = "%Y-%m-%dT%H:%M:%S%z"
	mosquittoTimestampLayout = "2006-01-02T15:04:05-0700"
)

// dirPath ends a directory path with a separator: Mosquitto 1.x appended
// the database file name to persistence_location as it was.
func dirPath(dir string) string {
	return strings.TrimSuffix(dir, string(filepath.Separator)) + string(filepath.Separator)
}

func (o *MosquittoOptions) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMosquittoOptions, fmt.Sprintf(format, args...))
	}
	if o.Port < 1 || o.Port > 65535 {
		return bad("port %d out of range 1-65535", o.Port)
	}
	if o.Bind != "" && (!isConfigWord(o.Bind) || (net.ParseIP(o.Bind) == nil && !validHostname(o.Bind))) {
		return bad("bind address %q is neither an IP address nor a host name", o.Bind)
	}
	seen := map[string]bool{}
	for _, id := range o.ServerIdentities {
		if !wire.ValidID(id) {
			return bad("server identity %q is not a valid ID (letters, digits, '.', '_', '-'; at most 64)", id)
		}
		if seen[id] {
			return bad("server identity %q given twice", id)
		}
		seen[id] = true
	}
	if o.AutosaveInterval < 0 || o.MaxQueuedMessages < 0 || o.MaxInflight < 0 {
		return bad("negative autosave interval, queue or in-flight limit")
	}
	files := []struct {
		name     string
		path     *string
		must     string // "file", "dir" or "parent"
		optional bool
	}{
		{name: "CA file", path: &o.CAFile, must: "file"},
		{name: "certificate file", path: &o.CertFile, must: "file"},
		{name: "key file", path: &o.KeyFile, must: "file"},
		{name: "CRL file", path: &o.CRLFile, must: "file", optional: true},
		{name: "ACL file", path: &o.ACLFile, must: "parent"},
		{name: "persistence directory", path: &o.PersistenceDir, must: "dir"},
		{name: "log file", path: &o.LogFile, must: "parent"},
	}
	for _, f := range files {
		if *f.path == "" {
			if f.optional {
				continue
			}
			return bad("%s: no path given", f.name)
		}
		abs, err := filepath.Abs(*f.path)
		if err != nil {
			return bad("%s %q: %v", f.name, *f.path, err)
		}
		if !isConfigWord(abs) {
			return bad("%s %q: Mosquitto cannot read a path with spaces or control characters", f.name, abs)
		}
		*f.path = abs
		check, wantDir := abs, f.must == "dir"
		if f.must == "parent" {
			check, wantDir = filepath.Dir(abs), true
		}
		fi, err := os.Stat(check)
		switch {
		case err != nil:
			return bad("%s: %v", f.name, err)
		case wantDir && !fi.IsDir():
			return bad("%s: %s is not a directory", f.name, check)
		case !wantDir && !fi.Mode().IsRegular():
			return bad("%s: %s is not a regular file", f.name, check)
		}
	}
	return nil
}

// isConfigWord reports whether s can be one value of a Mosquitto
// configuration line: not empty, no white space or control characters
// (which would split the value or start a new line).
func isConfigWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
