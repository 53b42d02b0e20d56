package media

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/agent/voip/g711"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"
)

// MaxPacket bounds every datagram read: larger ones are dropped as
// invalid (a G.711 packet of 60 ms is under 500 bytes).
const MaxPacket = 1500

// maxTriedSSRCs bounds the SSRCs tried before one authenticates: pion
// keeps state for every SSRC it is handed, so packets forged with random
// SSRCs would otherwise grow it without end. Past the bound the (still
// unauthenticated) context is rebuilt.
const maxTriedSSRCs = 8

// Inbound is the receiving half of a stream without its socket: it
// unprotects SRTP and SRTCP, counts loss and jitter, puts frames back in
// order, decodes G.711 and writes to the Sink. Nothing reaches the Sink
// that did not authenticate. Safe for one receiving goroutine per packet
// kind (RTP, RTCP) plus readers of Stats.
type Inbound struct {
	mu sync.Mutex

	profile srtp.ProtectionProfile
	key     []byte
	pt      uint8
	decode  func([]int16, []byte)
	tag     int

	rtpFlag, rtcpFlag replayFlag
	rtpCtx, rtcpCtx   *srtp.Context
	rtpLock, rtcpLock ssrcLock

	hdr     rtp.Header
	seq     seqState
	jit     jitterState
	epoch   time.Time
	play    playout
	samples []int16

	sink    Sink
	sinkErr error

	localSSRC uint32 // ours, to find the report blocks about us
	lastSR    struct {
		middle uint32
		at     time.Time
	}
	rtt         time.Duration
	remoteLoss  float64
	remoteJit   time.Duration
	byeReceived bool

	received, replayed, authFailed, invalid, late, rtcpReceived uint64
}

// NewInbound unprotects with keySalt (the peer's master key then salt)
// under profile and writes payloadType's audio to sink (nil: Discard).
func NewInbound(profile srtp.ProtectionProfile, keySalt []byte, payloadType uint8, sink Sink) (*Inbound, error) {
	var dec func([]int16, []byte)
	switch payloadType {
	case PCMU:
		dec = g711.DecodeUlaw
	case PCMA:
		dec = g711.DecodeAlaw
	default:
		return nil, fmt.Errorf("%w: %d (want 0 PCMU or 8 PCMA)", ErrPayloadType, payloadType)
	}
	if sink == nil {
		sink = Discard{}
	}
	in := &Inbound{
		profile: profile,
		key:     append([]byte(nil), keySalt...),
		pt:      payloadType,
		decode:  dec,
		tag:     tagLen(profile),
		sink:    sink,
		samples: make([]int16, MaxPacket),
		play:    newPlayout(),
	}
	var err error
	if in.rtpCtx, err = decryptContext(profile, keySalt, &in.rtpFlag); err != nil {
		return nil, err
	}
	if in.rtcpCtx, err = decryptContext(profile, keySalt, &in.rtcpFlag); err != nil {
		return nil, err
	}
	return in, nil
}

// Receive handles one SRTP datagram that arrived at at. It may modify pkt
// (unprotects in place). The error says why a packet was refused:
// ErrInvalid, ErrReplayed or ErrAuth (wrapped).
func (in *Inbound) Receive(pkt []byte, at time.Time) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(pkt) > MaxPacket || len(pkt) < rtpHeaderLen+in.tag {
		in.invalid++
		return fmt.Errorf("%w: %d bytes", ErrInvalid, len(pkt))
	}
	n, err := in.hdr.Unmarshal(pkt)
	if err != nil || in.hdr.Version != 2 || len(pkt) < n+in.tag {
		in.invalid++
		return fmt.Errorf("%w: bad rtp header", ErrInvalid)
	}
	if err := in.admit(&in.rtpLock, in.hdr.SSRC, &in.rtpCtx, &in.rtpFlag); err != nil {
		in.invalid++
		return err
	}
	in.rtpFlag.hit = false
	out, err := in.rtpCtx.DecryptRTP(pkt, pkt, &in.hdr)
	if err != nil {
		// pion checks the replay window before the tag, and after our own
		// length checks the tag is all that is left to fail.
		if in.rtpFlag.hit {
			in.replayed++
			return fmt.Errorf("%w: srtp ssrc %d seq %d", ErrReplayed, in.hdr.SSRC, in.hdr.SequenceNumber)
		}
		in.authFailed++
		return fmt.Errorf("%w: srtp: %w", ErrAuth, err)
	}
	in.rtpLock.lock(in.hdr.SSRC)
	payload := out[n:]
	if in.hdr.Padding {
		p := 0
		if len(payload) > 0 {
			p = int(payload[len(payload)-1])
		}
		if p == 0 || p > len(payload) {
			in.invalid++
			return fmt.Errorf("%w: bad rtp padding", ErrInvalid)
		}
		payload = payload[:len(payload)-p]
	}
	ext, restarted, ok := in.seq.update(in.hdr.SequenceNumber)
	if !ok {
		in.invalid++
		return fmt.Errorf("%w: sequence jump to %d", ErrInvalid, in.hdr.SequenceNumber)
	}
	if restarted {
		in.flushLocked()
		in.play.reset()
	}
	in.received++
	if in.hdr.PayloadType != in.pt {
		// DTMF events, comfort noise: part of the sequence, not audio.
		in.play.insert(in, ext, in.hdr.Timestamp, nil)
		return nil
	}
	if in.epoch.IsZero() {
		in.epoch = at
	}
	in.jit.update(uint32(at.Sub(in.epoch).Nanoseconds()*SampleRate/int64(time.Second)), in.hdr.Timestamp)
	in.play.insert(in, ext, in.hdr.Timestamp, payload)
	return nil
}

