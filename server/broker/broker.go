// Package broker owns the embedded MQTT broker (mochi-mqtt) and its
// per-device ACL (DESIGN.md §6, threats A1 and A6).
//
// A client authenticated as username U must use U as its client ID. It may
// publish only to dialtone/v1/<tenant>/U/{state,events,telemetry} — its last
// will included — and subscribe only to dialtone/v1/<tenant>/U/cmd, where
// <tenant> is any valid wire ID (no wildcards). Only state may be retained.
// Everything else is refused, counted (see Refusals) and reported to
// Options.OnDenial, and runs of refused connections from one host to
// Options.OnAuthFailures (server/alert makes alerts of both): a refused
// subscription gets the failure reason code in its SUBACK; a refused QoS 0
// publish is dropped; a refused QoS 1/2 publish gets a "not authorized"
// PUBACK on MQTT 5 and, since MQTT 3.1.1 has no way to refuse a publish,
// costs an MQTT 3.1.1 client its connection. A connection whose client ID
// differs from its username, or whose will breaks the rules, is refused in
// its CONNACK.
//
// The server side reaches the broker through Subscribe and Publish, which
// bypass the ACL, and receives devices' reports through Options.Ingest
// before they are acknowledged.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Authenticator checks a device's MQTT credentials. The username is the
// device ID.
type Authenticator interface {
	Authenticate(ctx context.Context, username string, password []byte) bool
}

// Options configures a Broker.
type Options struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:0"; with port 0
	// read the bound address back with Addr after Start.
	Addr string
	// Dev enables development mode: without an Authenticator any username
	// that is a valid wire ID is accepted, with any password. INSECURE: any
	// client can then impersonate any device.
	Dev bool
	// Auth checks credentials; required unless Dev.
	Auth Authenticator
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// TLS, if set, makes the listener TLS instead of plain TCP.
	TLS *tls.Config
	// Ingest, when set, receives every report a device publishes before
	// the broker acknowledges it, on the device's connection goroutine. An
	// error withholds the acknowledgement and disconnects the device, which
	// sends the report again when it reconnects: an acknowledged report is
	// a stored report. Reports Ingest rejects for good (malformed) must
	// return nil, or the device would send them forever.
	Ingest func(ctx context.Context, topic string, payload []byte) error
	// IngestAsync, when set, replaces Ingest with its pipelined form: it
	// takes the report and later passes its outcome to done (which never
	// blocks), so that a device's next reports are read while the last is
	// being stored — the store then writes many at once. The PUBACK still
	// goes out only once done reported the report stored, in order; an
	// error withholds it and disconnects the device, as with Ingest.
	IngestAsync func(ctx context.Context, topic string, payload []byte, done func(error))
	// MaxPending bounds a connection's reports handed to IngestAsync and
	// not yet stored; 0 means DefaultMaxPending.
	MaxPending int
	// OnDenial, when set, is called with every publish (Kind DeniedPublish;
	// retained ones outside state included) and subscription (Kind
	// DeniedSubscribe; Topic is the filter) that the ACL refuses, on the
	// client's connection goroutine: it must not block long.
	OnDenial func(Denial)
	// OnAuthFailures, when set, is called when AuthFailureLimit refused
	// connections (failed authentication, or a CONNECT breaking the rules)
	// from one remote host happen within AuthFailureWindow, and again at
	// every further multiple of the limit within that window; client is the
	// username of the last attempt and remote its address, n the failures
	// counted. It runs on the connecting client's goroutine.
	OnAuthFailures func(client, remote string, n int)
	// PeerAuth, when set, authenticates devices by the client certificate
	// of their TLS connection (TLS must be set, and verify client
	// certificates): it gets the username and the verified chains' leaf
	// first, and an error refuses the device. Auth is then not needed.
	PeerAuth func(ctx context.Context, username string, chain []*x509.Certificate) error
	// Admit, when set, is asked after authentication whether the device
	// may connect at all: an error refuses it (the server refuses devices
	// whose attestation is untrusted) and is logged.
	Admit func(ctx context.Context, device string) error
	// AuthFailureLimit is 5 when 0; AuthFailureWindow a minute when 0.
	AuthFailureLimit  int
	AuthFailureWindow time.Duration
}

