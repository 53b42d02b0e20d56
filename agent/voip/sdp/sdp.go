// Package sdp owns the phone's SDP offer/answer (RFC 3264) for one audio stream: G.711 over SRTP keyed
// with SDES a=crypto attributes (RFC 4568, RFC 7714 §12 for AEAD_AES_128_GCM). It decides what the
// phone accepts — by default SRTP is mandatory and a plain-RTP offer is refused with 488, never
// downgraded — and hands the media layer the negotiated addresses, codec, suite and keys. The SDP
// grammar itself is github.com/pion/sdp/v3; SIP transport and media are other packages' business.
package sdp

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	psdp "github.com/pion/sdp/v3"
)

// MaxSize bounds an SDP body we parse. Real single-stream audio SDP is well under 2 KiB.
const MaxSize = 16 << 10

// ErrLocal reports an unusable local media description passed to Offer or Answer: our own
// configuration, not the peer's fault (the SIP layer answers 500, not 488).
var ErrLocal = errors.New("invalid local media")

// Policy is what the phone accepts. RequireSRTP is true by default in the phone: an offer without
// acceptable crypto is refused (488), never downgraded to plain RTP. Use DefaultPolicy; the zero
// Policy allows plain RTP.
type Policy struct {
	RequireSRTP bool
	Suites      []Suite // acceptable suites in preference order; empty means DefaultSuites
	Codecs      []Codec // acceptable codecs in preference order; empty means PCMU, PCMA
	// AllowMKI accepts a peer key carrying an MKI and reports it in Negotiated.RemoteMKI. pion/srtp
	// v2.0.20 can decrypt MKI-tagged packets (srtp.MasterKeyIndicator), but only if the media layer
	// passes the MKI on, so it is off unless that layer asks for it.
	AllowMKI bool
}

// DefaultPolicy is the phone's policy: SRTP mandatory, DefaultSuites, PCMU then PCMA.
func DefaultPolicy() Policy {
	return Policy{RequireSRTP: true, Suites: slices.Clone(DefaultSuites), Codecs: []Codec{PCMU, PCMA}}
}

func (p Policy) suites() []Suite {
	if len(p.Suites) == 0 {
		return DefaultSuites
	}
	return p.Suites
}

func (p Policy) codecs() []Codec {
	if len(p.Codecs) == 0 {
		return []Codec{PCMU, PCMA}
	}
	return p.Codecs
}

func (p Policy) allowsSuite(s Suite) bool {
	if _, ok := s.Profile(); !ok {
		return false
	}
	return slices.Contains(p.suites(), s)
}

// Negotiated is the outcome of an offer/answer exchange: what the media layer needs to run the call.
type Negotiated struct {
	Local, Remote         netip.AddrPort // RTP
	LocalRTCP, RemoteRTCP netip.AddrPort
	Codec                 Codec // with the payload type to put in our RTP headers
	Suite                 Suite
	LocalKey              []byte    // our master key||salt (we protect with it)
	RemoteKey             []byte    // their master key||salt (we unprotect with it)
	Direction             Direction // OUR direction after negotiation
	Ptime                 int       // ms we send per packet: the peer's a=ptime, else 20
	SRTP                  bool      // false only when policy allowed plain RTP and it was chosen
	// RemoteMKI is the MKI on the peer's packets (for srtp.MasterKeyIndicator); nil unless
	// Policy.AllowMKI let a key with one through. We never send an MKI.
	RemoteMKI []byte
}

// Session is the state kept across offer/answer and re-INVITEs: our o= line, whose version goes up
// by one each time what we send changes (RFC 3264 §8) and stays put when it does not (RFC 4028
// refreshes). It is safe for concurrent use.
type Session struct {
	mu      sync.Mutex
	user    string
	id      uint64
	version uint64
	last    []byte // last SDP we produced
}

