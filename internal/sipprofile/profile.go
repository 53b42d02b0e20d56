// Package sipprofile owns the SIP profile document: a phone's registrar,
// transport, trusted CA and call policy, delivered to the phone as a signed
// TUF target. Both sides parse it with Parse: the operator's CLI before it
// publishes one, the server before it accepts one, and the agent before it
// starts its SIP stack with one (agent/voip). The SIP password is never
// part of it.
package sipprofile

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// MaxSize bounds a SIP profile document: it arrives as a TUF target, and a
// CA bundle of a few certificates fits well under it.
const MaxSize = 64 << 10

// Transports a profile may name.
const (
	TransportTLS = "tls"
	TransportTCP = "tcp"
	TransportUDP = "udp"
)

// SRTP policies a profile may name.
const (
	SRTPRequired = "required"
	// SRTPOptional accepts plain RTP offers. It exists for lab use with
	// allow_insecure_transport; the default refuses them (488).
	SRTPOptional = "optional"
)

// Suite names a profile may list, as in SDES a=crypto lines.
const (
	SuiteAESCM128SHA180 = "AES_CM_128_HMAC_SHA1_80"
	SuiteAESCM128SHA132 = "AES_CM_128_HMAC_SHA1_32"
	SuiteAEADAES128GCM  = "AEAD_AES_128_GCM"
)

var knownSuites = map[string]bool{SuiteAESCM128SHA180: true, SuiteAESCM128SHA132: true, SuiteAEADAES128GCM: true}

var knownCodecs = map[string]bool{"PCMU": true, "PCMA": true}

