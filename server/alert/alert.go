// Package alert owns the server's security alerts (issue 6): it turns ACL
// denials of either broker, reports rejected by ingestion, repeated
// connection failures and agents' own security events into store.Alert
// records, collapses floods of repeats, and delivers each alert to the fleet
// store (what `dialtone alerts list` and GET /v1/alerts read), to MQTT
// subscribers of dialtone/v1/<tenant>/_alerts and, when configured, to a
// webhook.
//
// # Collapsing
//
// Occurrences with the same identity — tenant, kind, device, source and
// Alert.Key — within one window (default one minute, aligned to the clock:
// the window of t is t.Truncate(window)) are one alert. Its ID is a hash of
// the identity and the window's start, so every replica, and a restarted
// server, computes the same ID for it. The first occurrence is stored and
// sent at once; later ones only count, in memory, and Run writes the
// running count to the store at most once per tick (the store keeps the
// larger count, so rewrites are idempotent) and, when the window has ended
// with more occurrences than were sent, sends the alert once more with its
// final count. A flood thus costs one row and at most two notifications per
// identity and window. Replicas each count their own occurrences, so with
// several the stored count is a lower bound.
//
// # Webhook
//
// Deliveries go through a bounded queue and one worker: Raise never waits
// for the network. A full queue drops its oldest alert (counted in
// Stats.Dropped, logged). Each alert is POSTed as JSON with a timeout and
// retried with exponential backoff on network errors, 408, 429 and 5xx;
// with a secret the body is signed: X-Dialtone-Signature: sha256=<hex
// HMAC-SHA256 of the body>.
package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Kinds of alert.
const (
	// KindACLDenied: a broker refused a publish or subscription outside the
	// client's own subtree (embedded broker's ACL, Mosquitto's log).
	KindACLDenied = "acl-denied"
	// KindMalformedPayload: ingestion rejected a report for good (bad
	// topic, malformed JSON, unknown schema, oversized, wrong types).
	KindMalformedPayload = "malformed-payload"
	// KindDeviceMismatch: a report names a device or tenant other than its
	// topic, or a device reports under another tenant than its own.
	KindDeviceMismatch = "device-mismatch"
	// KindConnectionFailures: repeated refused connections from one host.
	KindConnectionFailures = "connection-failures"
	// KindQueueOverflow: Mosquitto dropped messages queued for a client.
	KindQueueOverflow = "queue-overflow"
	// KindAgentSecurity: an agent reported a security event (below its
	// anti-rollback floor, a refused trial, SIP scanning…).
	KindAgentSecurity = "agent-security"
	// KindUpdateRefused: an agent refused an update (verification failed).
	KindUpdateRefused = "update-refused"
	// KindUntrusted: a device's attestation was judged untrusted.
	KindUntrusted = "attestation-untrusted"
	// KindDeviceHijack: a device ID enrolled with one TPM tried to enroll
	// with another.
	KindDeviceHijack = "device-hijack"
	// KindEnrollRefused: an enrollment was refused (no grant, unknown
	// manufacturer CA, failed credential activation).
	KindEnrollRefused = "enrollment-refused"
)

// Sources of alerts.
const (
	SourceEmbeddedBroker = "embedded-broker"
	SourceMosquitto      = "mosquitto"
	SourceIngest         = "ingest"
	SourceAgent          = "agent"
	SourceAttestation    = "attestation"
)

// Severities.
const (
	SeverityWarning  = store.AlertWarning
	SeverityCritical = store.AlertCritical
)

// TopicSuffix ends the MQTT topic alerts are published on,
// dialtone/v1/<tenant>/_alerts. It cannot be confused with a device's
// topics: those have three levels under dialtone/v1, and no wire ID starts
// with "_", so neither the device ACLs nor ingestion's subscriptions
// (dialtone/v1/+/+/<kind>) match it.
const TopicSuffix = "_alerts"

// NoTenant stands for the tenant in the topic of an alert whose tenant is
// unknown: dialtone/v1/_/_alerts (not a valid wire ID either).
const NoTenant = "_"

// Topic returns the MQTT topic alerts of tenant are published on;
// dialtone/v1/+/_alerts matches every tenant's.
func Topic(tenant string) string {
	if tenant == "" {
		tenant = NoTenant
	}
	return wire.TopicRoot + "/" + tenant + "/" + TopicSuffix
}

// Alert is an occurrence to raise.
type Alert struct {
	Kind, Severity, Source string
	// Tenant is "" when unknown, Device "" when none.
	Tenant, Device string
	Message        string
	Fields         map[string]string
	// Key splits occurrences of one kind, device and source that must not
	// collapse into one alert (e.g. publish vs subscribe denials).
	Key string
	// Occurrence, when set, names this occurrence (an agent event's ID):
	// raised again within the window (a redelivery) it is not counted
	// twice.
	Occurrence string
	// Time of the occurrence; zero means now.
	Time time.Time
}

// Store is what the service needs of the fleet store (store.Store has it).
type Store interface {
	AddAlert(ctx context.Context, a store.Alert) (inserted bool, err error)
}

// Publisher publishes alerts over MQTT (broker.Broker and the external
// broker's client have it).
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Stats are the service's counters since New.
type Stats struct {
	Raised      uint64 // occurrences passed to Raise
	Collapsed   uint64 // occurrences counted into an alert already sent
	StoreErrors uint64 // failed store writes
	Published   uint64 // alerts published over MQTT
	Delivered   uint64 // alerts the webhook accepted
	Failed      uint64 // alerts the webhook never accepted (retries exhausted or refused)
	Dropped     uint64 // alerts dropped from a full webhook queue
}

// Defaults.
const (
	DefaultWindow      = time.Minute
	DefaultQueue       = 1024
	DefaultAttempts    = 6
	DefaultBackoff     = time.Second
	DefaultMaxBackoff  = time.Minute
	DefaultHTTPTimeout = 10 * time.Second
	// maxBuckets bounds the identities tracked at once; beyond it the
	// oldest is flushed early.
	maxBuckets = 4096
	// maxOccurrences bounds the occurrence IDs remembered per alert.
	maxOccurrences = 256
	// maxResponse bounds what is read of a webhook's answer.
	maxResponse = 4 << 10
)

// Option configures a Service.
type Option func(*Service) error

// WithPublisher publishes every alert on Topic(tenant) at QoS 1.
func WithPublisher(p Publisher) Option {
	return func(s *Service) error { s.pub = p; return nil }
}

// WithWebhook POSTs every alert to rawURL (http or https), signed with
// secret when it is not empty.
func WithWebhook(rawURL string, secret []byte) Option {
	return func(s *Service) error {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("alert: webhook %q: want an http:// or https:// URL", rawURL)
		}
		s.webhook = u.String()
		s.secret = bytes.Clone(secret)
		return nil
	}
}

// WithWindow sets the collapsing window (DefaultWindow).
func WithWindow(d time.Duration) Option {
	return func(s *Service) error {
		if d <= 0 {
			return errors.New("alert: window must be positive")
		}
		s.window = d
		return nil
	}
}

// WithQueue bounds the webhook queue (DefaultQueue).
func WithQueue(n int) Option {
	return func(s *Service) error {
		if n <= 0 {
			return errors.New("alert: queue size must be positive")
		}
		s.queueSize = n
		return nil
	}
}

// WithRetry sets the webhook's delivery attempts per alert and the backoff
// between them: base, doubled each time up to max, with jitter.
func WithRetry(attempts int, base, max time.Duration) Option {
	return func(s *Service) error {
		if attempts < 1 || base <= 0 || max < base {
			return errors.New("alert: want attempts ≥ 1 and 0 < base ≤ max")
		}
		s.attempts, s.backoff, s.maxBackoff = attempts, base, max
		return nil
	}
}

// WithHTTPClient sets the webhook's client; its Timeout bounds each
// attempt. The default has DefaultHTTPTimeout.
func WithHTTPClient(c *http.Client) Option {
	return func(s *Service) error { s.client = c; return nil }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Service) error { s.log = l; return nil }
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option {
	return func(s *Service) error { s.now = now; return nil }
}

// Service raises alerts. It is safe for concurrent use. Raise works from
// New on; Run does the background work: webhook deliveries, and writing and
// sending collapsed counts.
type Service struct {
	st         Store
	pub        Publisher
	webhook    string
	secret     []byte
	window     time.Duration
	queueSize  int
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	client     *http.Client
	log        *slog.Logger
	now        func() time.Time

	queue chan store.Alert

	mu      sync.Mutex
	buckets map[string]*bucket // by ID

	raised, collapsed, storeErrors, published, delivered, failed, dropped atomic.Uint64
}

// bucket is one alert being collapsed.
type bucket struct {
	a      store.Alert // as first stored; Count and Last as last sent
	count  int         // occurrences so far
	stored int         // count last written to the store
	sent   int         // count last published / queued
	last   time.Time
	end    time.Time // end of the window
	occ    map[string]bool
	// pending is set until Raise has stored the first occurrence: flush
	// leaves the bucket alone until then, so that the first store write
	// is Raise's, which decides whether the alert is new.
	pending bool
}

