package sdp

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSuiteLengths(t *testing.T) {
	tests := []struct {
		suite         Suite
		key, salt     int
		wantSupported bool
	}{
		{AESCM128HMACSHA180, 16, 14, true},
		{AESCM128HMACSHA132, 16, 14, true},
		{AEADAES128GCM, 16, 12, true},
		{"AES_256_CM_HMAC_SHA1_80", 0, 0, false},
		{"AEAD_AES_128_GCM_8", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.suite), func(t *testing.T) {
			if got := tt.suite.KeyLen(); got != tt.key {
				t.Errorf("KeyLen = %d, want %d", got, tt.key)
			}
			if got := tt.suite.SaltLen(); got != tt.salt {
				t.Errorf("SaltLen = %d, want %d", got, tt.salt)
			}
			prof, ok := tt.suite.Profile()
			if ok != tt.wantSupported {
				t.Fatalf("Profile ok = %v, want %v", ok, tt.wantSupported)
			}
			if !ok {
				return
			}
			// Our lengths must be what pion/srtp will demand of the key we hand it.
			kl, err := prof.KeyLen()
			if err != nil || kl != tt.key {
				t.Errorf("pion KeyLen = %d, %v; want %d", kl, err, tt.key)
			}
			sl, err := prof.SaltLen()
			if err != nil || sl != tt.salt {
				t.Errorf("pion SaltLen = %d, %v; want %d", sl, err, tt.salt)
			}
		})
	}
}

func TestNewCrypto(t *testing.T) {
	for _, s := range DefaultSuites {
		c, err := NewCrypto(3, s, nil)
		if err != nil {
			t.Fatalf("NewCrypto(%s): %v", s, err)
		}
		if c.Tag != 3 || c.Suite != s || len(c.Key) != s.KeyLen()+s.SaltLen() {
			t.Errorf("NewCrypto(%s) = %+v", s, c)
		}
		back, err := ParseCrypto(c.String())
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Errorf("ParseCrypto(%q) = %+v, %v; want %+v", c.String(), back, err, c)
		}
	}
	a, _ := NewCrypto(1, AEADAES128GCM, nil)
	b, _ := NewCrypto(1, AEADAES128GCM, nil)
	if bytes.Equal(a.Key, b.Key) {
		t.Error("two fresh keys are equal")
	}
	if _, err := NewCrypto(1, "AES_256_CM_HMAC_SHA1_80", nil); err == nil {
		t.Error("NewCrypto accepted an unsupported suite")
	}
	if _, err := NewCrypto(1, AESCM128HMACSHA180, iotest.ErrReader(errors.New("entropy gone"))); err == nil {
		t.Error("NewCrypto ignored a failing random source")
	}
	if _, err := NewCrypto(1, AESCM128HMACSHA180, bytes.NewReader(make([]byte, 29))); err == nil {
		t.Error("NewCrypto accepted a short random read")
	}
}

const (
	key30 = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"                         // 30 bytes
	key28 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="                         // 28 bytes
	key46 = "8AbZePWwsKhLGX3GlXA+yHYPQ3cgraer/9DkFJYCOPZZy3o9wC0NIbIFYZfyHw==" // 46 bytes
)

func TestParseCryptoRoundTrip(t *testing.T) {
	tests := []struct {
		in        string
		canonical string // String() of the parsed value; "" means same as in
	}{
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30},
		{in: "2 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|2^31"},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4"},
		{in: "9 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1048577"},
		{in: "3 AEAD_AES_128_GCM inline:" + key28},
		{in: "123456789 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + " KDR=10 FEC_ORDER=FEC_SRTP"},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|255:1"},
		{in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|300:2"},
		// Unsupported suites still parse, so negotiation can say why it passed them over.
		{in: "4 AES_256_CM_HMAC_SHA1_80 inline:" + key46},
		{in: "1\tAES_CM_128_HMAC_SHA1_80  inline:" + key30 + " ", canonical: "1 AES_CM_128_HMAC_SHA1_80 inline:" + key30},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			c, err := ParseCrypto(tt.in)
			if err != nil {
				t.Fatalf("ParseCrypto: %v", err)
			}
			want := tt.canonical
			if want == "" {
				want = tt.in
			}
			if got := c.String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			back, err := ParseCrypto(c.String())
			if err != nil || !reflect.DeepEqual(back, c) {
				t.Errorf("round trip = %+v, %v; want %+v", back, err, c)
			}
		})
	}

	c, err := ParseCrypto("1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4")
	if err != nil {
		t.Fatal(err)
	}
	if c.Lifetime != 1<<20 || !bytes.Equal(c.MKI, []byte{0, 0, 0, 1}) || len(c.Key) != 30 {
		t.Errorf("parsed %+v: want lifetime 2^20, MKI 00000001, 30-byte key", c)
	}
	// Padding-free base64 (seen from some stacks) decodes to the same key.
	raw, err := ParseCrypto("3 AEAD_AES_128_GCM inline:" + strings.TrimRight(key28, "="))
	if err != nil || len(raw.Key) != 28 {
		t.Errorf("unpadded key: %+v, %v", raw, err)
	}
}

func TestParseCryptoErrors(t *testing.T) {
	tests := []struct {
		in     string
		status int
		reason string
	}{
		{"", 400, "needs tag, suite and key"},
		{"1 AES_CM_128_HMAC_SHA1_80", 400, "needs tag, suite and key"},
		{"x AES_CM_128_HMAC_SHA1_80 inline:" + key30, 400, "tag"},
		{"1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + key30, 400, "tag"},
		{"-1 AES_CM_128_HMAC_SHA1_80 inline:" + key30, 400, "tag"},
		{"1 AES-CM inline:" + key30, 400, "suite"},
		{"1 AES_CM_128_HMAC_SHA1_80 " + key30, 400, "no key method"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:", 400, "empty"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:!!!notbase64", 400, "base64"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^64", 400, "lifetime"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|0", 400, "lifetime"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|2^31", 400, "two lifetimes"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:4|2^20", 400, "lifetime after mki"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:0", 400, "mki length"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:129", 400, "mki length"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|256:1", 400, "does not fit"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|x:1", 400, "mki value"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4|5", 400, "at most 3"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + strings.Repeat("A", 2000), 400, "longer than"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4;inline:" + key30 + "|2^20|2:4", 488, "multiple master keys"},
		{"1 AES_CM_128_HMAC_SHA1_80 uri:https://keys.example/1", 488, "key method"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key28, 488, "key is 28 bytes, want 30"},
		{"1 AEAD_AES_128_GCM inline:" + key30, 488, "key is 30 bytes, want 28"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseCrypto(tt.in)
			checkNegErr(t, err, tt.status, tt.reason)
		})
	}
}

// checkNegErr fails unless err is a *NegotiationError with status and a reason containing reason,
// wrapping the sentinel that matches the status.
func checkNegErr(t *testing.T, err error, status int, reason string) {
	t.Helper()
	var ne *NegotiationError
	if !errors.As(err, &ne) {
		t.Fatalf("error %v (%T) is not a *NegotiationError", err, err)
	}
	if ne.Status != status || !strings.Contains(ne.Reason, reason) {
		t.Errorf("got %d %q, want %d containing %q", ne.Status, ne.Reason, status, reason)
	}
	want := ErrNotAcceptable
	if status == StatusBadRequest {
		want = ErrMalformed
	}
	if !errors.Is(err, want) {
		t.Errorf("errors.Is(%v, %v) = false", err, want)
	}
}
