package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/alert"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/store"
)

const waitFor = 10 * time.Second

func openStore(t *testing.T) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// receiver is a webhook endpoint that checks signatures and records what
// it accepted.
type receiver struct {
	secret []byte
	srv    *httptest.Server

	mu       sync.Mutex
	got      []store.Alert
	attempts int
	badSig   int
	// answer, when set, picks the status of the nth attempt (from 1).
	answer func(n int) int
	// block, when set, holds every request until it is closed.
	block chan struct{}
}

func newReceiver(t *testing.T, secret string) *receiver {
	t.Helper()
	r := &receiver{secret: []byte(secret)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	if r.block != nil {
		select {
		case <-r.block:
		case <-req.Context().Done():
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if len(r.secret) > 0 && !alert.Verify(r.secret, body, req.Header.Get(alert.SignatureHeader)) {
		r.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.answer != nil {
		if code := r.answer(r.attempts); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	var a store.Alert
	if err := json.Unmarshal(body, &a); err != nil || req.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.got = append(r.got, a)
}

func (r *receiver) alerts() []store.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.Alert(nil), r.got...)
}

func (r *receiver) waitFor(t *testing.T, what string, ok func([]store.Alert) bool) []store.Alert {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := r.alerts()
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook: timed out waiting for %s; got %+v", what, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clock is a settable clock.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}
func (c *clock) set(t time.Time)         { c.t.Store(&t) }
func (c *clock) now() time.Time          { return *c.t.Load() }
func (c *clock) advance(d time.Duration) { c.set(c.now().Add(d)) }
func (c *clock) option() alert.Option    { return alert.WithClock(c.now) }
func fastRetry(attempts int) alert.Option {
	return alert.WithRetry(attempts, 5*time.Millisecond, 20*time.Millisecond)
}
func logger(t *testing.T) alert.Option { return alert.WithLogger(testutil.Logger(t)) }
func countIs(n int) func([]store.Alert) bool {
	return func(as []store.Alert) bool { return len(as) >= n }
}

func newService(t *testing.T, st alert.Store, opts ...alert.Option) *alert.Service {
	t.Helper()
	s, err := alert.New(st, append([]alert.Option{logger(t)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// TestRaise: an alert is stored, published on the tenant's _alerts topic
// of a real broker, and POSTed, signed, to the webhook.
func TestRaise(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "hook-secret")
	br, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Dev: true, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := br.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br.Close() })
	published := &testutil.Collector{}
	if err := br.Subscribe(wire.TopicRoot+"/+/"+alert.TopicSuffix, func(topic string, payload []byte) {
		published.Add(testutil.Message{Topic: topic, Payload: payload})
	}); err != nil {
		t.Fatal(err)
	}
	s := newService(t, st, alert.WithPublisher(br), alert.WithWebhook(rcv.srv.URL+"/hook", []byte("hook-secret")))

	d := broker.Denial{Time: time.Now(), Client: "phoneA", Kind: broker.DeniedPublish, Topic: wire.Topic("acme", "phoneB", wire.KindEvents)}
	if err := s.Raise(t.Context(), alert.FromDenial(alert.SourceEmbeddedBroker, d)); err != nil {
		t.Fatal(err)
	}
	// A subscription to # names no tenant: it goes to dialtone/v1/_/_alerts.
	sub := broker.Denial{Time: time.Now(), Client: "phoneA", Kind: broker.DeniedSubscribe, Topic: "#"}
	if err := s.Raise(t.Context(), alert.FromDenial(alert.SourceEmbeddedBroker, sub)); err != nil {
		t.Fatal(err)
	}

	stored, err := st.ListAlerts(t.Context(), store.AlertFilter{Device: "phoneA"})
	if err != nil || len(stored) != 2 {
		t.Fatalf("stored = %+v, %v; want 2 alerts", stored, err)
	}
	for _, a := range stored {
		if a.Kind != alert.KindACLDenied || a.Severity != alert.SeverityCritical || a.Source != alert.SourceEmbeddedBroker || a.Count != 1 {
			t.Errorf("stored alert %+v", a)
		}
	}
	msgs := published.WaitFor(t, waitFor, "two published alerts", func(ms []testutil.Message) bool { return len(ms) >= 2 })
	topics := map[string]bool{}
	for _, m := range msgs {
		topics[m.Topic] = true
		var a store.Alert
		if err := json.Unmarshal(m.Payload, &a); err != nil || a.Kind != alert.KindACLDenied {
			t.Errorf("published %s: %s (%v)", m.Topic, m.Payload, err)
		}
	}
	// phoneA named no tenant of its own: its publish to acme/phoneB does
	// not make it acme's (it could lie), so both go to the unknown tenant.
	if !topics[alert.Topic("")] || alert.Topic("") != "dialtone/v1/_/_alerts" || alert.Topic("acme") != "dialtone/v1/acme/_alerts" {
		t.Errorf("published on %v", topics)
	}
	got := rcv.waitFor(t, "two webhook alerts", countIs(2))
	if got[0].ID == got[1].ID || rcv.badSig != 0 {
		t.Errorf("webhook got %+v (bad signatures %d)", got, rcv.badSig)
	}
	// Topics derived from tenant IDs never match a device's topics.
	if _, _, _, err := wire.ParseTopic(alert.Topic("acme")); err == nil {
		t.Error("the alerts topic parses as a device topic")
	}
}

func TestWebhookSignatureRequired(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "the-right-one")
	s := newService(t, st, alert.WithWebhook(rcv.srv.URL, []byte("a-wrong-one")), fastRetry(3))
	if err := s.Raise(t.Context(), alert.FromAuthFailures(alert.SourceEmbeddedBroker, "phone1", "10.0.0.1:4000", 5)); err != nil {
		t.Fatal(err)
	}
	waitStats(t, s, "a refused delivery", func(x alert.Stats) bool { return x.Failed == 1 })
	if len(rcv.alerts()) != 0 || rcv.badSig != 1 {
		t.Errorf("receiver accepted %d, bad signatures %d; want 0 and 1 (a 401 is not retried)", len(rcv.alerts()), rcv.badSig)
	}
}

func waitStats(t *testing.T, s *alert.Service, what string, ok func(alert.Stats) bool) alert.Stats {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		x := s.Stats()
		if ok(x) {
			return x
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v", what, x)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWebhookRetries: 500s and 429s are retried with backoff until the
// webhook takes the alert; attempts are bounded.
func TestWebhookRetries(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "")
	rcv.answer = func(n int) int {
		switch n {
		case 1, 2:
			return http.StatusInternalServerError
		case 3:
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	}
	s := newService(t, st, alert.WithWebhook(rcv.srv.URL, nil), fastRetry(5))
	if err := s.Raise(t.Context(), alert.FromAuthFailures(alert.SourceEmbeddedBroker, "phone1", "10.0.0.1:4000", 5)); err != nil {
		t.Fatal(err)
	}
	rcv.waitFor(t, "the alert after three failures", countIs(1))
	rcv.mu.Lock()
	attempts := rcv.attempts
	rcv.mu.Unlock()
	if attempts != 4 {
		t.Errorf("attempts = %d, want 4", attempts)
	}
	waitStats(t, s, "delivered", func(x alert.Stats) bool { return x.Delivered == 1 && x.Failed == 0 })

	// Always 503: given up after the attempts allowed.
	rcv2 := newReceiver(t, "")
	rcv2.answer = func(int) int { return http.StatusServiceUnavailable }
	s2 := newService(t, openStore(t), alert.WithWebhook(rcv2.srv.URL, nil), fastRetry(3))
	if err := s2.Raise(t.Context(), alert.FromAuthFailures(alert.SourceEmbeddedBroker, "phone1", "10.0.0.1:4000", 5)); err != nil {
		t.Fatal(err)
	}
	waitStats(t, s2, "given up", func(x alert.Stats) bool { return x.Failed == 1 })
	rcv2.mu.Lock()
	defer rcv2.mu.Unlock()
	if rcv2.attempts != 3 {
		t.Errorf("attempts = %d, want 3", rcv2.attempts)
	}
}

// TestFloodCollapses: a thousand identical occurrences within a window are
// one stored alert whose count reaches 1000, and two webhook notifications
// (the first occurrence, then the final count when the window ends); a
// different key is a different alert; a redelivered occurrence counts once.
func TestFloodCollapses(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "")
	clk := newClock(time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC))
	s := newService(t, st, alert.WithWebhook(rcv.srv.URL, nil), clk.option(), alert.WithWindow(time.Minute))
	spoof := broker.Denial{Client: "phoneA", Kind: broker.DeniedPublish, Topic: wire.Topic("acme", "phoneB", wire.KindEvents)}
	for i := range 1000 {
		d := spoof
		d.Topic = wire.Topic("acme", fmt.Sprintf("phone%d", i), wire.KindEvents) // topics vary; the alert does not
		if err := s.Raise(t.Context(), alert.FromDenial(alert.SourceEmbeddedBroker, d)); err != nil {
			t.Fatal(err)
		}
	}
	sub := spoof
	sub.Kind, sub.Topic = broker.DeniedSubscribe, "#"
	if err := s.Raise(t.Context(), alert.FromDenial(alert.SourceEmbeddedBroker, sub)); err != nil {
		t.Fatal(err)
	}
	ev := wire.Event{Schema: 1, ID: "ev-1", Device: "phoneA", Type: wire.EventSecurity, Message: "SIP scanning", Fields: map[string]string{"kind": "sip-scan"}}
	for range 3 { // QoS 1 redeliveries of one event
		a, ok := alert.FromEvent("acme", ev)
		if !ok {
			t.Fatal("security event raised no alert")
		}
		if err := s.Raise(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}

	list := func() map[string]store.Alert {
		t.Helper()
		as, err := st.ListAlerts(t.Context(), store.AlertFilter{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]store.Alert{}
		for _, a := range as {
			out[a.Kind+"/"+a.Fields["action"]] = a
		}
		return out
	}
	if as := list(); len(as) != 3 {
		t.Fatalf("stored %d alerts, want 3: %+v", len(as), as)
	}
	// Within the window Run writes the running count (every tick ≤ 1s).
	deadline := time.Now().Add(waitFor)
	for list()[alert.KindACLDenied+"/publish"].Count != 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("count never reached 1000: %+v", list())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(rcv.waitFor(t, "three first occurrences", countIs(3))); n != 3 {
		t.Fatalf("webhook got %d alerts before the window ended, want 3", n)
	}

	// The window ends: the grown count is sent once more; the others are
	// not sent again.
	clk.advance(time.Minute)
	rcv.waitFor(t, "the final count", countIs(4))
	time.Sleep(1500 * time.Millisecond) // a tick or more: nothing else comes
	got := rcv.alerts()
	if len(got) != 4 || got[3].Count != 1000 || got[3].ID != got[0].ID && got[3].ID != got[1].ID && got[3].ID != got[2].ID {
		t.Fatalf("webhook got %+v, want the publish alert again with count 1000", got)
	}
	final := list()
	if a := final[alert.KindACLDenied+"/publish"]; a.Count != 1000 || a.Last.Before(a.Time) {
		t.Errorf("publish alert = %+v", a)
	}
	if a := final[alert.KindACLDenied+"/subscribe"]; a.Count != 1 {
		t.Errorf("subscribe alert = %+v", a)
	}
	if a := final[alert.KindAgentSecurity+"/"]; a.Count != 1 || a.Device != "phoneA" || a.Tenant != "acme" || a.Fields["kind"] != "sip-scan" {
		t.Errorf("agent alert = %+v (redeliveries must count once)", a)
	}

	// The next window is a new alert.
	if err := s.Raise(t.Context(), alert.FromDenial(alert.SourceEmbeddedBroker, spoof)); err != nil {
		t.Fatal(err)
	}
	if as, _ := st.ListAlerts(t.Context(), store.AlertFilter{Kind: alert.KindACLDenied}); len(as) != 3 || as[0].Count != 1 {
		t.Errorf("after the window: %+v", as)
	}
	if x := s.Stats(); x.Raised != 1000+1+3+1 || x.Collapsed != 999 {
		t.Errorf("stats = %+v", x)
	}
}

// TestRestartSameWindow: a second service (a restarted server, another
// replica) raising the same alert in the same window adds no row and does
// not notify again.
func TestRestartSameWindow(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "")
	clk := newClock(time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC))
	a := alert.FromIngestError(wire.Topic("acme", "phone1", wire.KindEvents), fmt.Errorf("event: %w: bad JSON", wire.ErrInvalid))
	for i := range 2 {
		s := newService(t, st, alert.WithWebhook(rcv.srv.URL, nil), clk.option())
		if err := s.Raise(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		waitStats(t, s, "nothing queued", func(x alert.Stats) bool { return x.Delivered == uint64(1-i) })
	}
	if as, _ := st.ListAlerts(t.Context(), store.AlertFilter{}); len(as) != 1 {
		t.Errorf("stored %+v", as)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(rcv.alerts()); n != 1 {
		t.Errorf("webhook got %d, want 1", n)
	}
}

// TestQueueFullNeverBlocks: with the webhook hanging, Raise still returns
// at once; the queue keeps the newest alerts and counts the dropped ones.
func TestQueueFullNeverBlocks(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "")
	rcv.block = make(chan struct{})
	s := newService(t, st, alert.WithWebhook(rcv.srv.URL, nil), alert.WithQueue(8), fastRetry(1),
		alert.WithHTTPClient(&http.Client{Timeout: time.Minute}))
	const n = 200
	start := time.Now()
	var last string
	for i := range n {
		a := alert.FromAuthFailures(alert.SourceEmbeddedBroker, "phone1", fmt.Sprintf("10.0.%d.%d:4000", i/250, i%250), 5)
		last = a.Fields["remote"]
		if err := s.Raise(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d raises with a hung webhook took %s", n, d)
	}
	x := s.Stats()
	// One is in the worker's hands, 8 queued; the rest dropped.
	if x.Dropped < n-8-1 || x.Dropped > n-8 {
		t.Errorf("dropped = %d, want %d or %d", x.Dropped, n-9, n-8)
	}
	if as, _ := st.ListAlerts(t.Context(), store.AlertFilter{}); len(as) != n {
		t.Errorf("stored %d alerts, want all %d", len(as), n)
	}
	close(rcv.block)
	got := rcv.waitFor(t, "the queued alerts", func(as []store.Alert) bool {
		for _, a := range as {
			if a.Fields["remote"] == last {
				return true
			}
		}
		return false
	})
	if len(got) > 9 {
		t.Errorf("webhook got %d alerts, want at most 9", len(got))
	}
}

func TestNewOptions(t *testing.T) {
	st := openStore(t)
	for _, opt := range []alert.Option{
		alert.WithWebhook("ftp://example.com/x", nil),
		alert.WithWebhook("/relative", nil),
		alert.WithWindow(0),
		alert.WithQueue(0),
		alert.WithRetry(0, time.Second, time.Second),
		alert.WithRetry(1, time.Second, time.Millisecond),
	} {
		if _, err := alert.New(st, opt); err == nil {
			t.Errorf("option accepted")
		}
	}
	if _, err := alert.New(nil); err == nil {
		t.Error("nil store accepted")
	}
}

// TestRaiseStoreError: a failing store is reported, and the alert still
// goes out.
func TestRaiseStoreError(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "")
	s := newService(t, st, alert.WithWebhook(rcv.srv.URL, nil))
	_ = st.Close()
	if err := s.Raise(t.Context(), alert.FromAuthFailures(alert.SourceEmbeddedBroker, "phone1", "10.0.0.1:1", 5)); err == nil {
		t.Error("Raise on a closed store succeeded")
	}
	rcv.waitFor(t, "the alert", countIs(1))
	if x := s.Stats(); x.StoreErrors != 1 {
		t.Errorf("stats %+v", x)
	}
}

// TestConcurrentRaise: occurrences raised at once from many goroutines (a
// flood over many connections) are one alert, sent once, counted exactly.
func TestConcurrentRaise(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, "")
	s := newService(t, st, alert.WithWebhook(rcv.srv.URL, nil), alert.WithWindow(time.Hour))
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				a := alert.FromIngestError(wire.Topic("acme", "phone1", wire.KindState), fmt.Errorf("%w: g%d", wire.ErrInvalid, g))
				if err := s.Raise(t.Context(), a); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(waitFor)
	for {
		as, err := st.ListAlerts(t.Context(), store.AlertFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(as) != 1 {
			t.Fatalf("stored %d alerts, want 1", len(as))
		}
		if as[0].Count == goroutines*each {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("count = %d, want %d", as[0].Count, goroutines*each)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rcv.waitFor(t, "the first occurrence", countIs(1))
	time.Sleep(1200 * time.Millisecond)
	if n := len(rcv.alerts()); n != 1 {
		t.Errorf("webhook got %d alerts within the window, want 1", n)
	}
}
