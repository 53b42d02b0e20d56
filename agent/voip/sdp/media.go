package sdp

import (
	"net/netip"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// Codec is an RTP payload format. The phone speaks G.711 only.
type Codec struct {
	Name string
	PT   uint8
	Rate int
}

// The G.711 codecs, on their static payload types (RFC 3551).
var (
	PCMU = Codec{"PCMU", 0, 8000}
	PCMA = Codec{"PCMA", 8, 8000}
)

// Direction is an SDP media direction attribute (RFC 3264 §5.1).
type Direction string

// The four directions.
const (
	SendRecv Direction = "sendrecv"
	SendOnly Direction = "sendonly"
	RecvOnly Direction = "recvonly"
	Inactive Direction = "inactive"
)

const (
	dirSend = 1 << iota
	dirRecv
)

func (d Direction) bits() int {
	switch d {
	case SendRecv, "":
		return dirSend | dirRecv
	case SendOnly:
		return dirSend
	case RecvOnly:
		return dirRecv
	}
	return 0
}

func directionOf(b int) Direction {
	switch b & (dirSend | dirRecv) {
	case dirSend | dirRecv:
		return SendRecv
	case dirSend:
		return SendOnly
	case dirRecv:
		return RecvOnly
	}
	return Inactive
}

// reverse is the direction seen from the other end: what one sends, the other receives.
func reverse(b int) int {
	r := 0
	if b&dirSend != 0 {
		r |= dirRecv
	}
	if b&dirRecv != 0 {
		r |= dirSend
	}
	return r
}

func (d Direction) valid() bool {
	switch d {
	case SendRecv, SendOnly, RecvOnly, Inactive:
		return true
	}
	return false
}

// Transport protocols on the m= line.
const (
	ProtoSAVP = "RTP/SAVP"
	ProtoAVP  = "RTP/AVP"
)

// DefaultPtime is the packetisation we ask for and assume when the peer says nothing.
const DefaultPtime = 20

// Media is one side's audio description.
type Media struct {
	RTP       netip.AddrPort // connection address + m= port
	RTCP      netip.AddrPort // a=rtcp if present, else RTP port+1
	Proto     string         // "RTP/SAVP" or "RTP/AVP"
	Codecs    []Codec
	Cryptos   []Crypto
	Direction Direction
	Ptime     int // ms, 0 = absent (default 20)
}

// remoteMedia is one parsed m= section of a peer's SDP. Crypto attributes stay as text because each is
// judged on its own: one we cannot use must not spoil the others.
type remoteMedia struct {
	Media
	rejected bool // port 0
	cryptos  []string
}

// parseMedia reads an m= section; sd supplies session-level defaults for c= and direction.
func parseMedia(sd *psdp.SessionDescription, md *psdp.MediaDescription) (remoteMedia, *NegotiationError) {
	var rm remoteMedia
	rm.Proto = strings.Join(md.MediaName.Protos, "/")
	port := md.MediaName.Port.Value
	if port == 0 {
		rm.rejected = true
		return rm, nil
	}
	if port < 0 || port > 65535 {
		return rm, malformed("m= port %d out of range", port)
	}
	if r := md.MediaName.Port.Range; r != nil && *r != 1 {
		return rm, notAcceptable("m= port ranges not supported")
	}
	ci := md.ConnectionInformation
	if ci == nil {
		ci = sd.ConnectionInformation
	}
	if ci == nil {
		return rm, malformed("no c= line for media")
	}
	addr, nerr := parseConnAddr(ci)
	if nerr != nil {
		return rm, nerr
	}
	rm.RTP = netip.AddrPortFrom(addr, uint16(port))
	if port == 65535 {
		return rm, malformed("m= port 65535 leaves no rtcp port")
	}
	rm.RTCP = netip.AddrPortFrom(addr, uint16(port)+1)

	rtpmaps := map[uint8]Codec{}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			if c, ok := parseRtpmap(a.Value); ok {
				if _, dup := rtpmaps[c.PT]; !dup {
					rtpmaps[c.PT] = c
				}
			}
		case "crypto":
			rm.cryptos = append(rm.cryptos, a.Value)
		case "rtcp":
			rtcp, nerr := parseRTCP(a.Value, addr)
			if nerr != nil {
				return rm, nerr
			}
			rm.RTCP = rtcp
		case "ptime":
			if rm.Ptime == 0 {
				rm.Ptime = parsePtime(a.Value)
			}
		case "sendrecv", "sendonly", "recvonly", "inactive":
			if rm.Direction == "" {
				rm.Direction = Direction(a.Key)
			}
		}
	}
	if rm.Direction == "" {
		for _, a := range sd.Attributes {
			if d := Direction(a.Key); d.valid() {
				rm.Direction = d
				break
			}
		}
	}
	if rm.Direction == "" {
		rm.Direction = SendRecv
	}
	for _, f := range md.MediaName.Formats {
		n, ok := parseDigits(f, 3)
		if !ok || n > 127 {
			return rm, malformed("rtp payload type %q not in 0..127", f)
		}
		pt := uint8(n)
		c, ok := rtpmaps[pt]
		if !ok {
			c, ok = staticCodec(pt)
		}
		if ok {
			rm.Codecs = append(rm.Codecs, c)
		}
	}
	return rm, nil
}

