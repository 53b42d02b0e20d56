// Package mqttingest is the server's client of an external MQTT broker
// (Mosquitto, or a cluster such as EMQX or VerneMQ; DESIGN.md §6): it
// receives the devices' reports and hands them to a Handler — the fleet
// ingester — acknowledging each QoS 1 report only once the Handler stored it.
//
// The client keeps a persistent session (clean session off) under a fixed
// client ID, one per server replica, so the broker queues QoS 1 reports
// while the server is away — across a server restart and, with broker
// persistence, a broker restart — and sends them when it is back. A report
// the Handler fails to store is not acknowledged; since MQTT 3.1.1 brokers
// resend an unacknowledged message only on a new connection, the client then
// drops the connection, skips the reports still queued from it (they are
// unacknowledged too) and reconnects, after a backoff, to get them all
// again. Ingestion must therefore be idempotent: fleet.Ingester de-duplicates
// events by ID, and a state older than the stored one is ignored.
//
// With Options.Shared, replicas subscribe through a shared subscription
// ($share/<group>/...) and the broker splits the reports between them.
package mqttingest

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Handler stores one report. It returns nil once the report is stored — or
// rejected for good (malformed, about another device), since the broker
// would otherwise resend it forever — and an error when it may succeed
// later (the store is unavailable): the report is then not acknowledged,
// and the broker sends it again.
//
// Wire fleet.Ingester as:
//
//	mqttingest.HandlerFunc(func(ctx context.Context, topic string, payload []byte) error {
//		if err := ing.Handle(ctx, topic, payload); fleet.Retryable(err) {
//			return err
//		}
//		return nil
//	})
type Handler interface {
	Handle(ctx context.Context, topic string, payload []byte) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, topic string, payload []byte) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, topic string, payload []byte) error {
	return f(ctx, topic, payload)
}

