package sippeer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Packet is a TCP or UDP packet from a capture.
type Packet struct {
	Proto    string // "tcp" or "udp"
	Src, Dst netip.AddrPort
	Payload  []byte
}

const (
	linkEthernet = 1   // DLT_EN10MB, what Linux "lo" captures as
	linkNull     = 0   // BSD loopback
	linkRaw      = 101 // raw IP
	linkSLL      = 113 // Linux cooked
)

// ReadPcap reads a classic pcap file of at most max bytes and returns its
// IPv4/IPv6 TCP and UDP packets; other packets are skipped.
func ReadPcap(r io.Reader, max int64) ([]Packet, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading pcap: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("pcap larger than %d bytes", max)
	}
	if len(b) < 24 {
		return nil, errors.New("pcap: short file header")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, errors.New("pcap: bad magic (pcapng is not supported)")
	}
	link := bo.Uint32(b[20:]) & 0xffff
	var pkts []Packet
	for p := 24; p < len(b); {
		if len(b)-p < 16 {
			return pkts, errors.New("pcap: truncated record header")
		}
		n := int(bo.Uint32(b[p+8:]))
		p += 16
		if n < 0 || n > len(b)-p {
			// The writer was stopped mid-record.
			return pkts, nil
		}
		if pkt, ok := decodeFrame(link, b[p:p+n]); ok {
			pkts = append(pkts, pkt)
		}
		p += n
	}
	return pkts, nil
}

func decodeFrame(link uint32, f []byte) (Packet, bool) {
	var etype uint16
	switch link {
	case linkEthernet:
		if len(f) < 14 {
			return Packet{}, false
		}
		etype, f = binary.BigEndian.Uint16(f[12:]), f[14:]
		for etype == 0x8100 && len(f) >= 4 { // VLAN
			etype, f = binary.BigEndian.Uint16(f[2:]), f[4:]
		}
	case linkSLL:
		if len(f) < 16 {
			return Packet{}, false
		}
		etype, f = binary.BigEndian.Uint16(f[14:]), f[16:]
	case linkNull:
		if len(f) < 4 {
			return Packet{}, false
		}
		f = f[4:]
	case linkRaw:
	default:
		return Packet{}, false
	}
	if etype == 0 && len(f) > 0 {
		switch f[0] >> 4 {
		case 4:
			etype = 0x0800
		case 6:
			etype = 0x86dd
		}
	}
	var src, dst netip.Addr
	var proto byte
	switch etype {
	case 0x0800:
		if len(f) < 20 || f[0]>>4 != 4 {
			return Packet{}, false
		}
		ihl := int(f[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(f[2:]))
		if ihl < 20 || total < ihl || total > len(f) {
			return Packet{}, false
		}
		if binary.BigEndian.Uint16(f[6:])&0x3fff != 0 { // fragment
			return Packet{}, false
		}
		proto = f[9]
		src, dst = netip.AddrFrom4([4]byte(f[12:16])), netip.AddrFrom4([4]byte(f[16:20]))
		f = f[ihl:total]
	case 0x86dd:
		if len(f) < 40 {
			return Packet{}, false
		}
		plen := int(binary.BigEndian.Uint16(f[4:]))
		if 40+plen > len(f) {
			return Packet{}, false
		}
		// Extension headers are not followed: test traffic has none.
		proto = f[6]
		src, dst = netip.AddrFrom16([16]byte(f[8:24])), netip.AddrFrom16([16]byte(f[24:40]))
		f = f[40 : 40+plen]
	default:
		return Packet{}, false
	}
	switch proto {
	case 6:
		if len(f) < 20 {
			return Packet{}, false
		}
		off := int(f[12]>>4) * 4
		if off < 20 || off > len(f) {
			return Packet{}, false
		}
		return Packet{Proto: "tcp", Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(f)),
			Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(f[2:])), Payload: f[off:]}, true
	case 17:
		if len(f) < 8 {
			return Packet{}, false
		}
		ulen := int(binary.BigEndian.Uint16(f[4:]))
		if ulen < 8 || ulen > len(f) {
			return Packet{}, false
		}
		return Packet{Proto: "udp", Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(f)),
			Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(f[2:])), Payload: f[8:ulen]}, true
	}
	return Packet{}, false
}