// Profile is a phone's SIP profile: where to register, how, and what the
// call policy is. It is delivered as a signed TUF target (a JSON document);
// the SIP password is not part of it.
type Profile struct {
	// Proxy is the registrar and outbound proxy, HOST:PORT. Every request
	// the phone sends goes to it and only requests from it are accepted.
	Proxy string `json:"proxy"`
	// Transport is tls (the default), or tcp/udp when
	// AllowInsecureTransport is set.
	Transport              string `json:"transport,omitempty"`
	AllowInsecureTransport bool   `json:"allow_insecure_transport,omitempty"`
	// Domain is the host part of the phone's address of record.
	Domain string `json:"domain"`
	User   string `json:"user"`
	// AuthUser is the digest user name (default: User).
	AuthUser    string `json:"auth_user,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	// CAPEM holds the PEM certificates the proxy's certificate must chain
	// to (required for tls): the system's roots are not used.
	CAPEM string `json:"ca_pem,omitempty"`
	// SRTP is required (the default) or optional.
	SRTP string `json:"srtp,omitempty"`
	// Suites are the SRTP suites offered and accepted, in preference
	// order (default: all three, AES_CM_128_HMAC_SHA1_80 first).
	Suites []string `json:"suites,omitempty"`
	// Codecs are PCMU and/or PCMA in preference order (default both).
	Codecs []string `json:"codecs,omitempty"`
	// RegisterExpires is the registration lifetime asked for, in seconds
	// (default 600).
	RegisterExpires int `json:"register_expires,omitempty"`
	// KeepAlive is the OPTIONS keep-alive interval to the proxy in seconds
	// (default 30; -1 turns it off).
	KeepAlive int `json:"keepalive,omitempty"`
	// InboundRate limits requests from the proxy that start something new
	// (INVITE, OPTIONS, MESSAGE…) per caller (From address): requests per
	// second and burst (default 5/s, burst 10). All callers together get
	// four times that.
	InboundRate RateLimit `json:"inbound_rate,omitzero"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// ProfileError is a profile that cannot be used; Field names the JSON
// field at fault when there is one.
type ProfileError struct {
	Field  string
	Reason string
}

func (e *ProfileError) Error() string {
	if e.Field == "" {
		return "sip profile: " + e.Reason
	}
	return "sip profile: " + e.Field + ": " + e.Reason
}

// ErrProfile is matched (errors.Is) by every *ProfileError.
var ErrProfile = errors.New("invalid sip profile")

// Is makes errors.Is(err, ErrProfile) true for a *ProfileError.
func (e *ProfileError) Is(target error) bool { return target == ErrProfile }

func bad(field, format string, args ...any) error {
	return &ProfileError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Parse decodes and checks a profile document: unknown fields, trailing
// data and documents over MaxSize are refused, and the defaults are filled
// in.
func Parse(b []byte) (Profile, error) {
	if len(b) > MaxSize {
		return Profile{}, bad("", "larger than %d bytes", MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return Profile{}, &ProfileError{Reason: "decoding: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Profile{}, bad("", "trailing data after the JSON object")
	}
	if err := p.Normalize(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// Normalize fills in the defaults and validates p; Parse calls it, and so
// does the SIP stack for a profile built in code.
func (p *Profile) Normalize() error {
	if p.Transport == "" {
		p.Transport = TransportTLS
	}
	p.Transport = strings.ToLower(p.Transport)
	switch p.Transport {
	case TransportTLS:
	case TransportTCP, TransportUDP:
		if !p.AllowInsecureTransport {
			return bad("transport", "%s carries SIP in the clear: set allow_insecure_transport to use it", p.Transport)
		}
	default:
		return bad("transport", "%q: want tls, tcp or udp", p.Transport)
	}
	host, port, err := net.SplitHostPort(p.Proxy)
	if err != nil || host == "" {
		return bad("proxy", "%q: want HOST:PORT", p.Proxy)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("proxy", "%q: bad port", p.Proxy)
	}
	if !validToken(p.Domain, ".-") {
		return bad("domain", "%q: want a host name or address", p.Domain)
	}
	if !validToken(p.User, ".-_+!~*'()&=$,;?/") {
		return bad("user", "%q: want a SIP user name", p.User)
	}
	if p.AuthUser == "" {
		p.AuthUser = p.User
	}
	if !validToken(p.AuthUser, ".-_+!~*'()&=$,;?/@") {
		return bad("auth_user", "%q: want a user name", p.AuthUser)
	}
	if strings.ContainsAny(p.DisplayName, "\"\\\r\n") || len(p.DisplayName) > 64 {
		return bad("display_name", "quotes, backslashes, line breaks or over 64 bytes")
	}
	if p.Transport == TransportTLS {
		if p.CAPEM == "" {
			return bad("ca_pem", "required with tls: the proxy's certificate is verified against it")
		}
	}
	if p.CAPEM != "" {
		if _, err := p.CertPool(); err != nil {
			return err
		}
	}
	switch p.SRTP {
	case "":
		p.SRTP = SRTPRequired
	case SRTPRequired, SRTPOptional:
	default:
		return bad("srtp", "%q: want required or optional", p.SRTP)
	}
	if len(p.Suites) == 0 {
		p.Suites = []string{SuiteAESCM128SHA180, SuiteAEADAES128GCM, SuiteAESCM128SHA132}
	}
	if err := checkList("suites", p.Suites, knownSuites); err != nil {
		return err
	}
	if len(p.Codecs) == 0 {
		p.Codecs = []string{"PCMU", "PCMA"}
	}
	if err := checkList("codecs", p.Codecs, knownCodecs); err != nil {
		return err
	}
	switch {
	case p.RegisterExpires == 0:
		p.RegisterExpires = 600
	case p.RegisterExpires < 10 || p.RegisterExpires > 86400:
		return bad("register_expires", "%d: want 10 to 86400 seconds", p.RegisterExpires)
	}
	switch {
	case p.KeepAlive == 0:
		p.KeepAlive = 30
	case p.KeepAlive == -1:
	case p.KeepAlive < 1 || p.KeepAlive > 3600:
		return bad("keepalive", "%d: want 1 to 3600 seconds, or -1 for none", p.KeepAlive)
	}
	if p.InboundRate == (RateLimit{}) {
		p.InboundRate = RateLimit{PerSecond: 5, Burst: 10}
	}
	if p.InboundRate.PerSecond <= 0 || p.InboundRate.PerSecond > 10000 || p.InboundRate.Burst < 1 || p.InboundRate.Burst > 100000 {
		return bad("inbound_rate", "want per_second in (0, 10000] and burst in [1, 100000]")
	}
	return nil
}

func checkList(field string, list []string, known map[string]bool) error {
	seen := map[string]bool{}
	for _, s := range list {
		if !known[s] {
			return bad(field, "unknown %q", s)
		}
		if seen[s] {
			return bad(field, "%q listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// validToken reports whether s is 1 to 128 bytes of letters, digits and
// the extra punctuation: what may go into a SIP URI without escaping.
func validToken(s, extra string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.ContainsRune(extra, c):
		default:
			return false
		}
	}
	return true
}

// CertPool parses CAPEM: every PEM block must be a certificate.
func (p *Profile) CertPool() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := []byte(p.CAPEM)
	n := 0
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, bad("ca_pem", "holds a %q block; want only certificates", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, bad("ca_pem", "certificate %d: %v", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, bad("ca_pem", "no PEM certificate")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, bad("ca_pem", "data after the last certificate")
	}
	return pool, nil
}

// ProxyHost is the host part of Proxy: the name its certificate must carry.
func (p *Profile) ProxyHost() string {
	h, _, _ := net.SplitHostPort(p.Proxy)
	return h
}
