package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

const listenAttempts = 64

// ListenPair opens RTP on an even UDP port of ip and RTCP on the next
// port (RFC 3550 §11), retrying when the kernel's pick is odd or its
// neighbour is taken.
func ListenPair(ip netip.Addr) (rtp, rtcp *net.UDPConn, err error) {
	var last error
	for range listenAttempts {
		rtp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return nil, nil, fmt.Errorf("listening for rtp: %w", err)
		}
		port := rtp.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		if port%2 != 0 || port == 65535 {
			rtp.Close()
			continue
		}
		rtcp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port+1)))
		if err != nil {
			rtp.Close()
			last = err
			continue
		}
		return rtp, rtcp, nil
	}
	if last == nil {
		last = errors.New("only odd ports offered")
	}
	return nil, nil, fmt.Errorf("no free rtp/rtcp port pair on %s after %d attempts: %w", ip, listenAttempts, last)
}