// admit refuses an SSRC other than the one locked onto, and bounds the
// state of SSRCs tried before that.
func (in *Inbound) admit(l *ssrcLock, ssrc uint32, ctx **srtp.Context, flag *replayFlag) error {
	if l.locked {
		if ssrc != l.ssrc {
			return fmt.Errorf("%w: unexpected ssrc %d", ErrInvalid, ssrc)
		}
		return nil
	}
	if l.tried == nil {
		l.tried = map[uint32]struct{}{}
	}
	if _, ok := l.tried[ssrc]; ok {
		return nil
	}
	if len(l.tried) >= maxTriedSSRCs {
		c, err := decryptContext(in.profile, in.key, flag)
		if err != nil {
			return err
		}
		*ctx = c
		clear(l.tried)
	}
	l.tried[ssrc] = struct{}{}
	return nil
}

// ReceiveRTCP handles one SRTCP datagram that arrived at at: sender
// reports for our reception reports, report blocks about us for the
// round-trip time, BYE. It may modify pkt.
func (in *Inbound) ReceiveRTCP(pkt []byte, at time.Time) ([]rtcp.Packet, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	// Header, SRTCP index and tag: HMAC-SHA1 tags on SRTCP are 10 bytes
	// even under the _32 suite (RFC 4568 §6.2.1), GCM's are 16.
	if len(pkt) > MaxPacket || len(pkt) < 8+4+max(in.tag, 10) {
		in.invalid++
		return nil, fmt.Errorf("%w: %d bytes of rtcp", ErrInvalid, len(pkt))
	}
	if pkt[0]>>6 != 2 {
		in.invalid++
		return nil, fmt.Errorf("%w: rtcp version %d", ErrInvalid, pkt[0]>>6)
	}
	ssrc := binary.BigEndian.Uint32(pkt[4:8])
	if err := in.admit(&in.rtcpLock, ssrc, &in.rtcpCtx, &in.rtcpFlag); err != nil {
		in.invalid++
		return nil, err
	}
	in.rtcpFlag.hit = false
	out, err := in.rtcpCtx.DecryptRTCP(nil, pkt, nil)
	if err != nil {
		if in.rtcpFlag.hit {
			in.replayed++
			return nil, fmt.Errorf("%w: srtcp ssrc %d", ErrReplayed, ssrc)
		}
		in.authFailed++
		return nil, fmt.Errorf("%w: srtcp: %w", ErrAuth, err)
	}
	in.rtcpLock.lock(ssrc)
	pkts, err := rtcp.Unmarshal(out)
	if err != nil {
		in.invalid++
		return nil, fmt.Errorf("%w: rtcp: %w", ErrInvalid, err)
	}
	in.rtcpReceived++
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.SenderReport:
			in.lastSR.middle = uint32(p.NTPTime >> 16)
			in.lastSR.at = at
			in.reportsAboutUs(p.Reports, at)
		case *rtcp.ReceiverReport:
			in.reportsAboutUs(p.Reports, at)
		case *rtcp.Goodbye:
			in.byeReceived = true
		}
	}
	return pkts, nil
}