// NewSession starts our side of a dialog's SDP. user is the o= username ("-" when empty or not a
// token). rand (crypto/rand when nil) seeds the session id; it needs uniqueness, not secrecy, so a
// failing reader falls back to the clock.
func NewSession(user string, rand io.Reader) *Session {
	if rand == nil {
		rand = crand.Reader
	}
	var b [8]byte
	var id uint64
	if _, err := io.ReadFull(rand, b[:]); err == nil {
		id = binary.BigEndian.Uint64(b[:])
	} else {
		id = uint64(time.Now().UnixNano())
	}
	// Below 2^62 so peers that read sess-id into a signed 64-bit field (several do) can also add one.
	id &= 1<<62 - 1
	if !isVisible(user) {
		user = "-"
	}
	return &Session{user: user, id: id, version: id}
}

// Offer makes an offer for local (Cryptos filled by caller via NewCrypto, one per suite offered).
// Proto defaults to RTP/SAVP, Direction to sendrecv, Ptime to 20.
func (s *Session) Offer(local Media) ([]byte, error) {
	local, err := normaliseLocal(local)
	if err != nil {
		return nil, err
	}
	md := &psdp.MediaDescription{MediaName: psdp.MediaName{
		Media:  "audio",
		Port:   psdp.RangedPort{Value: int(local.RTP.Port())},
		Protos: strings.Split(local.Proto, "/"),
	}}
	for _, c := range local.Codecs {
		md.MediaName.Formats = append(md.MediaName.Formats, strconv.Itoa(int(c.PT)))
	}
	for _, c := range local.Codecs {
		md.Attributes = append(md.Attributes, psdp.NewAttribute("rtpmap", fmt.Sprintf("%d %s/%d", c.PT, c.Name, c.Rate)))
	}
	addMediaAttrs(md, local)
	return s.marshal(local.RTP.Addr(), nil, []*psdp.MediaDescription{md})
}

// normaliseLocal fills defaults and checks our own description.
func normaliseLocal(m Media) (Media, error) {
	if !m.RTP.IsValid() || m.RTP.Port() == 0 || m.RTP.Port() == 65535 || m.RTP.Addr().IsUnspecified() {
		return m, fmt.Errorf("%w: rtp address %v", ErrLocal, m.RTP)
	}
	m.RTP = netip.AddrPortFrom(m.RTP.Addr().Unmap(), m.RTP.Port())
	if m.RTP.Addr().Zone() != "" {
		return m, fmt.Errorf("%w: rtp address %v has a zone", ErrLocal, m.RTP)
	}
	if m.RTCP.IsValid() {
		m.RTCP = netip.AddrPortFrom(m.RTCP.Addr().Unmap(), m.RTCP.Port())
		if m.RTCP.Port() == 0 || m.RTCP.Addr().Is4() != m.RTP.Addr().Is4() {
			return m, fmt.Errorf("%w: rtcp address %v", ErrLocal, m.RTCP)
		}
	} else {
		m.RTCP = netip.AddrPortFrom(m.RTP.Addr(), m.RTP.Port()+1)
	}
	switch m.Proto {
	case "":
		m.Proto = ProtoSAVP
	case ProtoSAVP, ProtoAVP:
	default:
		return m, fmt.Errorf("%w: proto %q", ErrLocal, m.Proto)
	}
	if m.Proto == ProtoSAVP && len(m.Cryptos) == 0 {
		return m, fmt.Errorf("%w: RTP/SAVP without crypto", ErrLocal)
	}
	tags := map[int]bool{}
	for _, c := range m.Cryptos {
		if n := c.Suite.KeyLen() + c.Suite.SaltLen(); n == 0 || len(c.Key) != n {
			return m, fmt.Errorf("%w: crypto %d: suite %q with %d-byte key", ErrLocal, c.Tag, c.Suite, len(c.Key))
		}
		if c.Tag < 0 || c.Tag > maxTag || tags[c.Tag] {
			return m, fmt.Errorf("%w: crypto tag %d out of range or repeated", ErrLocal, c.Tag)
		}
		for _, p := range c.Params {
			if !isVisible(p) {
				return m, fmt.Errorf("%w: crypto %d: session parameter %q", ErrLocal, c.Tag, p)
			}
		}
		tags[c.Tag] = true
	}
	if len(m.Codecs) == 0 {
		return m, fmt.Errorf("%w: no codecs", ErrLocal)
	}
	for _, c := range m.Codecs {
		if c.PT > 127 || c.Rate <= 0 || !isSuiteToken(c.Name) {
			return m, fmt.Errorf("%w: codec %+v", ErrLocal, c)
		}
	}
	switch {
	case m.Direction == "":
		m.Direction = SendRecv
	case !m.Direction.valid():
		return m, fmt.Errorf("%w: direction %q", ErrLocal, m.Direction)
	}
	if m.Ptime == 0 {
		m.Ptime = DefaultPtime
	}
	if m.Ptime < 10 || m.Ptime > 120 {
		return m, fmt.Errorf("%w: ptime %d", ErrLocal, m.Ptime)
	}
	return m, nil
}

