// Package report owns reporting from the phone: an MQTT client (paho) that
// keeps the device's retained state and last will up to date, receives
// commands, and sends events through a durable on-disk outbox, so that no
// event is lost across disconnects, broker restarts or agent crashes
// (DESIGN.md §6).
//
// Every event is written to the outbox (one file per event, fsynced) before
// it is sent with QoS 1, and removed only once the broker acknowledged it.
// After every (re)connection everything still in the outbox is sent again in
// Seq order, so the broker may see an event twice; the server de-duplicates
// by event ID. paho's own store is not used as a queue: each connection uses
// a fresh paho client with a clean session and no automatic reconnection,
// because paho completes the tokens of messages it resends after an
// automatic reconnect without waiting for their PUBACK.
//
// One Client at a time may use an outbox directory.
package report

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// DefaultMaxOutbox is the outbox bound used when Options.MaxOutbox is 0.
const DefaultMaxOutbox = 10_000

var (
	// ErrOutboxFull is wrapped by Event when the outbox holds
	// Options.MaxOutbox events that the broker has not acknowledged.
	ErrOutboxFull = errors.New("outbox full")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("report client closed")
	// ErrRefused is wrapped by connection errors when the broker refused the
	// connection in its CONNACK (credentials, client ID, will).
	ErrRefused = errors.New("connection refused by broker")
)

// Options configures a Client.
type Options struct {
	// Broker is mqtt://host:port or mqtts://host:port (default ports 1883
	// and 8883).
	Broker string
	// Tenant and Device name the topics; Device is also the MQTT client ID
	// and username.
	Tenant, Device string
	// Password is the optional MQTT password.
	Password string
	// TLS configures mqtts; its ServerName defaults to the broker's host.
	TLS *tls.Config
	// OutboxDir holds the outbox; required. Created if missing.
	OutboxDir string
	// MaxOutbox bounds the events waiting for the broker; 0 means
	// DefaultMaxOutbox.
	MaxOutbox int
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Timeouts and limits of the connection manager.
const (
	connectTimeout = 10 * time.Second // TCP, TLS and MQTT handshake
	keepAlive      = 30 * time.Second
	pingTimeout    = 10 * time.Second
	writeTimeout   = 10 * time.Second
	ackTimeout     = 30 * time.Second // a PUBACK/SUBACK later than this aborts the connection
	quiesce        = 250 * time.Millisecond
	minBackoff     = 500 * time.Millisecond
	maxBackoff     = 60 * time.Second
	stableAfter    = time.Minute // a connection this old resets the backoff
	sendWindow     = 32          // events in flight per connection
	commandQueue   = 32
)

// Client reports one device over MQTT. Its methods are safe for concurrent
// use.
type Client struct {
	opts   Options
	log    *slog.Logger
	broker *url.URL
	box    *outbox

	stateTopic, eventsTopic, cmdTopic, telemetryTopic string

	// ctx lives until Close; it bounds the connection manager.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the connection manager returned
	wake   chan struct{} // new events to send; buffered 1

	cmds chan wire.Command
	// subscribed is closed once the broker acknowledged the first command
	// subscription; retained commands follow it on the connection.
	subscribed chan struct{}
	subOnce    sync.Once
	cmdMu      sync.Mutex
	cmdEnd     bool // cmds closed

	// stateMu serialises state publications so that the retained state is
	// always the latest one given.
	stateMu sync.Mutex

	mu      sync.Mutex
	will    wire.State     // base of the last will (SetWill, else the last state)
	state   *wire.State    // last state given to PublishState, republished on reconnect
	sip     *wire.SIPState // SetSIP's line, added to every state (sip.go)
	sess    *session       // current connection; nil while offline
	lastErr error          // of the last connection attempt
	status  chan struct{}
	started bool
	closed  bool
}

// New checks opts and opens the outbox (events left by a previous run are
// sent once connected). It does not connect.
func New(opts Options) (*Client, error) {
	if !wire.ValidID(opts.Tenant) || !wire.ValidID(opts.Device) {
		return nil, fmt.Errorf("report: invalid tenant %q or device %q", opts.Tenant, opts.Device)
	}
	if opts.OutboxDir == "" {
		return nil, errors.New("report: outbox directory required")
	}
	if opts.MaxOutbox < 0 {
		return nil, fmt.Errorf("report: negative outbox bound %d", opts.MaxOutbox)
	}
	if opts.MaxOutbox == 0 {
		opts.MaxOutbox = DefaultMaxOutbox
	}
	u, err := parseBroker(opts.Broker)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "report")
	box, err := openOutbox(opts.OutboxDir, opts.MaxOutbox, log)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:        opts,
		log:         log,
		broker:      u,
		box:         box,
		stateTopic:  wire.Topic(opts.Tenant, opts.Device, wire.KindState),
		eventsTopic: wire.Topic(opts.Tenant, opts.Device, wire.KindEvents),
		cmdTopic:    wire.Topic(opts.Tenant, opts.Device, wire.KindCmd),

		telemetryTopic: wire.Topic(opts.Tenant, opts.Device, wire.KindTelemetry),
		ctx:            ctx,
		cancel:         cancel,
		done:           make(chan struct{}),
		wake:           make(chan struct{}, 1),
		cmds:           make(chan wire.Command, commandQueue),
		subscribed:     make(chan struct{}),
		status:         make(chan struct{}),
	}
	return c, nil
}