// New returns a service that stores alerts in st.
func New(st Store, opts ...Option) (*Service, error) {
	if st == nil {
		return nil, errors.New("alert: nil store")
	}
	s := &Service{
		st: st, window: DefaultWindow, queueSize: DefaultQueue, attempts: DefaultAttempts,
		backoff: DefaultBackoff, maxBackoff: DefaultMaxBackoff,
		client: &http.Client{Timeout: DefaultHTTPTimeout},
		log:    slog.New(slog.DiscardHandler), now: time.Now,
		buckets: map[string]*bucket{},
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	s.log = s.log.With("component", "alert")
	if s.webhook != "" {
		s.queue = make(chan store.Alert, s.queueSize)
	}
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Service) Stats() Stats {
	return Stats{
		Raised: s.raised.Load(), Collapsed: s.collapsed.Load(), StoreErrors: s.storeErrors.Load(),
		Published: s.published.Load(), Delivered: s.delivered.Load(), Failed: s.failed.Load(), Dropped: s.dropped.Load(),
	}
}

// ID returns the ID of the alert that a's occurrence belongs to in a
// service with the given window.
func ID(a Alert, window time.Duration) string {
	h := sha256.New()
	for _, f := range []string{a.Tenant, a.Kind, a.Device, a.Source, a.Key} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	h.Write([]byte(strconv.FormatInt(a.Time.Truncate(window).UnixMicro(), 10)))
	return "al_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// Raise records one occurrence. The first of its alert's window is stored,
// published and queued for the webhook before Raise returns (the webhook
// delivery itself happens in Run); a repeat is only counted. It returns the
// store's error, if any; publishing errors are logged.
func (s *Service) Raise(ctx context.Context, in Alert) error {
	s.raised.Add(1)
	now := s.now()
	if in.Time.IsZero() {
		in.Time = now
	}
	in.Time = in.Time.UTC().Truncate(time.Microsecond)
	a := s.normalize(in)

	s.mu.Lock()
	b, ok := s.buckets[a.ID]
	if ok {
		if in.Occurrence != "" && b.occ[in.Occurrence] {
			s.mu.Unlock()
			return nil // a redelivery
		}
		b.remember(in.Occurrence)
		b.count++
		if in.Time.After(b.last) {
			b.last = in.Time
		}
		s.mu.Unlock()
		s.collapsed.Add(1)
		return nil
	}
	if len(s.buckets) >= maxBuckets {
		s.evictOldestLocked()
	}
	b = &bucket{a: a, count: 1, stored: 1, sent: 1, last: in.Time, end: in.Time.Truncate(s.window).Add(s.window), pending: true}
	b.remember(in.Occurrence)
	s.buckets[a.ID] = b
	s.mu.Unlock()

	// A restarted server, or another replica, may have stored this alert
	// already: then the store keeps the larger count and it is not sent
	// again.
	inserted, err := s.st.AddAlert(ctx, a)
	s.mu.Lock()
	b.pending = false
	if err != nil {
		b.stored = 0 // Run tries again
	}
	s.mu.Unlock()
	if err != nil {
		s.storeErrors.Add(1)
		s.log.Error("storing alert", "id", a.ID, "kind", a.Kind, "err", err)
		s.send(a) // operators still hear of it
		return fmt.Errorf("alert: %w", err)
	}
	if inserted {
		s.send(a)
	}
	return nil
}

func (b *bucket) remember(occ string) {
	if occ == "" {
		return
	}
	if b.occ == nil {
		b.occ = map[string]bool{}
	}
	if len(b.occ) < maxOccurrences {
		b.occ[occ] = true
	}
}

// normalize makes a store.Alert of an occurrence, its strings cut to what
// the store accepts.
func (s *Service) normalize(in Alert) store.Alert {
	a := store.Alert{
		Time: in.Time, Last: in.Time, Count: 1,
		Tenant: clean(in.Tenant, store.MaxAlertText), Device: clean(in.Device, store.MaxAlertText),
		Kind: clean(in.Kind, store.MaxAlertName), Severity: in.Severity, Source: clean(in.Source, store.MaxAlertName),
		Message: clean(in.Message, store.MaxAlertMessage),
	}
	if a.Severity != SeverityCritical {
		a.Severity = SeverityWarning
	}
	if len(in.Fields) > 0 {
		a.Fields = make(map[string]string, min(len(in.Fields), store.MaxAlertFields))
		for k, v := range in.Fields {
			if len(a.Fields) == store.MaxAlertFields {
				break
			}
			if k = clean(k, store.MaxAlertName); k != "" {
				a.Fields[k] = clean(v, store.MaxAlertValue)
			}
		}
	}
	in.Tenant, in.Device, in.Kind, in.Source = a.Tenant, a.Device, a.Kind, a.Source
	a.ID = ID(in, s.window)
	return a
}

// send publishes a and queues it for the webhook.
func (s *Service) send(a store.Alert) {
	if s.pub == nil && s.queue == nil {
		return
	}
	body, err := json.Marshal(a)
	if err != nil { // cannot happen: strings, times and ints
		s.log.Error("encoding alert", "id", a.ID, "err", err)
		return
	}
	if s.pub != nil {
		if err := s.pub.Publish(Topic(a.Tenant), body, false, 1); err != nil {
			s.log.Warn("publishing alert", "id", a.ID, "err", err)
		} else {
			s.published.Add(1)
		}
	}
	if s.queue != nil {
		s.enqueue(a)
	}
}

// enqueue adds a to the webhook queue, dropping the oldest queued alert
// when it is full. It never blocks.
func (s *Service) enqueue(a store.Alert) {
	for {
		select {
		case s.queue <- a:
			return
		default:
		}
		select {
		case old := <-s.queue:
			if n := s.dropped.Add(1); n == 1 || n%100 == 0 {
				s.log.Warn("webhook queue full: dropped the oldest alert", "id", old.ID, "kind", old.Kind, "dropped_total", n)
			}
		default:
		}
	}
}

// Run delivers queued alerts to the webhook and, every tick, writes and
// sends the counts of collapsed alerts, until ctx is done; then it writes
// the counts one last time and returns nil.
func (s *Service) Run(ctx context.Context) error {
	tick := max(min(s.window/4, time.Second), time.Millisecond)
	var wg sync.WaitGroup
	if s.queue != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.deliverLoop(ctx)
		}()
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.flush(fctx, true)
			cancel()
			if len(s.queue) > 0 {
				s.log.Warn("stopping with undelivered webhook alerts", "queued", len(s.queue))
			}
			return nil
		case <-t.C:
			s.flush(ctx, false)
		}
	}
}

