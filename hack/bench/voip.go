package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/dialtone-dev/dialtone/agent/voip/g711"
	"github.com/dialtone-dev/dialtone/agent/voip/media"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"
)

// benchVoip runs both VoIP benchmarks: the media pipeline against bare
// SRTP, and 50 concurrent calls.
func benchVoip(cfg config) ([]row, error) {
	rows, err := benchVoipMedia(cfg)
	if err != nil {
		return rows, err
	}
	r, err := benchVoipCalls(cfg)
	return append(rows, r...), err
}

// benchVoipMedia: one call's media path per 20 ms packet, both ends —
// G.711 encoding, RTP packetisation, SRTP protection; then SRTP
// unprotection with replay protection, SSRC check, RFC 3550 loss and
// jitter, reorder buffer, G.711 decoding into a sink — against pion/srtp
// protecting and unprotecting the same packets bare, interleaved.
//
// It drives media.Outbound and media.Inbound, the halves media.Session
// runs, without sockets: on loopback a sendto and a recvfrom cost a few
// µs each, several times the SRTP work, and the Session is paced at one
// packet per 20 ms, so over sockets the ratio would measure the kernel.
// The sockets' share is in benchVoipCalls' CPU per call.
//
// The judged row is AES_CM_128_HMAC_SHA1_80, the suite every SDES peer
// offers. AEAD_AES_128_GCM follows as information: with AES-NI and
// CLMUL pion seals and opens a packet in about 0.3 µs, and G.711 encoding
// and decoding 160 samples alone cost half of that, so no implementation
// of the path could come within 1.5x of it.
func benchVoipMedia(cfg config) ([]row, error) {
	_ = cfg
	cm, err := benchVoipProfile("AES_CM_128_HMAC_SHA1_80", srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		return nil, err
	}
	cm.max = 1.5
	gcm, err := benchVoipProfile("AEAD_AES_128_GCM", srtp.ProtectionProfileAeadAes128Gcm)
	if err != nil {
		return []row{cm}, err
	}
	gcm.name = "  same, AEAD_AES_128_GCM (G.711 alone is half of bare GCM)"
	gcm.rounds, gcm.target = nil, "no target"
	return []row{cm, gcm}, nil
}

func benchVoipProfile(name string, profile srtp.ProtectionProfile) (row, error) {
	n, err := media.KeyLen(profile)
	if err != nil {
		return row{}, err
	}
	key := make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		return row{}, err
	}
	frame := make([]int16, 160)
	if _, err := media.NewTone(440, 12000, 20*time.Millisecond).ReadSamples(frame); err != nil {
		return row{}, err
	}

	// The agent's path, one Outbound and one Inbound per round (a call).
	var oursErr error
	ours := func(packets int) float64 {
		out, err := media.NewOutbound(profile, key, media.PCMU)
		if err != nil {
			oursErr = err
			return 0
		}
		in, err := media.NewInbound(profile, key, media.PCMU, media.Discard{})
		if err != nil {
			oursErr = err
			return 0
		}
		buf := make([]byte, 0, media.MaxPacket)
		at := time.Now()
		start := time.Now()
		for range packets {
			pkt, err := out.Packet(buf, frame)
			if err != nil {
				oursErr = err
				return 0
			}
			at = at.Add(20 * time.Millisecond)
			if err := in.Receive(pkt, at); err != nil {
				oursErr = err
				return 0
			}
		}
		d := time.Since(start)
		if st := in.Stats(); st.PacketsReceived != uint64(packets) || st.PacketsLost != 0 {
			oursErr = fmt.Errorf("voip bench: %d of %d packets received, %d lost", st.PacketsReceived, packets, st.PacketsLost)
		}
		return float64(d.Nanoseconds()) / 1000 / float64(packets)
	}

	// The reference: the same plaintext packets (header and G.711
	// payload), protected and unprotected by bare pion contexts.
	plain := make([]byte, 12+160)
	hdr := rtp.Header{Version: 2, PayloadType: media.PCMU, SSRC: 0x12345678}
	if _, err := hdr.MarshalTo(plain); err != nil {
		return row{}, err
	}
	g711.EncodeUlaw(plain[12:], frame)
	var refErr error
	ref := func(packets int) float64 {
		enc, err1 := srtp.CreateContext(key[:16], key[16:], profile)
		dec, err2 := srtp.CreateContext(key[:16], key[16:], profile)
		if err1 != nil || err2 != nil {
			refErr = fmt.Errorf("voip bench: pion contexts: %v %v", err1, err2)
			return 0
		}
		encBuf := make([]byte, 0, media.MaxPacket)
		decBuf := make([]byte, 0, media.MaxPacket)
		var h1, h2 rtp.Header
		start := time.Now()
		for i := range packets {
			binary.BigEndian.PutUint16(plain[2:], uint16(i))
			binary.BigEndian.PutUint32(plain[4:], uint32(i*160))
			e, err := enc.EncryptRTP(encBuf, plain, &h1)
			if err != nil {
				refErr = err
				return 0
			}
			if _, err := dec.DecryptRTP(decBuf, e, &h2); err != nil {
				refErr = err
				return 0
			}
		}
		return float64(time.Since(start).Nanoseconds()) / 1000 / float64(packets)
	}

	const packets, rounds = 100000, 7
	ours(2000) // warm up both
	ref(2000)
	var oursUS, refUS, ratios []float64
	for i := range rounds {
		var o, r float64
		if i%2 == 0 {
			o, r = ours(packets), ref(packets)
		} else {
			r, o = ref(packets), ours(packets)
		}
		if oursErr != nil || refErr != nil {
			return row{}, fmt.Errorf("voip bench %s: %v %v", name, oursErr, refErr)
		}
		oursUS, refUS, ratios = append(oursUS, o), append(refUS, r), append(ratios, o/r)
		logf("   voip %s round %d: media path %.2f µs, bare SRTP %.2f µs per packet (%.2fx)", name, i+1, o, r, o/r)
	}
	return row{name: "voip media path per packet, " + name, value: median(oursUS), ref: median(refUS), unit: "µs",
		refName: "pion protect+unprotect", ratio: median(ratios), rounds: ratios}, nil
}