func parseBroker(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parsing broker address: %w", err)
	}
	var port string
	switch u.Scheme {
	case "mqtt":
		port = "1883"
	case "mqtts":
		port = "8883"
	default:
		return nil, fmt.Errorf("broker address %q: scheme must be mqtt or mqtts", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("broker address %q: no host", s)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// SetWill sets the state that the last will (the retained offline state the
// broker publishes if the connection drops uncleanly) is made from, with
// Online false. MQTT fixes the will when connecting, so it applies from the
// next connection: call it before Connect. PublishState also updates it, so
// that the will of every later reconnection carries the model and version
// last reported.
func (c *Client) SetWill(s wire.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.will = s
}

// Connect starts the connection manager, which connects, and reconnects
// with backoff and jitter after every loss, until Close. It returns once
// connected, or with an error when ctx is done first or when the broker
// refused the connection (wrapping ErrRefused); either way the manager keeps
// trying in the background.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.started:
		c.mu.Unlock()
		return errors.New("report: already connecting")
	}
	c.started = true
	c.mu.Unlock()
	go c.run()
	for {
		c.mu.Lock()
		sess, lastErr, status := c.sess, c.lastErr, c.status
		c.mu.Unlock()
		switch {
		case sess != nil:
			return nil
		case errors.Is(lastErr, ErrRefused):
			return fmt.Errorf("report: connecting to %s: %w", c.broker.Host, lastErr)
		}
		select {
		case <-status:
		case <-c.done:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("report: connecting to %s: %w (last attempt: %v)", c.broker.Host, ctx.Err(), lastErr)
		}
	}
}

