package voip

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"golang.org/x/time/rate"
)

var errUnsolicitedStream = errors.New("stream from an address other than the proxy")

// counters are updated from sipgo's transport goroutines.
type counters struct {
	accepted, unsolicited, malformed, rateLimited atomic.Uint64
}

// reporter batches security events: at most one report per kind per
// interval, carrying the count since the previous one, so a scanner
// sending thousands of packets costs a handful of events.
type reporter struct {
	mu       sync.Mutex
	events   Events
	interval time.Duration
	now      func() time.Time
	kinds    map[string]*pending
}

type pending struct {
	count uint64
	last  string
	sent  time.Time
}

func newReporter(ev Events, interval time.Duration) *reporter {
	return &reporter{events: ev, interval: interval, now: time.Now, kinds: map[string]*pending{}}
}

// note records one occurrence and reports the batch when the kind's
// interval has passed since its last report.
func (r *reporter) note(kind, detail string) {
	r.mu.Lock()
	p := r.kinds[kind]
	if p == nil {
		p = &pending{}
		r.kinds[kind] = p
	}
	p.count++
	p.last = detail
	now := r.now()
	var ev *SecurityEvent
	if p.sent.IsZero() || now.Sub(p.sent) >= r.interval {
		ev = &SecurityEvent{Kind: kind, Count: p.count, Last: p.last, Time: now}
		p.count, p.sent = 0, now
	}
	r.mu.Unlock()
	if ev != nil {
		r.events.Security(*ev)
	}
}

// flush reports what accumulated since the last report of each kind.
func (r *reporter) flush() {
	r.mu.Lock()
	now := r.now()
	var evs []SecurityEvent
	for kind, p := range r.kinds {
		if p.count > 0 && now.Sub(p.sent) >= r.interval {
			evs = append(evs, SecurityEvent{Kind: kind, Count: p.count, Last: p.last, Time: now})
			p.count, p.sent = 0, now
		}
	}
	r.mu.Unlock()
	for _, ev := range evs {
		r.events.Security(ev)
	}
}

// proxySet is the addresses the proxy's name resolved to, with its port.
type proxySet struct {
	addrs []netip.AddrPort
}

func (s *proxySet) has(a netip.AddrPort) bool {
	if s == nil {
		return false
	}
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	for _, p := range s.addrs {
		if p == a {
			return true
		}
	}
	return false
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// readFilter runs on every read of every SIP socket before parsing: bytes
// from anyone but the proxy are dropped without a reply. Over TLS and TCP
// the phone never listens, so the only connections are the ones it dialled
// to the proxy; the check still holds if that ever changes.
func (p *Phone) readFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	src, ok := addrPortOf(props.RemoteAddr)
	if !ok || !p.proxies.Load().has(src) || !strings.EqualFold(props.Transport, p.profile.Transport) {
		p.count.unsolicited.Add(1)
		p.security.note(SecurityUnsolicited, props.Transport+":"+props.RemoteAddr.String())
		if props.Transport != "UDP" {
			// A stream from elsewhere has no business existing: end it.
			return nil, errUnsolicitedStream
		}
		return nil, nil
	}
	return data, nil
}

// fromProxy checks a parsed request again: its source must be the proxy
// and it must have come over the profile's transport.
func (p *Phone) fromProxy(req *sip.Request) bool {
	src, err := netip.ParseAddrPort(req.Source())
	return err == nil && p.proxies.Load().has(src) && strings.EqualFold(req.Transport(), p.profile.Transport)
}

// sipLogHandler passes sipgo's transport log to the phone's logger,
// counting the parser's refusals as malformed traffic. sipgo logs the raw
// data of a message it cannot parse at error level; that is the
// attacker's text, so it is dropped and the record demoted to debug.
type sipLogHandler struct {
	next  slog.Handler
	phone *Phone
}

func (h *sipLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Parse failures must be seen whatever the level.
	return l >= slog.LevelError || h.next.Enabled(ctx, l)
}

func (h *sipLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "failed to parse" {
		h.phone.count.malformed.Add(1)
		var detail string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				detail = a.Value.String()
			}
			return true
		})
		h.phone.security.note(SecurityMalformed, truncate(detail, 200))
		nr := slog.NewRecord(r.Time, slog.LevelDebug, "malformed SIP message dropped", r.PC)
		nr.AddAttrs(slog.String("error", detail))
		if !h.next.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		return h.next.Handle(ctx, nr)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *sipLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sipLogHandler{next: h.next.WithAttrs(as), phone: h.phone}
}

func (h *sipLogHandler) WithGroup(name string) slog.Handler {
	return &sipLogHandler{next: h.next.WithGroup(name), phone: h.phone}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// maxCallers bounds the per-caller buckets the inbound limiter keeps.
const maxCallers = 1024

// inboundLimiter limits requests that start something new. Each caller
// (From address) has its own bucket at the profile's rate, so one
// flooding caller cannot starve the others; a global bucket at four times
// that rate caps what callers with forged, varying From addresses get
// through together.
type inboundLimiter struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	callers map[string]*rate.Limiter
	global  *rate.Limiter
}

func newInboundLimiter(r RateLimit) *inboundLimiter {
	return &inboundLimiter{
		rate: rate.Limit(r.PerSecond), burst: r.Burst, callers: map[string]*rate.Limiter{},
		global: rate.NewLimiter(rate.Limit(4*r.PerSecond), 4*r.Burst),
	}
}

func (l *inboundLimiter) allow(caller string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.callers[caller]
	if lim == nil {
		if len(l.callers) >= maxCallers {
			// Forget callers whose bucket has refilled: they lose nothing.
			for k, v := range l.callers {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.callers, k)
				}
			}
		}
		if len(l.callers) >= maxCallers {
			return false
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.callers[caller] = lim
	}
	if !lim.AllowN(now, 1) {
		return false
	}
	return l.global.AllowN(now, 1)
}
