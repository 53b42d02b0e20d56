package voip

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

func testCAPEM(t testing.TB) string {
	t.Helper()
	pki := testutil.NewPKI(t, t.TempDir(), "sip-ca")
	b, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseProfile(t *testing.T) {
	ca := testCAPEM(t)
	caJSON, _ := json.Marshal(ca)
	good := `{"proxy":"sip.example.com:5061","domain":"example.com","user":"alice","ca_pem":` + string(caJSON) + `}`
	tests := []struct {
		name    string
		doc     string
		field   string // expected ProfileError field; "" with wantErr false means success
		wantErr bool
		check   func(t *testing.T, p Profile)
	}{
		{name: "defaults", doc: good, check: func(t *testing.T, p Profile) {
			if p.Transport != TransportTLS || p.SRTP != SRTPRequired || p.AuthUser != "alice" || p.RegisterExpires != 600 || p.KeepAlive != 30 {
				t.Errorf("defaults not applied: %+v", p)
			}
			if len(p.Suites) != 3 || p.Suites[0] != SuiteAESCM128SHA180 || len(p.Codecs) != 2 || p.InboundRate.Burst == 0 {
				t.Errorf("default suites/codecs/rate: %v %v %v", p.Suites, p.Codecs, p.InboundRate)
			}
		}},
		{name: "unknown field", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"colour":"red"}`, wantErr: true},
		{name: "password refused", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"password":"x"}`, wantErr: true},
		{name: "trailing data", doc: good + `{}`, wantErr: true},
		{name: "not json", doc: `proxy: a`, wantErr: true},
		{name: "tcp without opt-in", doc: `{"proxy":"a:1","domain":"d","user":"u","transport":"tcp"}`, field: "transport", wantErr: true},
		{name: "udp with opt-in", doc: `{"proxy":"127.0.0.1:5060","domain":"d","user":"u","transport":"udp","allow_insecure_transport":true}`, check: func(t *testing.T, p Profile) {
			if p.Transport != TransportUDP {
				t.Errorf("transport %q", p.Transport)
			}
		}},
		{name: "tls needs CA", doc: `{"proxy":"a:1","domain":"d","user":"u"}`, field: "ca_pem", wantErr: true},
		{name: "CA not PEM", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":"hello"}`, field: "ca_pem", wantErr: true},
		{name: "CA with a key", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`, field: "ca_pem", wantErr: true},
		{name: "proxy without port", doc: `{"proxy":"a","domain":"d","user":"u","ca_pem":` + string(caJSON) + `}`, field: "proxy", wantErr: true},
		{name: "proxy port 0", doc: `{"proxy":"a:0","domain":"d","user":"u","ca_pem":` + string(caJSON) + `}`, field: "proxy", wantErr: true},
		{name: "user with space", doc: `{"proxy":"a:1","domain":"d","user":"a b","ca_pem":` + string(caJSON) + `}`, field: "user", wantErr: true},
		{name: "srtp off refused", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"srtp":"off"}`, field: "srtp", wantErr: true},
		{name: "unknown suite", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"suites":["NULL"]}`, field: "suites", wantErr: true},
		{name: "duplicate codec", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"codecs":["PCMU","PCMU"]}`, field: "codecs", wantErr: true},
		{name: "expiry too short", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"register_expires":5}`, field: "register_expires", wantErr: true},
		{name: "rate zero burst", doc: `{"proxy":"a:1","domain":"d","user":"u","ca_pem":` + string(caJSON) + `,"inbound_rate":{"per_second":1,"burst":0}}`, field: "inbound_rate", wantErr: true},
		{name: "explicit choices", doc: `{"proxy":"a:1","domain":"d","user":"u","auth_user":"u-auth","ca_pem":` + string(caJSON) + `,"suites":["AEAD_AES_128_GCM"],"codecs":["PCMA"],"register_expires":60,"keepalive":-1,"inbound_rate":{"per_second":2,"burst":3}}`, check: func(t *testing.T, p Profile) {
			if p.AuthUser != "u-auth" || p.Suites[0] != SuiteAEADAES128GCM || p.Codecs[0] != "PCMA" || p.KeepAlive != -1 || p.InboundRate.Burst != 3 {
				t.Errorf("explicit values lost: %+v", p)
			}
		}},
		{name: "too large", doc: `{"proxy":"` + strings.Repeat("a", MaxProfileSize) + `:1"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProfile([]byte(tt.doc))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", p)
				}
				if !errors.Is(err, ErrProfile) {
					t.Errorf("error %v is not ErrProfile", err)
				}
				var pe *ProfileError
				if tt.field != "" && (!errors.As(err, &pe) || pe.Field != tt.field) {
					t.Errorf("error %v: want field %q", err, tt.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}
