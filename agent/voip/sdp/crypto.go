package sdp

import (
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"math/bits"
	"strconv"
	"strings"

	"github.com/pion/srtp/v2"
)

// Suite is an SRTP crypto-suite name as it appears in a=crypto (RFC 4568 §6.2, RFC 7714 §12).
type Suite string

// The suites the phone implements, all backed by pion/srtp.
const (
	AESCM128HMACSHA180 Suite = "AES_CM_128_HMAC_SHA1_80"
	AESCM128HMACSHA132 Suite = "AES_CM_128_HMAC_SHA1_32"
	AEADAES128GCM      Suite = "AEAD_AES_128_GCM"
)

// DefaultSuites is the phone's preference order: AEAD first because GCM authenticates with a full
// 128-bit tag and costs less per packet; the 32-bit-tag suite last.
var DefaultSuites = []Suite{AEADAES128GCM, AESCM128HMACSHA180, AESCM128HMACSHA132}

// Profile returns the pion/srtp protection profile for s; false when s is not one we implement.
func (s Suite) Profile() (srtp.ProtectionProfile, bool) {
	switch s {
	case AESCM128HMACSHA180:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, true
	case AESCM128HMACSHA132:
		return srtp.ProtectionProfileAes128CmHmacSha1_32, true
	case AEADAES128GCM:
		return srtp.ProtectionProfileAeadAes128Gcm, true
	}
	return 0, false
}

// KeyLen is the master key length in bytes, 0 for a suite we do not implement.
func (s Suite) KeyLen() int {
	if _, ok := s.Profile(); !ok {
		return 0
	}
	return 16
}

// SaltLen is the master salt length in bytes (RFC 3711 §8.2: 112 bits; RFC 7714 §13: 96 bits for GCM),
// 0 for a suite we do not implement.
func (s Suite) SaltLen() int {
	switch s {
	case AESCM128HMACSHA180, AESCM128HMACSHA132:
		return 14
	case AEADAES128GCM:
		return 12
	}
	return 0
}

// Limits on what ParseCrypto reads. They keep a hostile attribute from costing more than a few
// microseconds; every legitimate attribute is far below them.
const (
	maxCryptoLen = 1024
	maxTag       = 999999999 // tag = 1*9DIGIT
	maxMKILen    = 128       // mki-length = 1*3DIGIT, 1..128
)

// MinLifetime is the smallest key lifetime (in packets) Negotiate accepts. The lifetime bounds how
// many packets a master key may protect; pion/srtp neither counts nor rekeys, and we rekey only when a
// re-INVITE arrives. 2^20 packets is about 5.8 hours of 20 ms audio, longer than any ordinary call,
// while the small lifetimes some test tools advertise (2^10, 2^16) would run out within minutes and
// leave us using an expired key.
const MinLifetime = 1 << 20

// Crypto is one a=crypto attribute.
type Crypto struct {
	Tag      int
	Suite    Suite
	Key      []byte // master key || master salt; exactly KeyLen+SaltLen bytes for a suite we implement
	Lifetime uint64 // packets; 0 when absent
	// MKI is the master key identifier as it appears on the wire: its value big-endian in exactly
	// mki-length bytes (the form srtp.MasterKeyIndicator wants). Nil when absent.
	MKI []byte
	// Params are the session parameters (RFC 4568 §6.3) verbatim, e.g. "KDR=10", "UNENCRYPTED_SRTCP".
	Params []string
}

// NewCrypto makes a crypto attribute with a fresh master key and salt read from rand
// (crypto/rand when nil).
func NewCrypto(tag int, s Suite, rand io.Reader) (Crypto, error) {
	if _, ok := s.Profile(); !ok {
		return Crypto{}, fmt.Errorf("new crypto: unsupported suite %q", s)
	}
	if tag < 0 || tag > maxTag {
		return Crypto{}, fmt.Errorf("new crypto: tag %d out of range", tag)
	}
	if rand == nil {
		rand = crand.Reader
	}
	key := make([]byte, s.KeyLen()+s.SaltLen())
	if _, err := io.ReadFull(rand, key); err != nil {
		return Crypto{}, fmt.Errorf("new crypto: reading key: %w", err)
	}
	return Crypto{Tag: tag, Suite: s, Key: key}, nil
}

// String returns the attribute value (the text after "a=crypto:"). It round-trips with ParseCrypto.
func (c Crypto) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.Tag))
	b.WriteByte(' ')
	b.WriteString(string(c.Suite))
	b.WriteString(" inline:")
	b.WriteString(base64.StdEncoding.EncodeToString(c.Key))
	if c.Lifetime != 0 {
		b.WriteByte('|')
		if c.Lifetime&(c.Lifetime-1) == 0 {
			b.WriteString("2^")
			b.WriteString(strconv.Itoa(bits.TrailingZeros64(c.Lifetime)))
		} else {
			b.WriteString(strconv.FormatUint(c.Lifetime, 10))
		}
	}
	if len(c.MKI) > 0 {
		b.WriteByte('|')
		b.WriteString(new(big.Int).SetBytes(c.MKI).String())
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(len(c.MKI)))
	}
	for _, p := range c.Params {
		b.WriteByte(' ')
		b.WriteString(p)
	}
	return b.String()
}

// ParseCrypto parses an a=crypto value such as "1 AES_CM_128_HMAC_SHA1_80 inline:BASE64|2^31|1:4".
// Errors are *NegotiationError: Status 400 for text that breaks the RFC 4568 grammar, 488 for a
// well-formed attribute we cannot use at all (several master keys, a key method other than inline, a
// key of the wrong length for a suite we implement). Whether the parsed attribute is acceptable under
// a Policy is decided separately, during negotiation.
func ParseCrypto(value string) (Crypto, error) {
	if len(value) > maxCryptoLen {
		return Crypto{}, malformed("crypto attribute longer than %d bytes", maxCryptoLen)
	}
	fields := strings.FieldsFunc(value, func(r rune) bool { return r == ' ' || r == '\t' })
	if len(fields) < 3 {
		return Crypto{}, malformed("crypto attribute needs tag, suite and key")
	}
	var c Crypto
	tag, ok := parseDigits(fields[0], 9)
	if !ok {
		return Crypto{}, malformed("crypto tag %q is not 1 to 9 digits", fields[0])
	}
	c.Tag = int(tag)
	if !isSuiteToken(fields[1]) {
		return Crypto{}, malformed("crypto suite %q is not a token", fields[1])
	}
	c.Suite = Suite(fields[1])

	keyParams := fields[2]
	if strings.Contains(keyParams, ";") {
		// RFC 4568 §6.1 lets an offer carry several master keys told apart by MKI. pion/srtp could hold
		// them (Context.AddCipherForMKI), but choosing among them follows each key's lifetime, which
		// nothing here tracks, and Negotiated carries one key per direction.
		return Crypto{}, notAcceptable("multiple master keys not supported")
	}
	method, info, ok := strings.Cut(keyParams, ":")
	if !ok {
		return Crypto{}, malformed("crypto key parameter %q has no key method", keyParams)
	}
	if method != "inline" {
		return Crypto{}, notAcceptable("key method %q not supported", method)
	}
	if err := c.parseKeyInfo(info); err != nil {
		return Crypto{}, err
	}
	if n := c.Suite.KeyLen() + c.Suite.SaltLen(); n != 0 && len(c.Key) != n {
		return Crypto{}, notAcceptable("%s key is %d bytes, want %d", c.Suite, len(c.Key), n)
	}
	for _, p := range fields[3:] {
		if !isVisible(p) {
			return Crypto{}, malformed("crypto session parameter %q is not visible text", p)
		}
		c.Params = append(c.Params, p)
	}
	return c, nil
}

// parseKeyInfo parses key-salt ["|" lifetime] ["|" mki] (RFC 4568 §6.1).
func (c *Crypto) parseKeyInfo(info string) error {
	parts := strings.Split(info, "|")
	if len(parts) > 3 {
		return malformed("crypto key has %d parts, want at most 3", len(parts))
	}
	key, err := decodeKey(parts[0])
	if err != nil {
		return err
	}
	c.Key = key
	sawMKI := false
	for _, p := range parts[1:] {
		if sawMKI {
			return malformed("crypto lifetime after mki")
		}
		if v, l, ok := strings.Cut(p, ":"); ok {
			mki, err := parseMKI(v, l)
			if err != nil {
				return err
			}
			c.MKI, sawMKI = mki, true
			continue
		}
		if c.Lifetime != 0 {
			return malformed("crypto key has two lifetimes")
		}
		lt, err := parseLifetime(p)
		if err != nil {
			return err
		}
		c.Lifetime = lt
	}
	return nil
}

func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, malformed("crypto key is empty")
	}
	// encoding/base64 skips CR and LF; a key must not, or "inline:\r" would be an empty key.
	if strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != "" {
		return nil, malformed("crypto key is not base64")
	}
	key, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil && !strings.Contains(s, "=") {
		// Some stacks drop the padding; the key is still unambiguous.
		key, err = base64.RawStdEncoding.Strict().DecodeString(s)
	}
	if err != nil {
		return nil, &NegotiationError{Status: StatusBadRequest, Reason: "crypto key is not base64", cause: err}
	}
	return key, nil
}

func parseLifetime(s string) (uint64, error) {
	if exp, ok := strings.CutPrefix(s, "2^"); ok {
		n, ok := parseDigits(exp, 2)
		if !ok || n > 63 {
			return 0, malformed("crypto lifetime %q out of range", s)
		}
		return 1 << n, nil
	}
	n, ok := parseDigits(s, 20)
	if !ok || n == 0 {
		return 0, malformed("crypto lifetime %q is not a positive number", s)
	}
	return n, nil
}

func parseMKI(value, length string) ([]byte, error) {
	n, ok := parseDigits(length, 3)
	if !ok || n < 1 || n > maxMKILen {
		return nil, malformed("mki length %q not in 1..%d", length, maxMKILen)
	}
	// 309 decimal digits exceed 2^1024 = 128 bytes, so longer values cannot fit.
	if value == "" || len(value) > 309 || strings.Trim(value, "0123456789") != "" {
		return nil, malformed("mki value %q is not a decimal number", value)
	}
	v, _ := new(big.Int).SetString(value, 10)
	if v.BitLen() > 8*int(n) {
		return nil, malformed("mki value %s does not fit in %d bytes", value, n)
	}
	return v.FillBytes(make([]byte, n)), nil
}

// parseDigits parses 1..max ASCII digits (no sign, no spaces) as a uint64.
func parseDigits(s string, max int) (uint64, bool) {
	if s == "" || len(s) > max || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

func isSuiteToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return s != ""
}

func isVisible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

// check decides whether c may key a stream under p. The reasons are the 488 reasons the peer sees.
func (c Crypto) check(p Policy) *NegotiationError {
	if !p.allowsSuite(c.Suite) {
		return notAcceptable("crypto suite %s not supported", c.Suite)
	}
	if n := c.Suite.KeyLen() + c.Suite.SaltLen(); len(c.Key) != n {
		return notAcceptable("%s key is %d bytes, want %d", c.Suite, len(c.Key), n)
	}
	if len(c.MKI) > 0 && !p.AllowMKI {
		return notAcceptable("mki not supported")
	}
	if c.Lifetime != 0 && c.Lifetime < MinLifetime {
		return notAcceptable("key lifetime %d below 2^20 packets", c.Lifetime)
	}
	for _, param := range c.Params {
		name, _, _ := strings.Cut(param, "=")
		switch name {
		case "KDR":
			// RFC 4568 §6.3.1 allows KDR=1..24 meaning a rate of 2^n; any KDR asks for periodic
			// re-derivation, which pion/srtp refuses (errNonZeroKDRNotSupported). KDR=0 is outside the
			// grammar and ambiguous (2^0 would be every packet), so it is refused too.
			return notAcceptable("key derivation rate not supported")
		case "UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP":
			return notAcceptable("%s would downgrade protection", name)
		case "FEC_ORDER", "FEC_KEY", "WSH":
			// We send no FEC, so FEC ordering and keys do not apply; WSH is only a hint.
		default:
			if !strings.HasPrefix(name, "-") {
				// RFC 4568 §6.3.7: an unknown parameter not marked "-" makes the attribute unusable.
				return notAcceptable("unknown crypto session parameter %s", name)
			}
		}
	}
	return nil
}
