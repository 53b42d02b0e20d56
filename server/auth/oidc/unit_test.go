package oidc

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func base64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
func base64Encode(b []byte) string          { return base64.RawURLEncoding.EncodeToString(b) }

func testConfig() Config {
	return Config{Issuer: "https://idp.example", ClientID: "dialtone", ClientSecret: "s",
		RedirectURL: "https://dialtone.example/v1/oidc/callback", Key: bytes.Repeat([]byte{1}, 32)}
}

func TestNewChecksConfig(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"issuer":   func(c *Config) { c.Issuer = "idp.example" },
		"redirect": func(c *Config) { c.RedirectURL = "ftp://x/" },
		"client":   func(c *Config) { c.ClientID = "" },
		"secret":   func(c *Config) { c.ClientSecret = "" },
		"key":      func(c *Config) { c.Key = c.Key[:31] },
		"domain":   func(c *Config) { c.AllowedDomains = []string{"a@b"} },
	} {
		c := testConfig()
		mod(&c)
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if _, err := New(testConfig()); err != nil {
		t.Fatal(err)
	}
}

func TestSecureCookie(t *testing.T) {
	rp, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := rp.cookie("v", 60)
	if c.Name != "__Host-dialtone_oidc" || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie %+v", c)
	}
	// A state cookie of another key is refused.
	other := testConfig()
	other.Key = bytes.Repeat([]byte{2}, 32)
	rp2, _ := New(other)
	v, err := rp2.sealState(loginState{State: "s", Nonce: "n", Verifier: "v", Expires: time.Now().Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1/oidc/callback?state=s&code=c", nil)
	r.AddCookie(&http.Cookie{Name: c.Name, Value: v})
	if _, err := rp.Finish(t.Context(), httptest.NewRecorder(), r); !errors.Is(err, ErrState) {
		t.Errorf("other key's cookie: %v", err)
	}
}

func TestValidLoopback(t *testing.T) {
	good := map[string]string{
		"http://127.0.0.1:8080/": "http://127.0.0.1:8080/",
		"http://127.0.0.1:1":     "http://127.0.0.1:1/",
		"http://[::1]:65535/":    "http://[::1]:65535/",
	}
	for in, want := range good {
		if got, err := ValidLoopback(in); err != nil || got != want {
			t.Errorf("ValidLoopback(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "https://127.0.0.1:80/", "http://localhost:80/", "http://127.0.0.1/", "http://127.0.0.1:0/",
		"http://127.0.0.1:65536/", "http://127.0.0.1:080/", "http://127.0.0.2:80/", "http://evil.example:80/",
		"http://127.0.0.1:80/cb", "http://127.0.0.1:80/?x=1", "http://127.0.0.1:80/#f", "http://u@127.0.0.1:80/",
		"http://127.0.0.1:80@evil.example/", "http://[::ffff:127.0.0.1]:80/", "//127.0.0.1:80/", "http://127.0.0.1:80/?",
	} {
		if got, err := ValidLoopback(in); !errors.Is(err, ErrLoopback) {
			t.Errorf("ValidLoopback(%q) = %q, %v; want ErrLoopback", in, got, err)
		}
	}
}

func TestHandoff(t *testing.T) {
	now := time.Now()
	cfg := testConfig()
	cfg.Now = func() time.Time { return now }
	rp, _ := New(cfg)
	verifier := strings.Repeat("v", 43)
	exp := now.Add(12 * time.Hour).UTC().Truncate(time.Second)
	code, err := rp.SealHandoff("dts_secret", exp, Challenge(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(code, "dts_secret") {
		t.Fatal("hand-off code shows the token")
	}
	if _, _, err := rp.RedeemHandoff(code, "wrong"); !errors.Is(err, ErrHandoff) {
		t.Errorf("wrong verifier: %v", err)
	}
	tok, got, err := rp.RedeemHandoff(code, verifier)
	if err != nil || tok != "dts_secret" || !got.Equal(exp) {
		t.Fatalf("redeem: %q %v %v", tok, got, err)
	}
	if _, _, err := rp.RedeemHandoff(code, verifier); !errors.Is(err, ErrHandoff) {
		t.Errorf("second redeem: %v", err)
	}
	code, _ = rp.SealHandoff("dts_secret", exp, Challenge(verifier))
	now = now.Add(HandoffTTL)
	if _, _, err := rp.RedeemHandoff(code, verifier); !errors.Is(err, ErrHandoff) {
		t.Errorf("expired: %v", err)
	}
	if _, _, err := rp.RedeemHandoff(code[:len(code)-2]+"AA", verifier); !errors.Is(err, ErrHandoff) {
		t.Errorf("tampered: %v", err)
	}
}

func TestMFA(t *testing.T) {
	for _, c := range []struct {
		amr  []string
		want bool
	}{
		{nil, false}, {[]string{"pwd"}, false}, {[]string{"otp"}, false}, {[]string{"pwd", "pin"}, false},
		{[]string{"mfa"}, true}, {[]string{"pwd", "otp"}, true}, {[]string{"hwk", "fpt"}, true}, {[]string{"pwd", "user"}, false},
	} {
		if got := (Identity{AMR: c.amr}).MFA(); got != c.want {
			t.Errorf("MFA(%v) = %v", c.amr, got)
		}
	}
}

func TestAllowedDomains(t *testing.T) {
	cfg := testConfig()
	cfg.AllowedDomains = []string{"MSP.example"}
	rp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   Identity
		hd   string
		want bool
	}{
		{Identity{Email: "a@msp.example", EmailVerified: true}, "", true},
		{Identity{Email: "a@MSP.example", EmailVerified: true}, "", true},
		{Identity{Email: "a@msp.example"}, "", false},
		{Identity{Email: "a@evil.example", EmailVerified: true}, "", false},
		{Identity{Email: "a@msp.example@evil.example", EmailVerified: true}, "", false},
		{Identity{}, "msp.example", true},
		{Identity{}, "", false},
	} {
		err := rp.allowed(c.id, c.hd)
		if (err == nil) != c.want || (err != nil && !errors.Is(err, ErrDomain)) {
			t.Errorf("allowed(%+v, %q) = %v", c.id, c.hd, err)
		}
	}
}
