package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password length limits: at least MinPasswordLen characters (OWASP's
// floor for a password without MFA is 15, with MFA 8; 12 is ours), at most
// MaxPasswordLen bytes so that nobody makes the server hash megabytes.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 1024
)

// ErrWeakPassword is wrapped by CheckPassword's refusals.
var ErrWeakPassword = errors.New("password refused")

// ErrBusy is returned when too many password hashes wait for their turn:
// the caller should answer "try again shortly", not queue without bound.
var ErrBusy = errors.New("too many password checks in progress")

// CheckPassword applies the password policy to a new password.
func CheckPassword(pw string) error {
	switch {
	case !utf8.ValidString(pw):
		return fmt.Errorf("%w: not valid UTF-8", ErrWeakPassword)
	case utf8.RuneCountInString(pw) < MinPasswordLen:
		return fmt.Errorf("%w: shorter than %d characters", ErrWeakPassword, MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrWeakPassword, MaxPasswordLen)
	}
	return nil
}

// Params are argon2id's cost parameters. They are stored in every hash, so
// raising DefaultParams later upgrades each hash at its owner's next login
// (see NeedsRehash) while old hashes still verify.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// DefaultParams are above OWASP's Password Storage Cheat Sheet minimum
// for argon2id (m=47104 KiB t=1, or m=19456 KiB t=2, p=1): 64 MiB, two
// passes, one lane. OWASP's minimum ran in 20-30 ms on the 2-core
// reference machine, under the 50 ms floor the project sets; these take
// about 80 ms there idle and about 250 ms under a load of 4 (make bench,
// "password"), inside 50-500 ms. Two hashes at once (the Service's cap)
// hold 128 MiB.
var DefaultParams = Params{Memory: 65536, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Bounds on parameters read back from a stored hash, so that a tampered
// row cannot make one verification take the server's memory or minutes.
const (
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 16
	maxThreads = 16
	maxKeyLen  = 64
	minKeyLen  = 16
)

func (p Params) String() string {
	return fmt.Sprintf("argon2id m=%d KiB t=%d p=%d", p.Memory, p.Time, p.Threads)
}

func (p Params) valid() error {
	if p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory || p.Time < 1 || p.Time > maxTime ||
		p.Threads < 1 || p.Threads > maxThreads || p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen || p.SaltLen < 8 || p.SaltLen > 64 {
		return fmt.Errorf("auth: argon2id parameters out of range: %s salt=%d key=%d", p, p.SaltLen, p.KeyLen)
	}
	return nil
}

// Hasher hashes and verifies passwords with argon2id. A semaphore caps the
// hashes computed at once, and a bound on waiters refuses (ErrBusy) rather
// than queue a burst, so that logins cannot starve the server of CPU and
// memory: at most Concurrency × Params.Memory is in use for hashing.
type Hasher struct {
	params  Params
	sem     chan struct{}
	waiting atomic.Int64
	maxWait int64
	count   atomic.Int64
}

// NewHasher returns a hasher with parameters p computing at most
// concurrency hashes at once (at least 1) and letting at most maxWaiting
// more wait for a turn.
func NewHasher(p Params, concurrency, maxWaiting int) (*Hasher, error) {
	if err := p.valid(); err != nil {
		return nil, err
	}
	concurrency = max(concurrency, 1)
	return &Hasher{params: p, sem: make(chan struct{}, concurrency), maxWait: int64(max(maxWaiting, 0))}, nil
}

// Params returns the parameters new hashes get.
func (h *Hasher) Params() Params { return h.params }

// Computations returns how many argon2id computations the hasher has run.
func (h *Hasher) Computations() int64 { return h.count.Load() }

func (h *Hasher) compute(ctx context.Context, pw, salt []byte, p Params) ([]byte, error) {
	select {
	case h.sem <- struct{}{}:
	default:
		if h.waiting.Add(1) > h.maxWait {
			h.waiting.Add(-1)
			return nil, ErrBusy
		}
		select {
		case h.sem <- struct{}{}:
			h.waiting.Add(-1)
		case <-ctx.Done():
			h.waiting.Add(-1)
			return nil, ctx.Err()
		}
	}
	defer func() { <-h.sem }()
	h.count.Add(1)
	return argon2.IDKey(pw, salt, p.Time, p.Memory, p.Threads, p.KeyLen), nil
}

var b64 = base64.RawStdEncoding

// Hash returns pw's argon2id hash in PHC string format:
// $argon2id$v=19$m=47104,t=1,p=1$<salt>$<hash>, base64 without padding.
// It does not apply the password policy; CheckPassword does.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	if len(pw) > MaxPasswordLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrWeakPassword, MaxPasswordLen)
	}
	salt := make([]byte, h.params.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key, err := h.compute(ctx, []byte(pw), salt, h.params)
	if err != nil {
		return "", err
	}
	p := h.params
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Unmatchable returns a hash in the current parameters that no password
// matches (its key is random, not derived): verifying against it costs
// what verifying a real hash costs, which is what an unknown user name
// must cost. Making it computes nothing, so a server that starts does not
// spend a hash's memory before anyone logs in.
func (h *Hasher) Unmatchable() (string, error) {
	p := h.params
	salt, key := make([]byte, p.SaltLen), make([]byte, p.KeyLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("auth: key: %w", err)
	}
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// ErrBadHash is wrapped by the errors of a stored hash that cannot be
// parsed.
var ErrBadHash = errors.New("malformed password hash")

// ParseHash splits a PHC argon2id string into its parameters, salt and key.
func ParseHash(s string) (Params, []byte, []byte, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return Params{}, nil, nil, fmt.Errorf("%w: want $argon2id$v=..$m=..,t=..,p=..$salt$hash", ErrBadHash)
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return Params{}, nil, nil, fmt.Errorf("%w: version %q", ErrBadHash, parts[2])
	}
	var p Params
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil || n != 3 ||
		fmt.Sprintf("m=%d,t=%d,p=%d", p.Memory, p.Time, p.Threads) != parts[3] {
		return Params{}, nil, nil, fmt.Errorf("%w: parameters %q", ErrBadHash, parts[3])
	}
	salt, err := b64.Strict().DecodeString(parts[4])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: salt: %v", ErrBadHash, err)
	}
	key, err := b64.Strict().DecodeString(parts[5])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: hash: %v", ErrBadHash, err)
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	if err := p.valid(); err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: %v", ErrBadHash, err)
	}
	return p, salt, key, nil
}

// Verify reports whether pw matches the stored hash, computing with the
// hash's own parameters and comparing in constant time. A password longer
// than MaxPasswordLen never matches and costs no hash.
func (h *Hasher) Verify(ctx context.Context, stored, pw string) (bool, error) {
	p, salt, key, err := ParseHash(stored)
	if err != nil {
		return false, err
	}
	if len(pw) > MaxPasswordLen {
		return false, nil
	}
	got, err := h.compute(ctx, []byte(pw), salt, p)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// NeedsRehash reports whether stored was made with weaker parameters than
// the hasher's (or cannot be parsed): after a successful login its owner's
// password should be hashed again.
func (h *Hasher) NeedsRehash(stored string) bool {
	p, _, _, err := ParseHash(stored)
	if err != nil {
		return true
	}
	c := h.params
	return p.Memory < c.Memory || p.Time < c.Time || p.Threads < c.Threads || p.KeyLen < c.KeyLen || p.SaltLen < c.SaltLen
}