// addMediaAttrs adds what follows the rtpmaps: a=rtcp when not the default, ptime, direction, crypto.
func addMediaAttrs(md *psdp.MediaDescription, m Media) {
	if m.RTCP.Addr() != m.RTP.Addr() {
		md.Attributes = append(md.Attributes, psdp.NewAttribute("rtcp",
			fmt.Sprintf("%d IN %s %s", m.RTCP.Port(), addrType(m.RTCP.Addr()), m.RTCP.Addr())))
	} else if m.RTCP.Port() != m.RTP.Port()+1 {
		md.Attributes = append(md.Attributes, psdp.NewAttribute("rtcp", strconv.Itoa(int(m.RTCP.Port()))))
	}
	md.Attributes = append(md.Attributes,
		psdp.NewAttribute("ptime", strconv.Itoa(m.Ptime)),
		psdp.NewPropertyAttribute(string(m.Direction)))
	for _, c := range m.Cryptos {
		md.Attributes = append(md.Attributes, psdp.NewAttribute("crypto", c.String()))
	}
}

func addrType(a netip.Addr) string {
	if a.Is4() {
		return "IP4"
	}
	return "IP6"
}

// marshal wraps media sections in our session level and applies the o= version rule.
func (s *Session) marshal(addr netip.Addr, timing *psdp.Timing, mds []*psdp.MediaDescription) ([]byte, error) {
	if timing == nil {
		timing = &psdp.Timing{}
	}
	build := func(version uint64) ([]byte, error) {
		sd := &psdp.SessionDescription{
			Origin: psdp.Origin{
				Username: s.user, SessionID: s.id, SessionVersion: version,
				NetworkType: "IN", AddressType: addrType(addr), UnicastAddress: addr.String(),
			},
			SessionName: "-",
			ConnectionInformation: &psdp.ConnectionInformation{
				NetworkType: "IN", AddressType: addrType(addr), Address: &psdp.Address{Address: addr.String()},
			},
			TimeDescriptions:  []psdp.TimeDescription{{Timing: *timing}},
			MediaDescriptions: mds,
		}
		return sd.Marshal()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := build(s.version)
	if err != nil {
		return nil, fmt.Errorf("marshalling sdp: %w", err)
	}
	if s.last != nil && bytes.Equal(b, s.last) {
		return b, nil
	}
	if s.last != nil {
		s.version++
		if b, err = build(s.version); err != nil {
			return nil, fmt.Errorf("marshalling sdp: %w", err)
		}
	}
	s.last = b
	return b, nil
}

// parse bounds and parses a peer's SDP.
func parse(b []byte) (*psdp.SessionDescription, *NegotiationError) {
	if len(b) > MaxSize {
		return nil, malformed("sdp larger than %d bytes", MaxSize)
	}
	if len(b) == 0 {
		return nil, malformed("empty sdp")
	}
	if b[len(b)-1] != '\n' {
		// pion wants every line terminated; a missing final CRLF is common and harmless.
		b = append(slices.Clip(b), '\r', '\n')
	}
	sd := &psdp.SessionDescription{}
	if err := sd.Unmarshal(b); err != nil {
		return nil, &NegotiationError{Status: StatusBadRequest, Reason: "sdp syntax", cause: err}
	}
	if sd.Version != 0 {
		return nil, malformed("sdp version %d", sd.Version)
	}
	return sd, nil
}

// Answer answers a remote offer: picks the first codec in policy order the offer has, the first
// offered crypto whose suite is in policy (offer order, RFC 4568 §7.1), makes a fresh local key of the
// same suite with the same tag, answers direction per RFC 3264 (sendonly→recvonly, etc.).
//
// The first audio stream that negotiates is accepted; every other m= line is answered with port 0, as
// RFC 3264 §6 requires. An RTP/AVP stream that carries acceptable a=crypto (best-effort SRTP, as
// baresip's "srtp" and FreeSWITCH's optional mode offer) is answered in kind and runs SRTP. rand
// (crypto/rand when nil) supplies our key.
func (s *Session) Answer(offer []byte, local netip.AddrPort, p Policy, rand io.Reader) (answer []byte, n Negotiated, err error) {
	if !local.IsValid() || local.Port() == 0 || local.Port() == 65535 || local.Addr().Zone() != "" || local.Addr().IsUnspecified() {
		return nil, Negotiated{}, fmt.Errorf("%w: rtp address %v", ErrLocal, local)
	}
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	sd, nerr := parse(offer)
	if nerr != nil {
		return nil, Negotiated{}, nerr
	}
	chosen := -1
	var firstErr *NegotiationError
	var mine Media
	for i, md := range sd.MediaDescriptions {
		if md.MediaName.Media != "audio" {
			continue
		}
		rm, nerr := parseMedia(sd, md)
		if nerr == nil && rm.rejected {
			continue
		}
		var err error
		if nerr != nil {
			err = nerr // a typed nil must not become a non-nil error
		} else {
			n, mine, err = answerMedia(rm, local, p, rand)
		}
		if err == nil {
			chosen = i
			break
		}
		if !errors.As(err, &nerr) || nerr.Status == StatusBadRequest {
			return nil, Negotiated{}, err
		}
		if firstErr == nil {
			firstErr = nerr
		}
	}
	if chosen < 0 {
		if firstErr != nil {
			return nil, Negotiated{}, firstErr
		}
		return nil, Negotiated{}, notAcceptable("no active audio stream offered")
	}
	mds := make([]*psdp.MediaDescription, len(sd.MediaDescriptions))
	for i, md := range sd.MediaDescriptions {
		if i != chosen {
			mds[i] = &psdp.MediaDescription{MediaName: psdp.MediaName{
				Media: md.MediaName.Media, Port: psdp.RangedPort{Value: 0},
				Protos: md.MediaName.Protos, Formats: md.MediaName.Formats,
			}}
			continue
		}
		c := n.Codec
		a := &psdp.MediaDescription{MediaName: psdp.MediaName{
			Media: "audio", Port: psdp.RangedPort{Value: int(local.Port())},
			Protos: md.MediaName.Protos, Formats: []string{strconv.Itoa(int(c.PT))},
		}}
		a.Attributes = append(a.Attributes, psdp.NewAttribute("rtpmap", fmt.Sprintf("%d %s/%d", c.PT, c.Name, c.Rate)))
		addMediaAttrs(a, mine)
		mds[i] = a
	}
	var timing *psdp.Timing
	if len(sd.TimeDescriptions) > 0 {
		timing = &sd.TimeDescriptions[0].Timing // RFC 3264 §6: the answer's t= equals the offer's
	}
	answer, err = s.marshal(local.Addr(), timing, mds)
	if err != nil {
		return nil, Negotiated{}, err
	}
	return answer, n, nil
}

// answerMedia negotiates one offered audio stream. mine is our side of it, for the answer SDP.
// Errors other than *NegotiationError are ours (the random source failed).
func answerMedia(rm remoteMedia, local netip.AddrPort, p Policy, rand io.Reader) (Negotiated, Media, error) {
	var n Negotiated
	switch rm.Proto {
	case ProtoSAVP:
		n.SRTP = true
	case ProtoAVP:
		n.SRTP = len(rm.cryptos) > 0 // best effort: SRTP if we can agree on a key
	default:
		return n, Media{}, notAcceptable("transport %.32s not supported", rm.Proto)
	}
	if rm.Proto == ProtoAVP && !n.SRTP && p.RequireSRTP {
		return n, Media{}, notAcceptable("plain RTP offered, SRTP required")
	}

	codec, ok := pickCodec(p.codecs(), rm.Codecs)
	if !ok {
		return n, Media{}, notAcceptable("no common codec")
	}
	n.Codec = codec

	mine := Media{RTP: local, RTCP: netip.AddrPortFrom(local.Addr(), local.Port()+1), Proto: rm.Proto, Codecs: []Codec{codec}, Ptime: DefaultPtime}
	if n.SRTP {
		theirs, nerr := pickCrypto(rm.cryptos, p)
		if nerr != nil && (rm.Proto == ProtoSAVP || p.RequireSRTP || nerr.Status == StatusBadRequest) {
			return n, Media{}, nerr
		}
		if nerr == nil {
			ours, err := NewCrypto(theirs.Tag, theirs.Suite, rand)
			if err != nil {
				return n, Media{}, err
			}
			n.Suite, n.LocalKey, n.RemoteKey = theirs.Suite, ours.Key, theirs.Key
			if len(theirs.MKI) > 0 {
				n.RemoteMKI = theirs.MKI
			}
			mine.Cryptos = []Crypto{ours}
		} else {
			n.SRTP = false // best-effort offer, plain RTP allowed by policy
		}
	}

	offered := rm.Direction.bits()
	if rm.RTP.Addr().IsUnspecified() {
		offered &^= dirRecv // RFC 3264 §8.4: c=0.0.0.0 is the old way of saying "do not send to me"
	}
	n.Direction = directionOf(reverse(offered))
	mine.Direction = n.Direction
	n.Local, n.LocalRTCP = local, mine.RTCP
	n.Remote, n.RemoteRTCP = rm.RTP, rm.RTCP
	n.Ptime = rm.Ptime
	if n.Ptime == 0 {
		n.Ptime = DefaultPtime
	}
	return n, mine, nil
}

// pickCodec returns the first codec in preference order that the peer listed, with the peer's PT.
func pickCodec(pref, offered []Codec) (Codec, bool) {
	for _, want := range pref {
		for _, c := range offered {
			if strings.EqualFold(c.Name, want.Name) && c.Rate == want.Rate {
				return Codec{Name: want.Name, PT: c.PT, Rate: c.Rate}, true
			}
		}
	}
	return Codec{}, false
}

// pickCrypto returns the first offered crypto attribute usable under p (RFC 4568 §7.1.1: the
// answerer takes the offerer's preference). Attributes with suites outside the policy are skipped
// unparsed, so an unknown suite with an unknown key format spoils nothing.
func pickCrypto(attrs []string, p Policy) (Crypto, *NegotiationError) {
	if len(attrs) == 0 {
		return Crypto{}, notAcceptable("no a=crypto in SRTP offer")
	}
	var first *NegotiationError
	for _, a := range attrs {
		f := strings.Fields(a)
		if len(f) >= 2 && !p.allowsSuite(Suite(f[1])) {
			if first == nil {
				first = notAcceptable("crypto suite %.40s not supported", f[1])
			}
			continue
		}
		c, err := ParseCrypto(a)
		if err == nil {
			if nerr := c.check(p); nerr != nil {
				err = nerr
			}
		}
		if err == nil {
			return c, nil
		}
		var nerr *NegotiationError
		errors.As(err, &nerr)
		if nerr.Status == StatusBadRequest {
			return Crypto{}, nerr
		}
		// An unusable attribute from a suite we support says more than "unsupported suite".
		if first == nil || strings.HasPrefix(first.Reason, "crypto suite ") {
			first = nerr
		}
	}
	return Crypto{}, first
}

// Accept processes the answer to our offer (offered is what Offer was given).
func (s *Session) Accept(answer []byte, offered Media, p Policy) (Negotiated, error) {
	offered, err := normaliseLocal(offered)
	if err != nil {
		return Negotiated{}, err
	}
	sd, nerr := parse(answer)
	if nerr != nil {
		return Negotiated{}, nerr
	}
	var md *psdp.MediaDescription
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media == "audio" {
			md = m
			break
		}
	}
	if md == nil {
		return Negotiated{}, malformed("answer has no audio stream")
	}
	rm, nerr := parseMedia(sd, md)
	if nerr != nil {
		return Negotiated{}, nerr
	}
	if rm.rejected {
		return Negotiated{}, notAcceptable("audio stream rejected by peer")
	}
	if rm.Proto != offered.Proto {
		return Negotiated{}, notAcceptable("answer transport %.32s differs from offered %s", rm.Proto, offered.Proto)
	}
	n := Negotiated{Local: offered.RTP, LocalRTCP: offered.RTCP, Remote: rm.RTP, RemoteRTCP: rm.RTCP}

	// The answer lists what it accepts from our offer; its first format is what it will send.
	for _, c := range rm.Codecs {
		if i := slices.IndexFunc(offered.Codecs, func(o Codec) bool { return o.PT == c.PT }); i >= 0 {
			if _, ok := pickCodec(p.codecs(), []Codec{offered.Codecs[i]}); ok {
				n.Codec = offered.Codecs[i]
				break
			}
		}
	}
	if n.Codec.Name == "" {
		return Negotiated{}, notAcceptable("no common codec")
	}

	switch {
	case len(rm.cryptos) > 0:
		// RFC 4568 §7.1.2: exactly one attribute, carrying the tag of the offered one it accepts.
		if len(rm.cryptos) > 1 {
			return Negotiated{}, notAcceptable("answer has %d crypto attributes, want 1", len(rm.cryptos))
		}
		c, err := ParseCrypto(rm.cryptos[0])
		if err != nil {
			return Negotiated{}, err
		}
		i := slices.IndexFunc(offered.Cryptos, func(o Crypto) bool { return o.Tag == c.Tag })
		if i < 0 {
			return Negotiated{}, notAcceptable("answer crypto tag %d was not offered", c.Tag)
		}
		if offered.Cryptos[i].Suite != c.Suite {
			return Negotiated{}, notAcceptable("answer crypto tag %d changes suite to %s", c.Tag, c.Suite)
		}
		if nerr := c.check(p); nerr != nil {
			return Negotiated{}, nerr
		}
		n.SRTP, n.Suite = true, c.Suite
		n.LocalKey, n.RemoteKey = offered.Cryptos[i].Key, c.Key
		if len(c.MKI) > 0 {
			n.RemoteMKI = c.MKI
		}
	case offered.Proto == ProtoSAVP:
		return Negotiated{}, notAcceptable("no a=crypto in SRTP answer")
	case p.RequireSRTP:
		return Negotiated{}, notAcceptable("plain RTP answered, SRTP required")
	}

	answered := rm.Direction.bits()
	if rm.RTP.Addr().IsUnspecified() {
		answered &^= dirRecv
	}
	n.Direction = directionOf(offered.Direction.bits() & reverse(answered))
	n.Ptime = rm.Ptime
	if n.Ptime == 0 {
		n.Ptime = DefaultPtime
	}
	return n, nil
}
