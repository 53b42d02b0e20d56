package auth

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// LimitPolicy is the login abuse policy; the package documentation
// describes DefaultLimitPolicy in words.
type LimitPolicy struct {
	// IPRate and IPBurst are a token bucket per client address (an IPv4
	// address, or an IPv6 /64): every login attempt from it takes a token.
	IPRate  rate.Limit
	IPBurst int
	// FreeFailures consecutive failed logins of one account from one
	// address are free; each further one doubles a wait starting at
	// BaseDelay, up to MaxDelay, for that account from that address only.
	FreeFailures        int
	BaseDelay, MaxDelay time.Duration
	// SecondFactorFreeFailures consecutive wrong TOTP or recovery codes
	// after a correct password are free for an account, from any address;
	// then the same doubling wait applies to the account's second-factor
	// attempts from every address (whoever gets there knows the password).
	SecondFactorFreeFailures int
	// EnrollRate and EnrollBurst are a token bucket per user for TOTP
	// enrollments (each replaces the user's factor and recovery codes).
	EnrollRate  rate.Limit
	EnrollBurst int
	// Forget is how long after its last failure a failure count is
	// forgotten.
	Forget time.Duration
	// MaxEntries bounds each table the limiter keeps.
	MaxEntries int
}

// DefaultLimitPolicy: 20 attempts a minute per address with bursts of 10;
// per account and address, 5 free failures, then 1 s, 2 s, 4 s … up to 15
// minutes; per account, 5 free second-factor failures, then the same; a
// failure count is forgotten an hour after its last failure; per user, 5
// TOTP enrollments, then one every 10 minutes.
var DefaultLimitPolicy = LimitPolicy{
	IPRate: rate.Limit(20.0 / 60), IPBurst: 10,
	FreeFailures: 5, BaseDelay: time.Second, MaxDelay: 15 * time.Minute,
	SecondFactorFreeFailures: 5,
	EnrollRate:               rate.Every(10 * time.Minute), EnrollBurst: 5,
	Forget:     time.Hour,
	MaxEntries: 100_000,
}

// Limiter keeps the login attempt counts of LimitPolicy in memory. Each
// replica of a server keeps its own (an attacker spreading over N replicas
// gets N times the budget), and a restart forgets them.
type Limiter struct {
	p        LimitPolicy
	mu       sync.Mutex
	ips      map[string]*ipEntry
	pairs    map[string]*failEntry // account + "\x00" + address
	accounts map[string]*failEntry // second factor, per account
	enrolls  map[string]*ipEntry   // TOTP enrollments, per user ID
}

type ipEntry struct {
	lim  *rate.Limiter
	last time.Time
}

type failEntry struct {
	fails int
	until time.Time // no attempt before
	last  time.Time // last failure
}

// NewLimiter returns a limiter applying p.
func NewLimiter(p LimitPolicy) *Limiter {
	if p.MaxEntries <= 0 {
		p.MaxEntries = DefaultLimitPolicy.MaxEntries
	}
	if p.Forget <= 0 {
		p.Forget = DefaultLimitPolicy.Forget
	}
	if p.EnrollBurst <= 0 {
		p.EnrollRate, p.EnrollBurst = DefaultLimitPolicy.EnrollRate, DefaultLimitPolicy.EnrollBurst
	}
	return &Limiter{p: p, ips: map[string]*ipEntry{}, pairs: map[string]*failEntry{}, accounts: map[string]*failEntry{},
		enrolls: map[string]*ipEntry{}}
}