func (in *Inbound) reportsAboutUs(rr []rtcp.ReceptionReport, at time.Time) {
	for _, r := range rr {
		if r.SSRC != in.localSSRC {
			continue
		}
		in.remoteLoss = float64(r.FractionLost) / 256
		in.remoteJit = time.Duration(r.Jitter) * time.Second / SampleRate
		if rtt, ok := roundTrip(at, r.LastSenderReport, r.Delay); ok {
			in.rtt = rtt
		}
	}
}

// roundTrip is RFC 3550 §6.4.1's A - LSR - DLSR, in units of 1/65536 s.
// Once a report block echoes our SR the round trip is known: a result at
// or below zero (clock granularity on loopback) is floored to one unit.
func roundTrip(at time.Time, lsr, dlsr uint32) (time.Duration, bool) {
	if lsr == 0 {
		return 0, false
	}
	d := int32(uint32(ntpTime(at)>>16) - lsr - dlsr)
	if d < -65536 || d > 60*65536 { // not an echo of ours
		return 0, false
	}
	d = max(d, 1)
	return time.Duration(d) * time.Second / 65536, true
}

// ntpTime is t as a 64-bit NTP timestamp (seconds since 1900, 32.32).
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return secs<<32 | frac
}

// report is the reception report block about the peer (and advances the
// interval counters of RFC 3550 A.3), false before anything arrived.
func (in *Inbound) report(now time.Time) (rtcp.ReceptionReport, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.rtpLock.locked || !in.seq.started {
		return rtcp.ReceptionReport{}, false
	}
	s := &in.seq
	expected := s.expected()
	expInt := expected - s.expectedPrior
	recInt := s.received - s.receivedPrior
	s.expectedPrior, s.receivedPrior = expected, s.received
	var fraction uint8
	if expInt > 0 && expInt > recInt {
		fraction = uint8((expInt - recInt) << 8 / expInt)
	}
	r := rtcp.ReceptionReport{
		SSRC:               in.rtpLock.ssrc,
		FractionLost:       fraction,
		TotalLost:          uint32(min(s.lost(), 0x7FFFFF)),
		LastSequenceNumber: uint32(s.extendedMax()),
		Jitter:             uint32(in.jit.j),
	}
	if !in.lastSR.at.IsZero() {
		r.LastSenderReport = in.lastSR.middle
		r.Delay = uint32(now.Sub(in.lastSR.at) * 65536 / time.Second)
	}
	return r, true
}

// Flush plays out what the reorder buffer holds, giving up on the gaps:
// at the end of a call, or when the stream goes quiet.
func (in *Inbound) Flush() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.flushLocked()
}

func (in *Inbound) flushLocked() { in.play.flush(in) }

// SinkErr is the first error the Sink returned; writing stops there.
func (in *Inbound) SinkErr() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.sinkErr
}

// Stats is the receiving side's figures: packets received and lost,
// jitter, refusals, and what the peer's RTCP told (round-trip time). MOS,
// PacketsSent and Duration are the Session's.
func (in *Inbound) Stats() Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	return Stats{
		PacketsReceived:    in.received,
		PacketsLost:        in.seq.lost(),
		LateDropped:        in.late,
		Jitter:             time.Duration(in.jit.j * float64(time.Second) / SampleRate),
		RTT:                in.rtt,
		ReplayedDropped:    in.replayed,
		AuthFailed:         in.authFailed,
		InvalidDropped:     in.invalid,
		RTCPReceived:       in.rtcpReceived,
		RemoteFractionLost: in.remoteLoss,
		RemoteJitter:       in.remoteJit,
		ByeReceived:        in.byeReceived,
	}
}

// write hands samples to the sink until it fails once.
func (in *Inbound) write(p []int16) {
	if in.sinkErr != nil || len(p) == 0 {
		return
	}
	if err := in.sink.WriteSamples(p); err != nil {
		in.sinkErr = err
	}
}

// ssrcLock is the SSRC a context locked onto after its first
// authenticated packet, and the ones tried before.
type ssrcLock struct {
	ssrc   uint32
	locked bool
	tried  map[uint32]struct{}
}

func (l *ssrcLock) lock(ssrc uint32) {
	if !l.locked {
		l.ssrc, l.locked, l.tried = ssrc, true, nil
	}
}