// Defaults of Options.
const (
	DefaultGroup          = "dialtone"
	DefaultQueueSize      = 1024
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Options configures a Client.
type Options struct {
	// Broker is the broker's TLS listener, "host:port" or "mqtts://host:port".
	Broker string
	// TLS holds the server's client certificate and the CA that issued the
	// broker's; required. ServerName defaults to the broker's host.
	TLS *tls.Config
	// ClientID is fixed per replica: the broker keeps the replica's session
	// under it. Empty means the CN of TLS's first certificate, which is what
	// a broker configured by broker.MosquittoConfig (use_username_as_clientid)
	// uses anyway.
	ClientID string
	// Shared subscribes through $share/<Group>/... so that the replicas of
	// a group split the reports between them. Mosquitto 2.0 (seen with
	// 2.0.11) keeps queueing an absent replica's share in its session
	// rather than giving it to the others: those reports wait for it, and a
	// replica removed for good must first be drained.
	Shared bool
	// Group names the shared subscription; empty means DefaultGroup.
	Group string
	// Workers handle reports concurrently, each device's reports on the same
	// worker, in order; 0 means 1.
	Workers int
	// QueueSize bounds the reports waiting for each worker; 0 means
	// DefaultQueueSize. Keep it above the broker's in-flight window
	// (Mosquitto's max_inflight_messages): a QoS 1 report that finds the
	// queue full is treated like a failed one.
	QueueSize int
	// KeepAlive, ConnectTimeout: 0 means the defaults.
	KeepAlive, ConnectTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting; 0 means
	// the defaults.
	MinBackoff, MaxBackoff time.Duration
	// OnConnect, if set, is called on the connection's goroutine each time
	// the client is connected and subscribed; sessionPresent says the broker
	// resumed the session (and so sends what it queued).
	OnConnect func(sessionPresent bool)
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Stats are a Client's counters since New.
type Stats struct {
	Connects uint64 // successful connections
	Received uint64 // reports paho delivered, redeliveries included
	Handled  uint64 // reports the Handler accepted (QoS 1 ones acknowledged)
	Failed   uint64 // reports the Handler failed to store (not acknowledged)
	Overflow uint64 // reports that found their worker's queue full
	Skipped  uint64 // reports of a failed or lost connection, left unacknowledged
}

// Client receives reports from an external broker. Create it with New and
// run it with Run.
type Client struct {
	opts    Options
	h       Handler
	log     *slog.Logger
	broker  *url.URL
	filters map[string]byte
	queues  []chan delivery

	running atomic.Bool
	// subscribed is set once a SUBACK granted every filter in this
	// process; until then the client subscribes even when the broker says
	// it kept the session (it may have kept one without subscriptions).
	subscribed bool

	connects, received, handled, failed, overflow, skipped atomic.Uint64

	// cur is the connected session, nil between connections: Publish's.
	cur atomic.Pointer[session]
}

// delivery is one report on its way to a worker.
type delivery struct {
	sess *session
	msg  mqtt.Message
}

// New validates opts and returns a client that is not yet connected.
func New(h Handler, opts Options) (*Client, error) {
	if h == nil {
		return nil, errors.New("mqttingest: nil handler")
	}
	if opts.TLS == nil {
		return nil, errors.New("mqttingest: a TLS configuration with the server's client certificate is required")
	}
	u, err := parseBroker(opts.Broker)
	if err != nil {
		return nil, err
	}
	if opts.ClientID == "" {
		if opts.ClientID, err = certCN(opts.TLS); err != nil {
			return nil, err
		}
	}
	if !wire.ValidID(opts.ClientID) {
		return nil, fmt.Errorf("mqttingest: client id %q is not a valid ID", opts.ClientID)
	}
	if opts.Group == "" {
		opts.Group = DefaultGroup
	}
	if !wire.ValidID(opts.Group) {
		return nil, fmt.Errorf("mqttingest: shared subscription group %q is not a valid ID", opts.Group)
	}
	if opts.Workers < 0 || opts.QueueSize < 0 || opts.KeepAlive < 0 || opts.ConnectTimeout < 0 || opts.MinBackoff < 0 || opts.MaxBackoff < 0 {
		return nil, errors.New("mqttingest: negative worker count, queue size or duration")
	}
	opts.Workers = max(opts.Workers, 1)
	opts.QueueSize = cmp.Or(opts.QueueSize, DefaultQueueSize)
	opts.KeepAlive = cmp.Or(opts.KeepAlive, DefaultKeepAlive)
	opts.ConnectTimeout = cmp.Or(opts.ConnectTimeout, DefaultConnectTimeout)
	opts.MinBackoff = cmp.Or(opts.MinBackoff, DefaultMinBackoff)
	opts.MaxBackoff = max(cmp.Or(opts.MaxBackoff, DefaultMaxBackoff), opts.MinBackoff)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Client{
		opts:    opts,
		h:       h,
		log:     log.With("component", "mqttingest", "client", opts.ClientID),
		broker:  u,
		filters: Filters(opts.Shared, opts.Group),
		queues:  make([]chan delivery, opts.Workers),
	}
	for i := range c.queues {
		c.queues[i] = make(chan delivery, opts.QueueSize)
	}
	return c, nil
}

// Filters returns the subscriptions of a client, with their QoS: the state
// and events of every device at QoS 1, their telemetry at QoS 0; under
// $share/<group>/ when shared.
func Filters(shared bool, group string) map[string]byte {
	f := map[string]byte{}
	for kind, qos := range map[string]byte{wire.KindState: 1, wire.KindEvents: 1, wire.KindTelemetry: 0} {
		filter := wire.Topic("+", "+", kind)
		if shared {
			filter = "$share/" + group + "/" + filter
		}
		f[filter] = qos
	}
	return f
}

// ErrRunning is returned by Run when the client already runs.
var ErrRunning = errors.New("mqttingest: already running")

// Run connects, receives and hands reports to the Handler, and reconnects
// with backoff whenever the connection is lost or a report could not be
// stored, until ctx is done; it then returns nil. Reports received but not
// yet stored at that point are not acknowledged: the broker keeps them for
// the next run under the same client ID.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	var wg sync.WaitGroup
	for _, q := range c.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.work(ctx, q)
		}()
	}
	c.connectLoop(ctx)
	wg.Wait()
	for _, q := range c.queues { // left unacknowledged: the broker resends them
		for len(q) > 0 {
			<-q
			c.skipped.Add(1)
		}
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	return Stats{
		Connects: c.connects.Load(),
		Received: c.received.Load(),
		Handled:  c.handled.Load(),
		Failed:   c.failed.Load(),
		Overflow: c.overflow.Load(),
		Skipped:  c.skipped.Load(),
	}
}

// session is one connection, made by its own paho client.
type session struct {
	pc       mqtt.Client
	lost     chan struct{} // closed when the connection is gone or failed
	lostOnce sync.Once
	failed   atomic.Bool // a report was not stored: skip the rest

	mu   sync.Mutex
	conn net.Conn
}

func (s *session) markLost() { s.lostOnce.Do(func() { close(s.lost) }) }

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// fail gives up on the connection: its unacknowledged reports are skipped
// and the connection is closed, so that the broker resends them after the
// client reconnects.
func (s *session) fail() {
	if !s.failed.CompareAndSwap(false, true) {
		return
	}
	s.markLost()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		_ = s.conn.Close()
	}
}

func (c *Client) connectLoop(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		sess, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			attempt++
			wait := c.backoff(attempt)
			c.log.Warn("connecting to the broker failed", "broker", c.broker.Host, "error", err, "retry_in", wait.Round(time.Millisecond))
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		since := time.Now()
		select {
		case <-ctx.Done():
		case <-sess.lost:
		}
		sess.markLost() // workers skip what is left of this connection
		c.cur.CompareAndSwap(sess, nil)
		if ctx.Err() != nil {
			// Let paho send the acknowledgements already handed to it.
			sess.pc.Disconnect(250)
			return
		}
		sess.pc.Disconnect(0)
		if time.Since(since) >= c.opts.MaxBackoff {
			attempt = 0 // it worked for a while: start the backoff again
		}
		attempt++
		wait := c.backoff(attempt)
		c.log.Warn("connection to the broker lost; reconnecting", "broker", c.broker.Host, "report_failed", sess.failed.Load(), "retry_in", wait.Round(time.Millisecond))
		if !sleep(ctx, wait) {
			return
		}
	}
}

// connect makes one connection with a fresh paho client and subscribes if
// the broker did not keep the subscriptions.
func (c *Client) connect(ctx context.Context) (*session, error) {
	sess := &session{lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(c.broker.String()).
		SetClientID(c.opts.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetProtocolVersion(4).
		SetKeepAlive(c.opts.KeepAlive).
		SetPingTimeout(c.opts.ConnectTimeout).
		SetConnectTimeout(c.opts.ConnectTimeout).
		SetWriteTimeout(c.opts.ConnectTimeout).
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		// Queued reports arrive right after the CONNACK, before any
		// SUBSCRIBE: every message goes to the default handler.
		SetDefaultPublishHandler(c.onMessage(sess)).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			c.log.Debug("connection lost", "error", err)
			sess.markLost()
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := c.dial(ctx, u)
			if err != nil {
				return nil, err
			}
			sess.mu.Lock()
			sess.conn = conn
			sess.mu.Unlock()
			return conn, nil
		})
	sess.pc = mqtt.NewClient(opts)
	tok := sess.pc.Connect()
	if err := c.wait(ctx, sess, tok); err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	present := tok.(*mqtt.ConnectToken).SessionPresent()
	c.connects.Add(1)
	c.log.Info("connected", "broker", c.broker.Host, "session_present", present, "shared", c.opts.Shared)
	if !present || !c.subscribed {
		if err := c.subscribe(ctx, sess); err != nil {
			sess.fail()
			sess.pc.Disconnect(0)
			return nil, err
		}
	}
	c.cur.Store(sess)
	if c.opts.OnConnect != nil {
		c.opts.OnConnect(present)
	}
	return sess, nil
}

func (c *Client) subscribe(ctx context.Context, sess *session) error {
	tok := sess.pc.SubscribeMultiple(c.filters, nil)
	if err := c.wait(ctx, sess, tok); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	for filter, code := range tok.(*mqtt.SubscribeToken).Result() {
		if code > 2 {
			return fmt.Errorf("subscribing: the broker refused %q (code %#x)", filter, code)
		}
	}
	c.subscribed = true
	c.log.Debug("subscribed", "filters", slices.Sorted(maps.Keys(c.filters)))
	return nil
}

// wait waits for tok, or gives up on the connection when ctx is done.
func (c *Client) wait(ctx context.Context, sess *session, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		sess.fail()
		<-tok.Done() // prompt once the connection is closed
		sess.pc.Disconnect(0)
		return ctx.Err()
	}
}

// dial opens the TLS connection for paho, cancellable by ctx.
func (c *Client) dial(ctx context.Context, u *url.URL) (net.Conn, error) {
	cfg := c.opts.TLS.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	d := &tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dialling %s: %w", u.Host, err)
	}
	return conn, nil
}

// onMessage runs on paho's router goroutine: it must not block, so it only
// hands the report to its device's worker.
func (c *Client) onMessage(sess *session) mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) {
		c.received.Add(1)
		q := c.queues[c.shard(m.Topic())]
		select {
		case q <- delivery{sess: sess, msg: m}:
		default:
			c.overflow.Add(1)
			if m.Qos() == 0 {
				c.log.Warn("queue full: dropping a QoS 0 report", "topic", trunc(m.Topic()))
				return
			}
			c.log.Warn("queue full: reconnecting to get the report again", "topic", trunc(m.Topic()))
			sess.fail()
		}
	}
}

// shard picks a device's worker, so that its reports stay in order.
func (c *Client) shard(topic string) int {
	if len(c.queues) == 1 {
		return 0
	}
	_, device, _, err := wire.ParseTopic(topic)
	if err != nil {
		device = topic
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(device))
	return int(h.Sum32() % uint32(len(c.queues)))
}

// work hands reports to the Handler and acknowledges those it stored.
func (c *Client) work(ctx context.Context, q <-chan delivery) {
	for {
		var d delivery
		select {
		case <-ctx.Done():
			return
		case d = <-q:
		}
		if d.sess.isLost() {
			// Its acknowledgement could not be sent: the broker resends it
			// on the next connection.
			c.skipped.Add(1)
			continue
		}
		m := d.msg
		if err := c.h.Handle(ctx, m.Topic(), m.Payload()); err != nil {
			c.failed.Add(1)
			if ctx.Err() == nil {
				c.log.Warn("report not stored: withholding its acknowledgement and reconnecting", "topic", trunc(m.Topic()), "duplicate", m.Duplicate(), "error", err)
			}
			d.sess.fail()
			continue
		}
		c.handled.Add(1)
		m.Ack() // a no-op for QoS 0; dropped by paho if the connection is gone
	}
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.MinBackoff
	for i := 1; i < attempt && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	return d/2 + rand.N(d/2+1) // jitter: replicas do not reconnect in step
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func parseBroker(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("mqttingest: no broker address")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		// "host:port"
		if _, _, serr := net.SplitHostPort(s); serr != nil {
			return nil, fmt.Errorf("mqttingest: broker %q: want host:port or mqtts://host:port", s)
		}
		return &url.URL{Scheme: "mqtts", Host: s}, nil
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls":
	default:
		return nil, fmt.Errorf("mqttingest: broker %q: only mqtts:// is supported", s)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("mqttingest: broker %q: no port", s)
	}
	return &url.URL{Scheme: "mqtts", Host: u.Host}, nil
}

// certCN is the CN of the first client certificate in cfg.
func certCN(cfg *tls.Config) (string, error) {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return "", errors.New("mqttingest: the TLS configuration has no client certificate (and no ClientID is given)")
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return "", fmt.Errorf("mqttingest: parsing the client certificate: %w", err)
		}
	}
	return leaf.Subject.CommonName, nil
}

// trunc bounds broker-supplied strings before they are logged.
func trunc(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
