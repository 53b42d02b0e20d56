package voip

import (
	"crypto/x509"

	"github.com/dialtone-dev/dialtone/internal/sipprofile"
)

// The profile document lives in internal/sipprofile, so that the server and
// the operator's CLI check a profile with the parser the phone uses before
// they publish it. These names keep voip's API as it was.

// MaxProfileSize bounds a SIP profile document.
const MaxProfileSize = sipprofile.MaxSize

// Transports a profile may name.
const (
	TransportTLS = sipprofile.TransportTLS
	TransportTCP = sipprofile.TransportTCP
	TransportUDP = sipprofile.TransportUDP
)

// SRTP policies a profile may name.
const (
	SRTPRequired = sipprofile.SRTPRequired
	SRTPOptional = sipprofile.SRTPOptional
)

// Suite names a profile may list, as in SDES a=crypto lines.
const (
	SuiteAESCM128SHA180 = sipprofile.SuiteAESCM128SHA180
	SuiteAESCM128SHA132 = sipprofile.SuiteAESCM128SHA132
	SuiteAEADAES128GCM  = sipprofile.SuiteAEADAES128GCM
)

// Profile is a phone's SIP profile (sipprofile.Profile). It is a defined
// type rather than an alias so that the phone keeps its unexported helpers
// on it; the two convert freely: voip.Profile(p).
type Profile sipprofile.Profile

// RateLimit is a token bucket.
type RateLimit = sipprofile.RateLimit

// ProfileError is a profile that cannot be used.
type ProfileError = sipprofile.ProfileError

// ErrProfile is matched (errors.Is) by every *ProfileError.
var ErrProfile = sipprofile.ErrProfile

// ParseProfile decodes and checks a profile document (sipprofile.Parse).
func ParseProfile(b []byte) (Profile, error) {
	p, err := sipprofile.Parse(b)
	return Profile(p), err
}

func (p *Profile) normalize() error { return (*sipprofile.Profile)(p).Normalize() }

func (p *Profile) certPool() (*x509.CertPool, error) { return (*sipprofile.Profile)(p).CertPool() }

func (p *Profile) proxyHost() string { return (*sipprofile.Profile)(p).ProxyHost() }
