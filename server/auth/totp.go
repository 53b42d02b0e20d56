package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP as RFC 6238 and every authenticator app has it: SHA-1, 6 digits,
// 30-second steps, one step of clock skew either way.
const (
	TOTPPeriod = 30
	TOTPSkew   = 1
	// RecoveryCodeCount is how many recovery codes an enrollment hands out.
	RecoveryCodeCount = 10
)

var totpOpts = hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// Enrollment is what enrolling a second factor hands to its user, once:
// the otpauth:// URL for an authenticator app and the recovery codes.
type Enrollment struct {
	URL           string   `json:"url"`
	Secret        string   `json:"secret"`
	RecoveryCodes []string `json:"recovery_codes"`
}

// newTOTP makes a fresh secret for account and its recovery codes, and
// the hashes of those codes for the store.
func newTOTP(issuer, account string) (Enrollment, [][]byte, error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: account, Period: TOTPPeriod,
		SecretSize: 20, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return Enrollment{}, nil, fmt.Errorf("auth: generating totp secret: %w", err)
	}
	e := Enrollment{URL: key.URL(), Secret: key.Secret()}
	hashes := make([][]byte, 0, RecoveryCodeCount)
	for range RecoveryCodeCount {
		c, err := newRecoveryCode()
		if err != nil {
			return Enrollment{}, nil, err
		}
		e.RecoveryCodes = append(e.RecoveryCodes, c)
		hashes = append(hashes, recoveryHash(c))
	}
	return e, hashes, nil
}

var recoveryEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

// newRecoveryCode returns 80 random bits as xxxx-xxxx-xxxx-xxxx in an
// alphabet without 0/o and 1/l. With that much entropy a plain SHA-256
// stores it safely; it needs no slow hash.
func newRecoveryCode() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: recovery code: %w", err)
	}
	s := recoveryEncoding.EncodeToString(b)
	return s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16], nil
}

// normalizeRecoveryCode lowercases a code and drops the dashes and spaces
// people type or copy with it.
func normalizeRecoveryCode(c string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case 'A' <= r && r <= 'Z':
			return r + 'a' - 'A'
		}
		return r
	}, c)
}

func recoveryHash(code string) []byte {
	h := sha256.Sum256([]byte("dialtone recovery code\x00" + normalizeRecoveryCode(code)))
	return h[:]
}

// matchTOTP returns the time step whose code is code, within TOTPSkew
// steps of now, and whether there is one. Every candidate is computed and
// compared in constant time.
func matchTOTP(secret, code string, now time.Time) (int64, bool) {
	if len(code) != otp.DigitsSix.Length() {
		return 0, false
	}
	cur := now.Unix() / TOTPPeriod
	var (
		step  int64
		found bool
	)
	for d := int64(-TOTPSkew); d <= TOTPSkew; d++ {
		want, err := hotp.GenerateCodeCustom(secret, uint64(cur+d), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && !found {
			step, found = cur+d, true
		}
	}
	return step, found
}

// TOTPCode returns the code of secret at t, for tests and tools.
func TOTPCode(secret string, t time.Time) (string, error) {
	return hotp.GenerateCodeCustom(secret, uint64(t.Unix()/TOTPPeriod), totpOpts)
}