// benchVoipCalls: 50 calls at once between two sets of media.Sessions on
// loopback, each end sending a tone every 20 ms for a few seconds. Every
// packet must arrive (the row's ratio is received/sent, and must be 1);
// the figure is the CPU this process spent per call (both ends, sockets
// included) as a share of one core, from getrusage before and after.
func benchVoipCalls(cfg config) ([]row, error) {
	_ = cfg
	const calls = 50
	const length = 4 * time.Second
	lo := netip.MustParseAddr("127.0.0.1")
	profile := srtp.ProtectionProfileAes128CmHmacSha1_80
	var sessions []*media.Session
	var conns []*net.UDPConn // the sessions leave their sockets to us
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	ctx := context.Background()
	cpu0, t0 := selfCPU(), time.Now()
	for range calls {
		var socks [2][2]*net.UDPConn // per end: RTP, RTCP
		for i := range 2 {
			rtpC, rtcpC, err := media.ListenPair(lo)
			if err != nil {
				return nil, err
			}
			socks[i] = [2]*net.UDPConn{rtpC, rtcpC}
			conns = append(conns, rtpC, rtcpC)
		}
		keys := [2][]byte{make([]byte, 30), make([]byte, 30)}
		for _, k := range keys {
			if _, err := rand.Read(k); err != nil {
				return nil, err
			}
		}
		for i := range 2 {
			peer := socks[1-i]
			s, err := media.Start(ctx, media.Config{
				RTP: socks[i][0], RTCP: socks[i][1],
				Remote: udpAddr(peer[0]), RemoteRTCP: udpAddr(peer[1]),
				PayloadType: media.PCMA, Profile: profile,
				LocalKey: keys[i], RemoteKey: keys[1-i],
				Source: media.NewTone(float64(300+100*i), 10000, time.Hour),
			})
			if err != nil {
				return nil, err
			}
			sessions = append(sessions, s)
		}
	}
	time.Sleep(length)
	// Stop the senders first, then let the last packets land.
	var final []media.Stats
	for _, s := range sessions {
		s.SetSending(false)
	}
	time.Sleep(100 * time.Millisecond)
	for _, s := range sessions {
		st, err := s.Close()
		if err != nil {
			return nil, err
		}
		final = append(final, st)
	}
	sessions = nil
	cpu, wall := selfCPU()-cpu0, time.Since(t0)
	var sent, received, lost, refused uint64
	minMOS := 5.0
	for i, st := range final {
		peer := final[i^1]
		sent += st.PacketsSent
		received += peer.PacketsReceived
		lost += peer.PacketsLost + peer.LateDropped
		refused += peer.AuthFailed + peer.ReplayedDropped + peer.InvalidDropped + peer.StrangerDropped
		minMOS = min(minMOS, st.MOS)
	}
	perCall := cpu.Seconds() / wall.Seconds() / calls * 100
	logf("   voip calls: %d calls (%d sessions) for %s: %d packets sent, %d received, %d lost, %d refused; min MOS %.2f; CPU %s over %s = %.2f%% of a core per call (both ends)",
		calls, 2*calls, wall.Round(time.Millisecond), sent, received, lost, refused, minMOS, cpu.Round(time.Millisecond), wall.Round(time.Millisecond), perCall)
	r := row{name: fmt.Sprintf("voip: %d concurrent calls on loopback, CPU per call (both ends)", calls), value: perCall, ref: -1,
		unit: "% core", ratio: float64(received) / float64(max(sent, 1)), min: 1, target: "zero loss"}
	if lost > 0 || received != sent || refused > 0 {
		r.failNote = fmt.Sprintf("%d sent, %d received, %d lost, %d refused", sent, received, lost, refused)
	}
	return []row{r}, nil
}

func udpAddr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }
