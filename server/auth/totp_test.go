package auth

import (
	"strings"
	"testing"
	"time"
)

func TestMatchTOTP(t *testing.T) {
	e, hashes, err := newTOTP("dialtone", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e.URL, "otpauth://totp/dialtone:alice?") || !strings.Contains(e.URL, "secret="+e.Secret) {
		t.Fatalf("URL %q", e.URL)
	}
	if len(e.RecoveryCodes) != RecoveryCodeCount || len(hashes) != RecoveryCodeCount {
		t.Fatalf("%d codes, %d hashes", len(e.RecoveryCodes), len(hashes))
	}
	now := time.Unix(1_800_000_015, 0)
	step := now.Unix() / TOTPPeriod
	for d, want := range map[int64]bool{-2: false, -1: true, 0: true, 1: true, 2: false} {
		code, err := TOTPCode(e.Secret, now.Add(time.Duration(d*TOTPPeriod)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := matchTOTP(e.Secret, code, now)
		if ok != want || (ok && got != step+d) {
			t.Errorf("code of step %+d: step %d, %v; want %v", d, got, ok, want)
		}
	}
	for _, bad := range []string{"", "12345", "1234567", "abcdef"} {
		if _, ok := matchTOTP(e.Secret, bad, now); ok {
			t.Errorf("code %q accepted", bad)
		}
	}
}

// TestRFC6238Vector: the SHA-1 test vector of RFC 6238 appendix B, 6 digits.
func TestRFC6238Vector(t *testing.T) {
	secret := "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" // "12345678901234567890"
	for unix, want := range map[int64]string{59: "287082", 1111111109: "081804", 1234567890: "005924", 2000000000: "279037"} {
		got, err := TOTPCode(secret, time.Unix(unix, 0))
		if err != nil || got != want {
			t.Errorf("T=%d: %s, %v; want %s", unix, got, err, want)
		}
	}
}

func TestRecoveryCodes(t *testing.T) {
	e, hashes, err := newTOTP("dialtone", "alice")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, c := range e.RecoveryCodes {
		if len(c) != 19 || strings.Count(c, "-") != 3 || seen[c] {
			t.Fatalf("code %q", c)
		}
		seen[c] = true
		for _, typed := range []string{c, strings.ToUpper(c), strings.ReplaceAll(c, "-", ""), strings.ReplaceAll(c, "-", " ")} {
			if string(recoveryHash(typed)) != string(hashes[i]) {
				t.Errorf("%q typed as %q hashes differently", c, typed)
			}
		}
	}
}