// PublishState publishes s as the retained state (QoS 1), filling Schema,
// Time, Tenant and Device when zero, and remembers it: it is published again
// after every reconnection and is the base of the next last will. While
// offline it returns nil at once and the state goes out on reconnection.
func (c *Client) PublishState(ctx context.Context, s wire.State) error {
	s.SIP = c.sipFor(s.SIP)
	s, err := c.fillState(s)
	if err != nil {
		return err
	}
	if _, err := wire.EncodeState(s); err != nil {
		return fmt.Errorf("report: state: %w", err)
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.state = &s
	c.will = s
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		c.log.Debug("offline: state will be published on connection")
		return nil
	}
	if err := c.publishState(ctx, sess, s); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

func (c *Client) fillState(s wire.State) (wire.State, error) {
	if s.Schema == 0 {
		s.Schema = wire.SchemaVersion
	}
	if s.Time.IsZero() {
		s.Time = time.Now().UTC()
	}
	if s.Tenant == "" {
		s.Tenant = c.opts.Tenant
	}
	if s.Device == "" {
		s.Device = c.opts.Device
	}
	if s.Tenant != c.opts.Tenant || s.Device != c.opts.Device {
		return wire.State{}, fmt.Errorf("report: state for %s/%s from client %s/%s: %w",
			s.Tenant, s.Device, c.opts.Tenant, c.opts.Device, wire.ErrInvalid)
	}
	return s, nil
}

// publishState sends one retained state on sess and waits for its PUBACK.
func (c *Client) publishState(ctx context.Context, sess *session, s wire.State) error {
	s.Conn = sess.since
	payload, err := wire.EncodeState(s)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tok := sess.pc.Publish(c.stateTopic, 1, true, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("publishing state: %w", ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publishing state: %w", err)
	}
	return nil
}

// Event completes e — a random ID if empty, the next Seq (persisted in the
// outbox across restarts), Schema, Time and Device if zero — writes it to
// the outbox and returns it. It does not wait for the broker: the event is
// sent in the background, now or after reconnection. When the outbox is
// full it returns an error wrapping ErrOutboxFull and nothing is stored.
func (c *Client) Event(ctx context.Context, e wire.Event) (wire.Event, error) {
	if err := ctx.Err(); err != nil {
		return wire.Event{}, fmt.Errorf("report: event: %w", err)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return wire.Event{}, ErrClosed
	}
	if e.Schema == 0 {
		e.Schema = wire.SchemaVersion
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Device == "" {
		e.Device = c.opts.Device
	}
	if e.Device != c.opts.Device {
		return wire.Event{}, fmt.Errorf("report: event for device %q from client %q: %w", e.Device, c.opts.Device, wire.ErrInvalid)
	}
	if e.ID == "" {
		e.ID = newID()
	}
	e, err := c.box.add(e)
	if err != nil {
		return wire.Event{}, fmt.Errorf("report: %w", err)
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return e, nil
}

// newID returns 26 lowercase hex characters (104 random bits).
func newID() string {
	var b [13]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// Flush returns nil once the outbox is empty (every event acknowledged by
// the broker), or an error when ctx is done first.
func (c *Client) Flush(ctx context.Context) error {
	for {
		n, changed := c.box.state()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("report: flushing %d events: %w", n, ctx.Err())
		}
	}
}

// Pending is the number of events in the outbox.
func (c *Client) Pending() int {
	n, _ := c.box.state()
	return n
}

// Subscribed is closed once the broker has acknowledged the subscription to
// the device's commands; a retained command (the desired version) arrives
// right after it.
func (c *Client) Subscribed() <-chan struct{} { return c.subscribed }

// Commands delivers the valid commands received on the device's cmd topic;
// invalid ones are logged and dropped, and so are commands arriving while
// the channel is full. It is closed by Close.
func (c *Client) Commands() <-chan wire.Command { return c.cmds }

// Close flushes the outbox while connected and ctx allows, publishes the
// offline state, disconnects cleanly and stops the connection manager.
// Events not yet acknowledged stay in the outbox for the next Client. It
// returns an error if ctx ended before the flush and the offline state
// completed; the client is closed regardless.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	started := c.started
	c.mu.Unlock()

	var errs []error
	if started {
		if err := c.flushConnected(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := c.publishOffline(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	c.cancel()
	if started {
		<-c.done // the manager disconnects cleanly on its way out
	}
	c.cmdMu.Lock()
	c.cmdEnd = true
	close(c.cmds)
	c.cmdMu.Unlock()
	if n, _ := c.box.state(); n > 0 {
		c.log.Info("closing with events in the outbox", "events", n)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("report: closing: %w", err)
	}
	return nil
}

// flushConnected waits until the outbox is empty, the connection is lost
// or ctx is done (an error only in the last case).
func (c *Client) flushConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		sess := c.sess
		c.mu.Unlock()
		if sess == nil {
			return nil
		}
		n, changed := c.box.state()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-sess.lost:
		case <-ctx.Done():
			return fmt.Errorf("flushing %d events: %w", n, ctx.Err())
		}
	}
}

func (c *Client) publishOffline(ctx context.Context) error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return nil // the broker published (or will publish) the will
	}
	s := c.offlineState()
	c.mu.Lock()
	c.state = &s
	c.mu.Unlock()
	err := c.publishState(ctx, sess, s)
	if err != nil && ctx.Err() == nil {
		// The connection broke under us: the broker publishes the will,
		// which is the same offline state.
		c.log.Warn("publishing offline state; the broker will publish the last will instead", "error", err)
		return nil
	}
	return err
}

// offlineState is the will's base with Online false and the current time.
func (c *Client) offlineState() wire.State {
	c.mu.Lock()
	s := c.will
	c.mu.Unlock()
	s.Schema = wire.SchemaVersion
	s.Tenant = c.opts.Tenant
	s.Device = c.opts.Device
	s.Online = false
	s.Time = time.Now().UTC()
	// An offline phone reaches no registrar: its last SIP line would
	// mislead.
	s.SIP = nil
	return s
}

func (c *Client) deliverCommand(cmd wire.Command) {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	if c.cmdEnd {
		return
	}
	select {
	case c.cmds <- cmd:
	default:
		c.log.Warn("dropping command: queue full", "id", cmd.ID, "name", cmd.Name)
	}
}
