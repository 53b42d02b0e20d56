package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DenialKind says what a Denial reports.
type DenialKind string

const (
	// DeniedPublish: Mosquitto refused a publish (ACL write rule) and
	// dropped it. Logged only with MosquittoOptions.LogDenials.
	DeniedPublish DenialKind = "publish"
	// DeniedSubscribe: a client that is not a server identity subscribed to
	// a filter other than its own command topic. Mosquitto's acl_file grants
	// every subscription (and logs none as denied); it only withholds the
	// messages the client may not read, so such a subscription is a probe.
	DeniedSubscribe DenialKind = "subscribe"
	// DroppedQueued: Mosquitto started dropping messages queued for the
	// client (max_queued_messages); for a server identity, reports are
	// being lost. Logged once per episode. Topic is empty.
	DroppedQueued DenialKind = "dropped"
)

// Denial is one refusal, or loss, read from Mosquitto's log.
type Denial struct {
	// Time is the log line's timestamp (the time it was read if the line
	// has none).
	Time time.Time
	// Client is the MQTT client ID Mosquitto logged: with the configuration
	// MosquittoConfig writes, the client certificate's CN.
	Client string
	Kind   DenialKind
	// Topic is the publish topic or the subscription filter.
	Topic string
	// Truncated is set when the line was cut (Mosquitto cuts long log lines
	// itself), so Topic is a prefix of the real one.
	Truncated bool
}

// MosquittoLogOptions configures WatchMosquittoLog.
type MosquittoLogOptions struct {
	// Path is Mosquitto's log file (MosquittoOptions.LogFile).
	Path string
	// OnDenial receives each Denial, in log order, on the watcher's
	// goroutine.
	OnDenial func(Denial)
	// ServerIdentities are the server's client IDs, whose subscriptions are
	// not reported; nil means DefaultServerIdentity.
	ServerIdentities []string
	// FromStart reads the file from its start; by default the watcher
	// starts at its current end. A file that appears later, or replaces a
	// rotated one, is always read from its start.
	FromStart bool
	// PollInterval is how often the file is checked for growth, truncation
	// and rotation; 0 means 250ms.
	PollInterval time.Duration
	// MaxLineLength bounds a line; the rest of a longer line is discarded.
	// 0 means 4096.
	MaxLineLength int
	// Logger receives the watcher's own logs; nil discards them.
	Logger *slog.Logger
}