// ClientKey is the address a limit applies to: the IP of a host:port or a
// bare IP, IPv4-mapped addresses unmapped, IPv6 reduced to its /64 (one
// subscriber usually holds a whole /64).
func ClientKey(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return remote
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func accountKey(name string) string { return strings.ToLower(name) }

func pairKey(account, ip string) string { return accountKey(account) + "\x00" + ip }

// Allow reports whether a login attempt for account from ip may go ahead
// now, taking a token from ip's bucket if so; if not, how long to wait.
// A refused attempt costs nothing else.
func (l *Limiter) Allow(account, ip string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.pairs[pairKey(account, ip)]; e != nil && now.Before(e.until) {
		return e.until.Sub(now), false
	}
	e := l.ips[ip]
	if e == nil {
		l.sweep(now)
		e = &ipEntry{lim: rate.NewLimiter(l.p.IPRate, l.p.IPBurst)}
		l.ips[ip] = e
	}
	return l.take(e, now)
}

// take takes a token from e's bucket now if there is one; if not, it says
// how long until there is, taking nothing.
func (l *Limiter) take(e *ipEntry, now time.Time) (time.Duration, bool) {
	e.last = now
	r := e.lim.ReserveN(now, 1)
	if !r.OK() {
		return l.p.MaxDelay, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// AllowEnrollment reports whether user id may be enrolled in TOTP now,
// taking a token if so; if not, how long to wait.
func (l *Limiter) AllowEnrollment(id string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.enrolls[id]
	if e == nil {
		if len(l.enrolls) >= l.p.MaxEntries {
			trim(l.enrolls, l.p.MaxEntries)
		}
		e = &ipEntry{lim: rate.NewLimiter(l.p.EnrollRate, l.p.EnrollBurst)}
		l.enrolls[id] = e
	}
	return l.take(e, now)
}

// AllowSecondFactor reports whether a second-factor attempt for account
// may go ahead now; if not, how long to wait.
func (l *Limiter) AllowSecondFactor(account string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.accounts[accountKey(account)]; e != nil && now.Before(e.until) {
		return e.until.Sub(now), false
	}
	return 0, true
}

// Failure records a failed login of account from ip.
func (l *Limiter) Failure(account, ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail(l.pairs, pairKey(account, ip), l.p.FreeFailures, now)
}

// SecondFactorFailure records a wrong TOTP or recovery code for account
// (after a correct password).
func (l *Limiter) SecondFactorFailure(account string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail(l.accounts, accountKey(account), l.p.SecondFactorFreeFailures, now)
}

// Success forgets the failures of account from ip, and its second-factor
// failures.
func (l *Limiter) Success(account, ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pairs, pairKey(account, ip))
	delete(l.accounts, accountKey(account))
}

func (l *Limiter) fail(m map[string]*failEntry, key string, free int, now time.Time) {
	e := m[key]
	if e == nil || now.Sub(e.last) > l.p.Forget {
		if e == nil {
			l.sweep(now)
		}
		e = &failEntry{}
		m[key] = e
	}
	e.fails++
	e.last = now
	// After the free failures, the next attempt waits BaseDelay, then
	// twice as long after each further failure.
	if over := e.fails - free; over >= 0 {
		d := l.p.MaxDelay
		if over < 30 {
			d = min(l.p.BaseDelay<<over, l.p.MaxDelay)
		}
		e.until = now.Add(d)
	}
}

// sweep keeps the tables within MaxEntries: it drops what no longer
// limits anything, then, if a flood of addresses still fills a table,
// arbitrary entries.
func (l *Limiter) sweep(now time.Time) {
	if len(l.ips) >= l.p.MaxEntries {
		full := time.Duration(float64(l.p.IPBurst) / float64(l.p.IPRate) * float64(time.Second))
		for k, e := range l.ips {
			if now.Sub(e.last) > full {
				delete(l.ips, k)
			}
		}
		trim(l.ips, l.p.MaxEntries)
	}
	for _, m := range []map[string]*failEntry{l.pairs, l.accounts} {
		if len(m) >= l.p.MaxEntries {
			for k, e := range m {
				if now.After(e.until) && now.Sub(e.last) > l.p.Forget {
					delete(m, k)
				}
			}
			trim(m, l.p.MaxEntries)
		}
	}
}

func trim[V any](m map[string]V, maxEntries int) {
	for k := range m {
		if len(m) < maxEntries*9/10 {
			return
		}
		delete(m, k)
	}
}
