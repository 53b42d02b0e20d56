package wire

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzValidID holds the hand-written ValidID to the pattern it documents.
func FuzzValidID(f *testing.F) {
	for _, s := range []string{"", "a", "phone-1", "-a", "a-", "A.b_c-9", "é", "a/b", "#", "_alerts",
		strings.Repeat("a", 64), strings.Repeat("a", 65), "a\x00", "a\n"} {
		f.Add(s)
	}
	re := regexp.MustCompile(idPattern)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidID(s), re.MatchString(s); got != want {
			t.Fatalf("ValidID(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
