package voip

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"
)

func TestReporterBatches(t *testing.T) {
	rec := newRecorder()
	r := newReporter(rec, 10*time.Second)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	steps := []struct {
		advance time.Duration
		notes   int
		flush   bool
		want    []uint64 // counts of the events reported by this step
	}{
		{0, 1, false, []uint64{1}},                // the first occurrence is reported at once
		{time.Second, 500, false, nil},            // a burst inside the interval is held back
		{5 * time.Second, 0, true, nil},           // flushing before the interval is up sends nothing
		{5 * time.Second, 0, true, []uint64{500}}, // after it, the batch goes out with its count
		{time.Second, 3, false, nil},
		{20 * time.Second, 1, false, []uint64{4}},
	}
	seen := 0
	for i, s := range steps {
		now = now.Add(s.advance)
		for range s.notes {
			r.note(SecurityUnsolicited, "udp:192.0.2.1:5060")
		}
		if s.flush {
			r.flush()
		}
		rec.mu.Lock()
		got := rec.security[seen:]
		seen = len(rec.security)
		rec.mu.Unlock()
		if len(got) != len(s.want) {
			t.Fatalf("step %d: %d events %+v; want counts %v", i, len(got), got, s.want)
		}
		for j, e := range got {
			if e.Count != s.want[j] || e.Kind != SecurityUnsolicited || e.Last != "udp:192.0.2.1:5060" {
				t.Errorf("step %d: event %+v; want count %d", i, e, s.want[j])
			}
		}
	}
}

func TestInboundLimiterPerCaller(t *testing.T) {
	l := newInboundLimiter(RateLimit{PerSecond: 1, Burst: 3})
	now := time.Unix(1000, 0)
	allowed := func(caller string, n int) int {
		ok := 0
		for range n {
			if l.allow(caller, now) {
				ok++
			}
		}
		return ok
	}
	if got := allowed("flood@evil", 100); got != 3 {
		t.Errorf("flooding caller got %d through; want its burst of 3", got)
	}
	if got := allowed("alice@example.com", 1); got != 1 {
		t.Error("another caller was starved by the flood")
	}
	now = now.Add(2 * time.Second)
	if got := allowed("flood@evil", 100); got != 2 {
		t.Errorf("after 2s the flooding caller got %d; want 2", got)
	}
	// Forged, varying callers meet the global ceiling (4× rate, 4× burst).
	now = now.Add(time.Hour)
	through := 0
	for i := range 1000 {
		if l.allow("forged-"+strconv.Itoa(i), now) {
			through++
		}
	}
	if through != 12 {
		t.Errorf("%d forged callers got through; want the global burst of 12", through)
	}
	if len(l.callers) > maxCallers {
		t.Errorf("%d caller buckets kept; bound %d", len(l.callers), maxCallers)
	}
}

// TestMalformedCounted feeds the phone's sipgo log handler the record
// sipgo's transport writes when its parser refuses a message.
func TestMalformedCounted(t *testing.T) {
	rec := newRecorder()
	p, err := New(Config{
		Profile:  Profile{Proxy: "127.0.0.1:5060", Transport: TransportUDP, AllowInsecureTransport: true, Domain: "example.com", User: "alice"},
		Password: "pw", Events: rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &sipLogHandler{next: slog.DiscardHandler, phone: p}
	log := slog.New(h).With("caller", "Transport<UDP>")
	log.Error("failed to parse", "data", "INVITE garbage\r\n\r\n", "error", "parse start line failed")
	log.Error("something else", "error", "x")
	if got := p.Counters().Malformed; got != 1 {
		t.Errorf("malformed = %d; want 1", got)
	}
	if n := rec.securityCount(SecurityMalformed); n != 1 {
		t.Errorf("%d malformed security events; want 1", n)
	}
	if !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("the handler must see parse errors whatever the level")
	}
	_ = p.ua.Close()
}
