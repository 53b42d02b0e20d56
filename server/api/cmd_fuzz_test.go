package api

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

func FuzzDecodeCommandRequest(f *testing.F) {
	for _, s := range []string{`{"name":"check"}`, `{"name":"attest"}`, `{"name":"reboot"}`, `{"name":"desired"}`,
		`{"name":"check","x":1}`, `{"name":"check"}{}`, `{}`, `[]`, ``, `{"name":"check"}   `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cr, err := DecodeCommandRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrRequest) {
				t.Fatalf("error without ErrRequest: %v", err)
			}
			return
		}
		if len(b) > MaxCommandRequestBytes {
			t.Fatalf("accepted %d bytes", len(b))
		}
		switch cr.Name {
		case wire.CmdCheck, wire.CmdAttest, wire.CmdReboot:
		default:
			t.Fatalf("accepted command %q", cr.Name)
		}
	})
}

func TestDecodeCommandRequest(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{`{"name":"check"}`, "check"},
		{`{"name":"attest"}`, "attest"},
		{" {\"name\":\"reboot\"}\n", "reboot"},
		{`{"name":"desired"}`, ""},
		{`{"name":"Check"}`, ""},
		{`{"name":""}`, ""},
		{`{}`, ""},
		{`{"name":"check","id":"x"}`, ""},
		{`{"name":"check"}{"name":"reboot"}`, ""},
		{`{"name":1}`, ""},
		{`null`, ""},
	} {
		cr, err := DecodeCommandRequest(bytes.NewReader([]byte(tc.in)))
		if (err == nil) != (tc.want != "") || cr.Name != tc.want && err == nil {
			t.Errorf("DecodeCommandRequest(%s) = %+v, %v; want %q", tc.in, cr, err, tc.want)
		}
	}
}