// WatchMosquittoLog follows Mosquitto's log file like tail -F — across
// truncation, rotation and the file being absent for a while — and passes
// each denied publish, subscription outside a device's subtree and episode
// of dropped queued messages to opts.OnDenial. It returns when ctx is done,
// with nil, or with an error if the options are invalid or the file cannot
// be read.
func WatchMosquittoLog(ctx context.Context, opts MosquittoLogOptions) error {
	if opts.Path == "" {
		return errors.New("mosquitto log: no path")
	}
	if opts.OnDenial == nil {
		return errors.New("mosquitto log: no OnDenial callback")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.MaxLineLength <= 0 {
		opts.MaxLineLength = 4096
	}
	if len(opts.ServerIdentities) == 0 {
		opts.ServerIdentities = []string{DefaultServerIdentity}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := &logWatcher{
		opts:    opts,
		log:     log.With("component", "mosquitto-log", "path", opts.Path),
		servers: map[string]bool{},
		buf:     make([]byte, 0, opts.MaxLineLength),
		chunk:   make([]byte, 32<<10),
	}
	for _, id := range opts.ServerIdentities {
		w.servers[id] = true
	}
	defer w.close()
	tick := time.NewTicker(opts.PollInterval)
	defer tick.Stop()
	// The file present at the start is read from its end (unless
	// FromStart); one that appears later, or replaces it, from its start.
	fromStart := opts.FromStart
	for {
		if w.f == nil {
			if err := w.open(fromStart); err != nil {
				return err
			}
			fromStart = true
		}
		if w.f != nil {
			if err := w.poll(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

type logWatcher struct {
	opts    MosquittoLogOptions
	log     *slog.Logger
	servers map[string]bool

	f   *os.File
	fi  os.FileInfo // of f, for rotation checks
	off int64       // read offset in f

	buf     []byte // the current, incomplete line
	discard bool   // the current line is too long: skip to its end
	cut     bool   // the current line was cut
	chunk   []byte
}

func (w *logWatcher) close() {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
}

// open opens the log file, positioned at its start or end; w.f stays nil
// if it does not exist yet.
func (w *logWatcher) open(fromStart bool) error {
	f, err := os.Open(w.opts.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mosquitto log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("mosquitto log: %w", err)
	}
	w.f, w.fi, w.off = f, fi, 0
	w.resetLine()
	if !fromStart {
		if w.off, err = f.Seek(0, io.SeekEnd); err != nil {
			w.close()
			return fmt.Errorf("mosquitto log: %w", err)
		}
	}
	w.log.Debug("following", "offset", w.off)
	return nil
}

func (w *logWatcher) resetLine() {
	w.buf, w.discard, w.cut = w.buf[:0], false, false
}

// poll reads what was appended, then handles truncation and rotation.
func (w *logWatcher) poll() error {
	if err := w.drain(); err != nil {
		return err
	}
	fi, err := os.Stat(w.opts.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// Rotated away and not yet replaced: keep the old file (drained)
		// until a new one appears.
		return nil
	case err != nil:
		return fmt.Errorf("mosquitto log: %w", err)
	case !os.SameFile(fi, w.fi):
		w.log.Debug("log file replaced: following the new one")
		if err := w.drain(); err != nil { // written between drain and Stat
			return err
		}
		w.close()
		return w.open(true)
	case fi.Size() < w.off:
		w.log.Debug("log file truncated: reading from its start")
		if _, err := w.f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("mosquitto log: %w", err)
		}
		w.off = 0
		w.resetLine()
		return w.drain()
	}
	return nil
}

// drain reads the open file to its end, handling each complete line.
func (w *logWatcher) drain() error {
	for {
		n, err := w.f.Read(w.chunk)
		w.off += int64(n)
		w.feed(w.chunk[:n])
		if errors.Is(err, io.EOF) || n == 0 && err == nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mosquitto log: reading: %w", err)
		}
	}
}

// feed splits p into lines, keeping at most MaxLineLength bytes of each.
func (w *logWatcher) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		part := p
		if i >= 0 {
			part = p[:i]
		}
		if !w.discard {
			room := w.opts.MaxLineLength - len(w.buf)
			if len(part) > room {
				part, w.discard, w.cut = part[:room], true, true
			}
			w.buf = append(w.buf, part...)
		}
		if i < 0 {
			return
		}
		w.line(string(w.buf), w.cut)
		w.resetLine()
		p = p[i+1:]
	}
}

func (w *logWatcher) line(s string, cut bool) {
	d, ok := parseMosquittoLine(s, cut)
	if !ok {
		return
	}
	if d.Kind == DeniedSubscribe && (w.servers[d.Client] || maySubscribe(d.Client, d.Topic)) {
		return
	}
	if d.Time.IsZero() {
		d.Time = time.Now()
	}
	w.opts.OnDenial(d)
}

// The log lines of Mosquitto 2.0 (checked with 2.0.11) parsed here, after
// the "<timestamp>: " prefix:
//
//	Denied PUBLISH from <client> (d0, q1, r0, m1, '<topic>', ... (3 bytes))
//	<client> <qos> <filter>                        (log_type subscribe)
//	Outgoing messages are being dropped for client <client>.
var (
	deniedPublishRE = regexp.MustCompile(`^Denied PUBLISH from (.+?) \(d[01], q[0-2], r[01], m[0-9]+, '(.*)', \.\.\. \([0-9]+ bytes\)\)$`)
	// deniedCutRE matches a denied publish whose line was cut in the topic.
	deniedCutRE  = regexp.MustCompile(`^Denied PUBLISH from (.+?) \(d[01], q[0-2], r[01], m[0-9]+, '(.*)$`)
	subscribeRE  = regexp.MustCompile(`^([^\s]+) ([0-9]{1,3}) ([^\s].*)$`)
	droppedRE    = regexp.MustCompile(`^Outgoing messages are being dropped for client (.+)\.$`)
	unixPrefixRE = regexp.MustCompile(`^([0-9]{1,19}): `)
)

// parseMosquittoLine parses one log line (without its newline). cut says
// the line was cut short. A DeniedSubscribe is any subscription: the caller
// decides which ones to report.
func parseMosquittoLine(line string, cut bool) (Denial, bool) {
	t, msg := splitMosquittoTimestamp(line)
	if m := deniedPublishRE.FindStringSubmatch(msg); m != nil && !cut {
		return Denial{Time: t, Client: m[1], Kind: DeniedPublish, Topic: m[2]}, true
	}
	if m := deniedCutRE.FindStringSubmatch(msg); m != nil {
		// Mosquitto cuts its log lines at a few hundred bytes beyond the
		// format, so a long topic loses its end.
		return Denial{Time: t, Client: m[1], Kind: DeniedPublish, Topic: m[2], Truncated: true}, true
	}
	if m := droppedRE.FindStringSubmatch(msg); m != nil && !cut {
		return Denial{Time: t, Client: m[1], Kind: DroppedQueued}, true
	}
	if m := subscribeRE.FindStringSubmatch(msg); m != nil {
		qos, err := strconv.Atoi(m[2])
		if err != nil || qos > 2 && qos < 0x80 || qos > 0xff {
			return Denial{}, false
		}
		return Denial{Time: t, Client: m[1], Kind: DeniedSubscribe, Topic: m[3], Truncated: cut}, true
	}
	return Denial{}, false
}

// splitMosquittoTimestamp splits the "<timestamp>: " prefix — Unix seconds
// (Mosquitto's default) or mosquittoTimestampLayout — from line. Without a
// recognised prefix it returns the zero time and the whole line.
func splitMosquittoTimestamp(line string) (time.Time, string) {
	if m := unixPrefixRE.FindStringSubmatch(line); m != nil {
		if sec, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			return time.Unix(sec, 0), line[len(m[0]):]
		}
		return time.Time{}, line[len(m[0]):]
	}
	n := len(mosquittoTimestampLayout)
	if len(line) >= n+2 && line[n:n+2] == ": " {
		if t, err := time.Parse(mosquittoTimestampLayout, line[:n]); err == nil {
			return t, line[n+2:]
		}
	}
	return time.Time{}, line
}

// String formats d for logs and alerts.
func (d Denial) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s by %q", d.Time.Format(time.RFC3339), d.Kind, d.Client)
	if d.Topic != "" {
		fmt.Fprintf(&b, " on %q", d.Topic)
	}
	if d.Truncated {
		b.WriteString(" (cut)")
	}
	return b.String()
}