const (
	// authTimeout bounds one call to Authenticator.Authenticate.
	authTimeout = 10 * time.Second
	// maxPacket bounds every inbound MQTT packet: the largest payload wire
	// accepts plus room for the topic and headers.
	maxPacket  = wire.MaxPayload + 4<<10
	listenerID = "dialtone"

	defaultAuthFailureLimit  = 5
	defaultAuthFailureWindow = time.Minute
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("broker closed")

// Broker is the embedded MQTT broker.
type Broker struct {
	opts Options
	log  *slog.Logger
	srv  *mqtt.Server

	refusals atomic.Uint64
	subID    atomic.Int32
	failures failureCounter

	// ctx is Start's context, the parent of Authenticate calls; written
	// before the listener accepts its first connection, never after.
	ctx context.Context

	mu      sync.Mutex
	ln      *listener
	started bool
	closed  bool
	stop    chan struct{} // closed by Close; ends the ctx watcher

	pipesMu sync.Mutex
	pipes   map[*mqtt.Client]*pipe // connections' reports on their way to IngestAsync
}

// New validates opts and returns a broker that is not yet listening.
func New(opts Options) (*Broker, error) {
	if opts.Addr == "" {
		return nil, errors.New("broker: empty listen address")
	}
	if opts.Auth == nil && opts.PeerAuth == nil && !opts.Dev {
		return nil, errors.New("broker: an authenticator is required outside dev mode")
	}
	if opts.PeerAuth != nil && (opts.TLS == nil || opts.TLS.ClientAuth < tls.VerifyClientCertIfGiven) {
		return nil, errors.New("broker: authenticating devices by certificate needs TLS that verifies client certificates")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "broker")
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = maxPacket
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       log.With("mqtt", "mochi"),
	})
	b := &Broker{opts: opts, log: log, srv: srv, stop: make(chan struct{})}
	b.failures = failureCounter{limit: opts.AuthFailureLimit, window: opts.AuthFailureWindow, now: time.Now}
	if b.failures.limit <= 0 {
		b.failures.limit = defaultAuthFailureLimit
	}
	if b.failures.window <= 0 {
		b.failures.window = defaultAuthFailureWindow
	}
	if err := srv.AddHook(&aclHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: adding acl hook: %w", err)
	}
	if opts.Dev && opts.Auth == nil {
		log.Warn("dev mode: devices authenticate by username only; do not use in production")
	}
	return b, nil
}

// Start listens on Options.Addr — so Addr works as soon as it returns — and
// serves in the background until ctx is done or Close is called.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return errors.New("broker: already started")
	}
	var lc net.ListenConfig
	nl, err := lc.Listen(ctx, "tcp", b.opts.Addr)
	if err != nil {
		return fmt.Errorf("broker: listening on %s: %w", b.opts.Addr, err)
	}
	if b.opts.TLS != nil {
		nl = tls.NewListener(nl, b.opts.TLS)
	}
	ln := newListener(listenerID, nl, b.log)
	if err := b.srv.AddListener(ln); err != nil {
		_ = nl.Close()
		return fmt.Errorf("broker: adding listener: %w", err)
	}
	b.ln = ln
	b.ctx = ctx
	b.started = true
	if err := b.srv.Serve(); err != nil {
		b.closeLocked()
		return fmt.Errorf("broker: serving: %w", err)
	}
	b.log.Info("listening", "addr", nl.Addr().String(), "tls", b.opts.TLS != nil, "dev", b.opts.Dev)
	go func() {
		select {
		case <-ctx.Done():
			_ = b.Close()
		case <-b.stop:
		}
	}()
	return nil
}

// Disconnect closes a device's connection, if it has one, and reports
// whether it had. What it may do when it reconnects is Admit's decision.
func (b *Broker) Disconnect(device, reason string) bool {
	cl, ok := b.srv.Clients.Get(device)
	if !ok || cl.Net.Inline {
		return false
	}
	b.log.Warn("disconnecting device", "device", device, "reason", reason)
	_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	cl.Stop(fmt.Errorf("disconnected by the server: %s", reason))
	return true
}

