package auth

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestLimiterPerAddress(t *testing.T) {
	l := NewLimiter(DefaultLimitPolicy)
	allowed := 0
	for i := range 100 {
		// Across accounts: the address's bucket is what limits.
		if _, ok := l.Allow("user"+string(rune('a'+i%26)), "192.0.2.1", t0); ok {
			allowed++
		}
	}
	if allowed != DefaultLimitPolicy.IPBurst {
		t.Fatalf("%d attempts allowed in a burst, want %d", allowed, DefaultLimitPolicy.IPBurst)
	}
	d, ok := l.Allow("alice", "192.0.2.1", t0)
	if ok || d <= 0 || d > 3*time.Second {
		t.Fatalf("after the burst: %v, %v; want a wait of about 3 s", d, ok)
	}
	if _, ok := l.Allow("alice", "192.0.2.1", t0.Add(d)); !ok {
		t.Fatal("not allowed after the wait")
	}
	if _, ok := l.Allow("alice", "198.51.100.1", t0); !ok {
		t.Fatal("another address is limited")
	}
}

func TestLimiterBackoff(t *testing.T) {
	p := DefaultLimitPolicy
	p.IPRate, p.IPBurst = 1000, 1000 // only the backoff
	l := NewLimiter(p)
	now := t0
	for i := range p.FreeFailures {
		if _, ok := l.Allow("alice", "192.0.2.1", now); !ok {
			t.Fatalf("failure %d is not free", i+1)
		}
		l.Failure("alice", "192.0.2.1", now)
	}
	want := p.BaseDelay
	for range 12 {
		d, ok := l.Allow("alice", "192.0.2.1", now)
		if ok || d != want {
			t.Fatalf("wait %v, %v; want %v", d, ok, want)
		}
		// The real user, elsewhere, is not held up.
		if _, ok := l.Allow("alice", "198.51.100.7", now); !ok {
			t.Fatal("the account is locked for another address")
		}
		now = now.Add(d)
		if _, ok := l.Allow("alice", "192.0.2.1", now); !ok {
			t.Fatal("not allowed after the wait")
		}
		l.Failure("alice", "192.0.2.1", now)
		want = min(want*2, p.MaxDelay)
	}
	if want != p.MaxDelay {
		t.Fatalf("backoff reached %v, want the cap %v", want, p.MaxDelay)
	}
	l.Success("alice", "192.0.2.1")
	if _, ok := l.Allow("alice", "192.0.2.1", now); !ok {
		t.Fatal("a success does not clear the backoff")
	}
	// An old failure count is forgotten.
	for range p.FreeFailures + 1 {
		l.Failure("bob", "192.0.2.1", now)
	}
	if _, ok := l.Allow("bob", "192.0.2.1", now.Add(p.Forget+p.MaxDelay)); !ok {
		t.Fatal("still waiting long after")
	}
}

func TestLimiterSecondFactor(t *testing.T) {
	l := NewLimiter(DefaultLimitPolicy)
	for range DefaultLimitPolicy.SecondFactorFreeFailures {
		if _, ok := l.AllowSecondFactor("Alice", t0); !ok {
			t.Fatal("free failure refused")
		}
		l.SecondFactorFailure("alice", t0)
	}
	if d, ok := l.AllowSecondFactor("ALICE", t0); ok || d != time.Second {
		t.Fatalf("after the free failures: %v, %v", d, ok)
	}
	if _, ok := l.AllowSecondFactor("bob", t0); !ok {
		t.Fatal("another account is limited")
	}
}

func TestLimiterBounded(t *testing.T) {
	p := DefaultLimitPolicy
	p.MaxEntries = 100
	l := NewLimiter(p)
	for i := range 1000 {
		ip := "10.0." + string(rune('0'+i/100%10)) + "." + string(rune('0'+i%10))
		l.Allow("a", ip+string(rune('0'+i/10%10)), t0)
		l.Failure(string(rune(i)), "192.0.2.1", t0)
	}
	if len(l.ips) > p.MaxEntries || len(l.pairs) > p.MaxEntries {
		t.Fatalf("tables grew to %d and %d entries, bound %d", len(l.ips), len(l.pairs), p.MaxEntries)
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5000":             "192.0.2.1",
		"192.0.2.1":                  "192.0.2.1",
		"[::ffff:192.0.2.1]:80":      "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:443":      "2001:db8:1:2::/64",
		"[fe80::1%eth0]:1":           "fe80::/64",
		"junk":                       "junk",
	} {
		if got := ClientKey(in); got != want {
			t.Errorf("ClientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLimiterEnrollment(t *testing.T) {
	l := NewLimiter(DefaultLimitPolicy)
	for i := range DefaultLimitPolicy.EnrollBurst {
		if _, ok := l.AllowEnrollment("u1", t0); !ok {
			t.Fatalf("enrollment %d refused", i+1)
		}
	}
	if d, ok := l.AllowEnrollment("u1", t0); ok || d != 10*time.Minute {
		t.Fatalf("after the burst: %v, %v", d, ok)
	}
	if _, ok := l.AllowEnrollment("u2", t0); !ok {
		t.Fatal("another user is limited")
	}
}