// parseConnAddr reads c=. Only unicast IP literals are usable: we resolve no names and join no groups.
func parseConnAddr(ci *psdp.ConnectionInformation) (netip.Addr, *NegotiationError) {
	if ci.Address == nil || ci.Address.Address == "" {
		return netip.Addr{}, malformed("c= line has no address")
	}
	s := ci.Address.Address
	if strings.Contains(s, "/") {
		return netip.Addr{}, notAcceptable("multicast connection address not supported")
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, notAcceptable("connection address %.64q is not an ip literal", s)
	}
	if addr.Zone() != "" {
		return netip.Addr{}, malformed("connection address has a zone")
	}
	switch ci.AddressType {
	case "IP4":
		if !addr.Is4() {
			return netip.Addr{}, malformed("c= IP4 with address %s", addr)
		}
	case "IP6":
		if !addr.Is6() {
			return netip.Addr{}, malformed("c= IP6 with address %s", addr)
		}
	}
	if addr.IsMulticast() {
		return netip.Addr{}, notAcceptable("multicast connection address not supported")
	}
	return addr, nil
}

// parseRtpmap reads "<pt> <name>/<rate>[/<channels>]". Entries that do not parse are ignored rather
// than refused: they describe formats we would not pick anyway.
func parseRtpmap(v string) (Codec, bool) {
	ptS, enc, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return Codec{}, false
	}
	pt, ok := parseDigits(ptS, 3)
	if !ok || pt > 127 {
		return Codec{}, false
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return Codec{}, false
	}
	rate, ok := parseDigits(parts[1], 9)
	if !ok || rate == 0 {
		return Codec{}, false
	}
	if len(parts) == 3 && parts[2] != "1" {
		return Codec{}, false // G.711 is mono; a stereo PCMU is not the codec we speak
	}
	return Codec{Name: parts[0], PT: uint8(pt), Rate: int(rate)}, true
}

func staticCodec(pt uint8) (Codec, bool) {
	switch pt {
	case PCMU.PT:
		return PCMU, true
	case PCMA.PT:
		return PCMA, true
	}
	return Codec{}, false
}

// parseRTCP reads "a=rtcp:<port> [IN IP4|IP6 <addr>]" (RFC 3605).
func parseRTCP(v string, def netip.Addr) (netip.AddrPort, *NegotiationError) {
	f := strings.Fields(v)
	if len(f) == 0 {
		return netip.AddrPort{}, malformed("empty a=rtcp")
	}
	p, ok := parseDigits(f[0], 5)
	if !ok || p == 0 || p > 65535 {
		return netip.AddrPort{}, malformed("a=rtcp port %.16q out of range", f[0])
	}
	addr := def
	switch len(f) {
	case 1:
	case 4:
		if f[1] != "IN" {
			return netip.AddrPort{}, malformed("a=rtcp network type %.16q", f[1])
		}
		a, nerr := parseConnAddr(&psdp.ConnectionInformation{NetworkType: f[1], AddressType: f[2], Address: &psdp.Address{Address: f[3]}})
		if nerr != nil {
			return netip.AddrPort{}, nerr
		}
		if f[2] != "IP4" && f[2] != "IP6" {
			return netip.AddrPort{}, malformed("a=rtcp address type %.16q", f[2])
		}
		addr = a
	default:
		return netip.AddrPort{}, malformed("a=rtcp has %d fields", len(f))
	}
	return netip.AddrPortFrom(addr, uint16(p)), nil
}

// parsePtime reads a=ptime; values outside 10..120 ms, or unreadable, count as absent.
func parsePtime(v string) int {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '.'); i >= 0 {
		v = v[:i] // "20.0" is seen in the wild
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 10 || n > 120 {
		return 0
	}
	return n
}
