package auth

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// testParams are cheap, so that tests (under -race too) hash quickly; the
// defaults are measured by make bench.
var testParams = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func newTestHasher(t *testing.T, p Params) *Hasher {
	t.Helper()
	h, err := NewHasher(p, 2, 8)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashVerify(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, testParams)
	const pw = "correct horse battery staple"
	enc, err := h.Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`).MatchString(enc) {
		t.Fatalf("hash %q is not a PHC argon2id string with the parameters", enc)
	}
	enc2, _ := h.Hash(ctx, pw)
	if enc == enc2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{{pw, true}, {pw + " ", false}, {"", false}, {strings.Repeat("x", MaxPasswordLen+1), false}} {
		ok, err := h.Verify(ctx, enc, tc.pw)
		if err != nil || ok != tc.want {
			t.Errorf("Verify(%.20q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
	if n := h.Computations(); n != 2+3 {
		t.Errorf("Computations = %d, want 5 (the over-long password costs none)", n)
	}
}

// TestStoredParams: a hash verifies with the parameters stored in it, so
// that raising the defaults keeps old hashes working, and NeedsRehash
// flags them.
func TestStoredParams(t *testing.T) {
	ctx := context.Background()
	old := newTestHasher(t, testParams)
	enc, err := old.Hash(ctx, "an old password here")
	if err != nil {
		t.Fatal(err)
	}
	raised := testParams
	raised.Memory, raised.Time = 128, 2
	cur := newTestHasher(t, raised)
	if ok, err := cur.Verify(ctx, enc, "an old password here"); err != nil || !ok {
		t.Fatalf("old hash under raised parameters: %v, %v", ok, err)
	}
	if !cur.NeedsRehash(enc) {
		t.Error("a hash below the current parameters does not need a rehash")
	}
	if old.NeedsRehash(enc) {
		t.Error("a hash at the current parameters needs a rehash")
	}
	if !cur.NeedsRehash("not a hash") {
		t.Error("an unparsable hash does not need a rehash")
	}
	p, _, _, err := ParseHash(enc)
	if err != nil || p != testParams {
		t.Fatalf("ParseHash = %+v, %v; want %+v", p, err, testParams)
	}
}

func TestParseHashRefuses(t *testing.T) {
	for _, s := range []string{
		"",
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		// Memory and time a tampered row could use to stall the server.
		"$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		"$argon2id$v=19$m=64,t=1000,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		"$argon2id$v=19$m=64,t=1,p=1,x=2$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		"$argon2id$v=19$m=064,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		"$argon2id$v=19$m=64,t=1,p=1$!!!$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA", // 4-byte key
	} {
		if _, _, _, err := ParseHash(s); !errors.Is(err, ErrBadHash) {
			t.Errorf("ParseHash(%q) = %v, want ErrBadHash", s, err)
		}
	}
}

func TestCheckPassword(t *testing.T) {
	for pw, ok := range map[string]bool{
		"short":                               false,
		"elevenchars":                         false,
		"twelve chars":                        true,
		"ünïcödé ßtrñ":                        true, // 12 characters, more bytes
		strings.Repeat("a", MaxPasswordLen):   true,
		strings.Repeat("a", MaxPasswordLen+1): false,
		"bad utf-8 \xff\xfe here":             false,
	} {
		if err := CheckPassword(pw); (err == nil) != ok {
			t.Errorf("CheckPassword(%.20q) = %v, want ok=%v", pw, err, ok)
		}
	}
}

// TestHasherBusy: with every slot taken and no room to wait, hashing is
// refused at once instead of queueing; a waiter leaves when its context
// ends.
func TestHasherBusy(t *testing.T) {
	h, err := NewHasher(testParams, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	h.sem <- struct{}{} // the one slot is busy
	if _, err := h.Hash(context.Background(), "a long enough password"); !errors.Is(err, ErrBusy) {
		t.Fatalf("Hash with no slot and no waiting room = %v, want ErrBusy", err)
	}
	h.maxWait = 1
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "a long enough password"); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting with a canceled context = %v", err)
	}
	<-h.sem
	if _, err := h.Hash(context.Background(), "a long enough password"); err != nil {
		t.Fatal(err)
	}
	if h.Computations() != 1 {
		t.Fatalf("Computations = %d, want 1", h.Computations())
	}
}

func TestDefaultParamsValid(t *testing.T) {
	if err := DefaultParams.valid(); err != nil {
		t.Fatal(err)
	}
	// OWASP's floor for argon2id: 19 MiB with t=2, or more memory with t=1.
	if DefaultParams.Memory < 19456 || (DefaultParams.Memory < 47104 && DefaultParams.Time < 2) {
		t.Fatalf("DefaultParams %s are below OWASP's guidance", DefaultParams)
	}
}

// TestUnmatchable: the unknown-user hash parses with the current
// parameters, matches no password, and costs one computation to check.
func TestUnmatchable(t *testing.T) {
	h, err := NewHasher(Params{Memory: 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	u, err := h.Unmatchable()
	if err != nil {
		t.Fatal(err)
	}
	if p, _, _, err := ParseHash(u); err != nil || p != h.Params() {
		t.Fatalf("ParseHash(%q) = %+v, %v; want the hasher's parameters", u, p, err)
	}
	if h.Computations() != 0 {
		t.Fatal("making the hash computed one")
	}
	for _, pw := range []string{"", "password1234", u} {
		if ok, err := h.Verify(context.Background(), u, pw); ok || err != nil {
			t.Fatalf("Verify(%q) = %v, %v", pw, ok, err)
		}
	}
	if h.Computations() != 3 {
		t.Fatalf("%d computations for 3 checks", h.Computations())
	}
}