// Addr is the address the broker listens on, or nil before Start.
func (b *Broker) Addr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil {
		return nil
	}
	return b.ln.nl.Addr()
}

// Subscribe registers a server-side (inline) subscription to filter,
// bypassing the ACL. fn is called for every matching message, including the
// retained ones at subscription time, on the publishing client's goroutine:
// it must not block long. fn owns the payload slice.
func (b *Broker) Subscribe(filter string, fn func(topic string, payload []byte)) error {
	if fn == nil {
		return errors.New("broker: nil subscription handler")
	}
	id := int(b.subID.Add(1))
	err := b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(pk.TopicName, append([]byte(nil), pk.Payload...))
	})
	if err != nil {
		return fmt.Errorf("broker: subscribing to %q: %w", filter, err)
	}
	return nil
}

// Publish publishes a message from the server side, bypassing the ACL (for
// example a command to dialtone/v1/<tenant>/<device>/cmd). qos caps the QoS
// at which subscribers receive it.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if qos > 2 {
		return fmt.Errorf("broker: publishing to %q: qos %d", topic, qos)
	}
	if topic == "" || !mqtt.IsValidFilter(topic, true) { // mochi checks little for the inline client
		return fmt.Errorf("broker: publishing to %q: invalid topic name", topic)
	}
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("broker: publishing to %q: %w", topic, err)
	}
	return nil
}

// Refusals is the number of refused connections, publishes and
// subscriptions since New.
func (b *Broker) Refusals() uint64 { return b.refusals.Load() }

// Close disconnects every client and stops the broker. It is safe to call
// more than once.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeLocked()
	return nil
}

func (b *Broker) closeLocked() {
	if b.closed {
		return
	}
	b.closed = true
	close(b.stop)
	if !b.started {
		return
	}
	_ = b.srv.Close() // always nil; closes the listener via listener.Close
	b.ln.wait()
	b.log.Info("stopped")
}

func (b *Broker) authContext() (context.Context, context.CancelFunc) {
	parent := b.ctx
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, authTimeout)
}

func (b *Broker) refuse(msg string, args ...any) {
	b.refusals.Add(1)
	b.log.Warn(msg, args...)
}

// denied reports an ACL refusal to Options.OnDenial.
func (b *Broker) denied(client string, kind DenialKind, topic string) {
	if b.opts.OnDenial == nil {
		return
	}
	b.opts.OnDenial(Denial{Time: time.Now(), Client: client, Kind: kind, Topic: topic})
}

// connFailed counts a refused connection and reports a run of them to
// Options.OnAuthFailures.
func (b *Broker) connFailed(user, remote string) {
	if b.opts.OnAuthFailures == nil {
		return
	}
	if n := b.failures.add(remote); n > 0 {
		b.opts.OnAuthFailures(trunc(user), remote, n)
	}
}

// failureCounter counts refused connections per remote host in fixed
// windows that start at a host's first failure.
type failureCounter struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	hosts map[string]*failures
}

type failures struct {
	start time.Time
	n     int
}

// maxFailureHosts bounds the hosts tracked at once; past it, expired ones
// are forgotten, and if none has expired, all are.
const maxFailureHosts = 4096

// add counts a failure from remote (host:port) and returns the count when
// it reaches a multiple of the limit, 0 otherwise.
func (c *failureCounter) add(remote string) int {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hosts == nil {
		c.hosts = map[string]*failures{}
	}
	f := c.hosts[host]
	if f == nil || now.Sub(f.start) >= c.window {
		if f == nil && len(c.hosts) >= maxFailureHosts {
			c.pruneLocked(now)
		}
		f = &failures{start: now}
		c.hosts[host] = f
	}
	f.n++
	if f.n%c.limit == 0 {
		return f.n
	}
	return 0
}

func (c *failureCounter) pruneLocked(now time.Time) {
	for h, f := range c.hosts {
		if now.Sub(f.start) >= c.window {
			delete(c.hosts, h)
		}
	}
	if len(c.hosts) >= maxFailureHosts {
		clear(c.hosts)
	}
}
