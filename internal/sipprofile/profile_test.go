package sipprofile

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tlsDoc, err := os.ReadFile(filepath.Join("testdata", "profile-tls.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		doc   string
		field string // the ProfileError's field; "" with ok
		ok    bool
	}{
		{name: "tls with its CA", doc: string(tlsDoc), ok: true},
		{name: "udp lab", doc: `{"proxy":"127.0.0.1:5060","domain":"d","user":"u","transport":"udp","allow_insecure_transport":true}`, ok: true},
		{name: "udp without opt-in", doc: `{"proxy":"127.0.0.1:5060","domain":"d","user":"u","transport":"udp"}`, field: "transport"},
		{name: "tls without CA", doc: `{"proxy":"a:1","domain":"d","user":"u"}`, field: "ca_pem"},
		{name: "password is not a field", doc: `{"proxy":"127.0.0.1:5060","domain":"d","user":"u","transport":"udp","allow_insecure_transport":true,"password":"x"}`},
		{name: "trailing data", doc: `{"proxy":"127.0.0.1:5060","domain":"d","user":"u","transport":"udp","allow_insecure_transport":true} {}`},
		{name: "too large", doc: `{"proxy":"` + strings.Repeat("a", MaxSize) + `:1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if p.SRTP != SRTPRequired || len(p.Suites) == 0 || p.RegisterExpires == 0 {
					t.Errorf("defaults not filled in: %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if !errors.Is(err, ErrProfile) {
				t.Errorf("%v is not ErrProfile", err)
			}
			var pe *ProfileError
			if tt.field != "" && (!errors.As(err, &pe) || pe.Field != tt.field) {
				t.Errorf("%v: want field %q", err, tt.field)
			}
		})
	}
}

func TestProxyHost(t *testing.T) {
	p := Profile{Proxy: "[::1]:5061"}
	if got := p.ProxyHost(); got != "::1" {
		t.Errorf("ProxyHost = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "profile-*.json"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"proxy":"127.0.0.1:5060","domain":"d","user":"u","transport":"udp","allow_insecure_transport":true}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"proxy":"a:1","domain":"d","user":"u","ca_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"inbound_rate":{"per_second":1e308,"burst":-1}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrProfile) {
				t.Fatalf("error outside the taxonomy: %v", err)
			}
			return
		}
		// What Parse accepts is normalized: its encoding parses to the same.
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", out, err)
		}
		again, _ := json.Marshal(q)
		if string(again) != string(out) {
			t.Fatalf("not stable:\n%s\n%s", out, again)
		}
	})
}
