package api

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/mod/semver"
)

func FuzzDecodeDesiredRequest(f *testing.F) {
	for _, s := range []string{`{"version":"1.2.0"}`, `{"version":""}`, `{}`, `{"version":"x"}`, `{"version":"1.2.0","x":1}`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dr, err := DecodeDesiredRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if dr.Version != "" && (len(dr.Version) > 64 || !semver.IsValid("v"+dr.Version)) {
			t.Fatalf("accepted version %q", dr.Version)
		}
	})
}

func TestDecodeDesiredRequest(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{`{"version":"1.2.0"}`, "1.2.0", true},
		{`{"version":""}`, "", true},
		{`{"version":"v1.2.0"}`, "", false},
		{`{"version":"1.2"}`, "", false},
		{`{"version":"1.3.0-rc.1"}`, "1.3.0-rc.1", true},
		{`{"version":"1.2.0","extra":true}`, "", false},
		{`not json`, "", false},
	} {
		dr, err := DecodeDesiredRequest(bytes.NewReader([]byte(tc.in)))
		if (err == nil) != tc.ok || (tc.ok && dr.Version != tc.want) {
			t.Errorf("DecodeDesiredRequest(%s) = %+v, %v", tc.in, dr, err)
		}
	}
}