// flush writes the counts that grew since they were stored and sends those
// of ended windows; all means every window counts as ended (without
// sending: the process is stopping).
func (s *Service) flush(ctx context.Context, all bool) {
	now := s.now()
	type job struct {
		a      store.Alert
		send   bool
		stored bool
	}
	var jobs []job
	s.mu.Lock()
	for id, b := range s.buckets {
		if b.pending {
			continue
		}
		ended := all || !now.Before(b.end)
		if b.count == b.stored && !ended {
			continue
		}
		a := b.a
		a.Count, a.Last = b.count, b.last
		j := job{a: a, stored: b.count > b.stored, send: ended && !all && b.count > b.sent}
		b.stored = b.count
		if j.send {
			b.sent = b.count
		}
		if ended {
			delete(s.buckets, id)
		}
		if j.stored || j.send {
			jobs = append(jobs, j)
		}
	}
	s.mu.Unlock()
	for _, j := range jobs {
		if j.stored {
			if _, err := s.st.AddAlert(ctx, j.a); err != nil {
				s.storeErrors.Add(1)
				s.log.Error("storing alert count", "id", j.a.ID, "count", j.a.Count, "err", err)
			}
		}
		if j.send {
			s.send(j.a)
		}
	}
}

// evictOldestLocked makes room by dropping the bucket whose window ends
// first; its count is written by a goroutine of its own.
func (s *Service) evictOldestLocked() {
	var (
		oldest string
		ob     *bucket
	)
	for id, b := range s.buckets {
		if ob == nil || b.end.Before(ob.end) {
			oldest, ob = id, b
		}
	}
	delete(s.buckets, oldest)
	if ob.count > ob.stored {
		a := ob.a
		a.Count, a.Last = ob.count, ob.last
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := s.st.AddAlert(ctx, a); err != nil {
				s.storeErrors.Add(1)
				s.log.Error("storing alert count", "id", a.ID, "err", err)
			}
		}()
	}
}

func (s *Service) deliverLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-s.queue:
			s.deliver(ctx, a)
		}
	}
}

// errPermanent marks a webhook answer not worth retrying.
var errPermanent = errors.New("refused")

// deliver POSTs a to the webhook, retrying with backoff.
func (s *Service) deliver(ctx context.Context, a store.Alert) {
	body, err := json.Marshal(a)
	if err != nil {
		return
	}
	delay := s.backoff
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, body)
		if err == nil {
			s.delivered.Add(1)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errPermanent) || attempt == s.attempts {
			s.failed.Add(1)
			s.log.Warn("webhook did not take the alert", "id", a.ID, "kind", a.Kind, "attempts", attempt, "err", err)
			return
		}
		s.log.Debug("webhook delivery failed; retrying", "id", a.ID, "attempt", attempt, "err", err)
		// Full jitter over [delay/2, delay].
		wait := delay/2 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, s.maxBackoff)
	}
}

func (s *Service) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.webhook, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dialtone-alerts")
	if len(s.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(s.secret, body))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	_ = resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
		return fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return fmt.Errorf("%w: webhook answered %s", errPermanent, resp.Status)
	}
}

// SignatureHeader carries a webhook body's signature.
const SignatureHeader = "X-Dialtone-Signature"

// Sign returns the SignatureHeader value for body: "sha256=" and the hex
// HMAC-SHA256 of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether sig, a SignatureHeader value, signs body under
// secret (constant time): what a webhook receiver checks.
func Verify(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(sig), []byte(Sign(secret, body)))
}
