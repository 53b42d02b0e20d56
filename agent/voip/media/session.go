package media

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v2"
)

// Config is one call's media: sockets, the negotiated remote, codec and
// SDES keys, and where audio comes from and goes to.
type Config struct {
	// RTP and RTCP are the local sockets (ListenPair). They stay the
	// caller's: the Session reads and writes them until Close, and never
	// closes them, so a following Session (a re-INVITE) can reuse them
	// once this one is closed. Two Sessions must not share them at once.
	RTP, RTCP *net.UDPConn
	// Remote is where the peer receives RTP; RemoteRTCP its RTCP (zero:
	// Remote's port + 1). Packets from anywhere else are dropped.
	Remote, RemoteRTCP netip.AddrPort
	PayloadType        uint8 // PCMU (0) or PCMA (8)
	Profile            srtp.ProtectionProfile
	// LocalKey protects what we send, RemoteKey is the peer's: each a
	// master key followed by its salt (KeyLen bytes).
	LocalKey, RemoteKey []byte
	Source              Source        // nil: Silence
	Sink                Sink          // nil: Discard; one call at a time; Close does not close it
	Ptime               time.Duration // packetisation, 10-60 ms; 0 means 20 ms
	Logger              *slog.Logger  // nil: discard
	// RTCPInterval is the mean interval of RTCP reports after the first
	// two (at 100 ms and 1 s, so short calls get a round-trip time);
	// 0 means 5 s. Each interval is randomised over [0.5, 1.5] of it.
	RTCPInterval time.Duration
	CNAME        string // RTCP SDES CNAME; empty: random
}

// Stats is a call's figures so far (or final, from Close).
type Stats struct {
	PacketsSent     uint64
	PacketsReceived uint64 // authenticated RTP packets from the peer
	PacketsLost     uint64 // RFC 3550 A.3: expected from the sequence numbers less received
	LateDropped     uint64 // received after their turn in the playout had passed
	Jitter          time.Duration
	RTT             time.Duration // from RTCP LSR/DLSR; 0 if unknown
	// MOS is the ITU-T G.107 E-model estimate for G.711 (Ie = 0) without
	// packet loss concealment (Bpl = 4.3, G.113 Appendix I: lost frames
	// are played as silence) from loss (lost + late), jitter (as playout
	// delay) and RTT; 0 before any packet arrived.
	MOS             float64
	ReplayedDropped uint64 // SRTP/SRTCP packets refused by the replay window
	AuthFailed      uint64 // SRTP/SRTCP packets that failed authentication
	StrangerDropped uint64 // datagrams from an address other than the remote's
	InvalidDropped  uint64 // malformed, oversized or from an unexpected SSRC
	RTCPSent        uint64
	RTCPReceived    uint64
	// What the peer's last report block about us said.
	RemoteFractionLost float64
	RemoteJitter       time.Duration
	ByeReceived        bool
	Duration           time.Duration
}

// Session is a running call's media: a sender paced at the packet time
// and readers for RTP and RTCP.
type Session struct {
	cfg        Config
	log        *slog.Logger
	out        *Outbound
	in         *Inbound
	remoteRTP  netip.AddrPort
	remoteRTCP netip.AddrPort
	cname      string
	ssrc       uint32
	start      time.Time
	ptime      time.Duration
	frame      int

	sending  atomic.Bool
	sent     atomic.Uint64
	rtcpSent atomic.Uint64
	stranger atomic.Uint64

	cancel    context.CancelFunc
	senderWG  sync.WaitGroup
	readersWG sync.WaitGroup

	closeOnce sync.Once
	final     Stats
	closeErr  error
}

// Start checks c and starts the call's media; it runs until Close or
// until ctx ends (Close is still needed for the figures and sockets).
func Start(ctx context.Context, c Config) (*Session, error) {
	if c.RTP == nil || c.RTCP == nil {
		return nil, fmt.Errorf("%w: rtp and rtcp sockets are required", ErrConfig)
	}
	if !c.Remote.IsValid() || c.Remote.Port() == 0 {
		return nil, fmt.Errorf("%w: remote rtp address %v", ErrConfig, c.Remote)
	}
	if !c.RemoteRTCP.IsValid() {
		if c.Remote.Port() == 65535 {
			return nil, fmt.Errorf("%w: no rtcp port after %v", ErrConfig, c.Remote)
		}
		c.RemoteRTCP = netip.AddrPortFrom(c.Remote.Addr(), c.Remote.Port()+1)
	}
	if c.Ptime == 0 {
		c.Ptime = 20 * time.Millisecond
	}
	if c.Ptime < 10*time.Millisecond || c.Ptime > 60*time.Millisecond || c.Ptime%time.Millisecond != 0 {
		return nil, fmt.Errorf("%w: ptime %v (want 10-60 ms)", ErrConfig, c.Ptime)
	}
	if c.RTCPInterval == 0 {
		c.RTCPInterval = 5 * time.Second
	}
	if c.Source == nil {
		c.Source = Silence{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	out, err := NewOutbound(c.Profile, c.LocalKey, c.PayloadType)
	if err != nil {
		return nil, fmt.Errorf("local key: %w", err)
	}
	in, err := NewInbound(c.Profile, c.RemoteKey, c.PayloadType, c.Sink)
	if err != nil {
		return nil, fmt.Errorf("remote key: %w", err)
	}
	in.localSSRC = out.SSRC()
	cname := c.CNAME
	if cname == "" {
		var b [8]byte
		_, _ = crand.Read(b[:])
		cname = hex.EncodeToString(b[:])
	}
	s := &Session{
		cfg:        c,
		log:        c.Logger.With("ssrc", out.SSRC(), "remote", c.Remote),
		out:        out,
		in:         in,
		remoteRTP:  unmap(c.Remote),
		remoteRTCP: unmap(c.RemoteRTCP),
		cname:      cname,
		ssrc:       out.SSRC(),
		start:      time.Now(),
		ptime:      c.Ptime,
		frame:      Samples(c.Ptime),
	}
	s.sending.Store(true)
	ctx, s.cancel = context.WithCancel(ctx)
	// Readers block in ReadFrom: a deadline in the past wakes them.
	context.AfterFunc(ctx, func() {
		_ = c.RTP.SetReadDeadline(time.Now())
		_ = c.RTCP.SetReadDeadline(time.Now())
	})
	s.senderWG.Add(1)
	go s.sendLoop(ctx)
	s.readersWG.Add(2)
	go s.readRTP(ctx)
	go s.readRTCP(ctx)
	return s, nil
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// SetSending turns sending RTP on and off (hold). RTCP goes on, and the
// RTP timestamps keep the wall clock's pace across the pause.
func (s *Session) SetSending(on bool) { s.sending.Store(on) }

// SSRC is the synchronisation source we send as.
func (s *Session) SSRC() uint32 { return s.ssrc }

// Stats is the figures so far.
func (s *Session) Stats() Stats {
	st := s.in.Stats()
	st.PacketsSent = s.sent.Load()
	st.RTCPSent = s.rtcpSent.Load()
	st.StrangerDropped = s.stranger.Load()
	st.Duration = time.Since(s.start)
	st.MOS = s.mos(st)
	return st
}

func (s *Session) mos(st Stats) float64 {
	expected := st.PacketsReceived + st.PacketsLost
	if st.PacketsReceived == 0 || expected == 0 {
		return 0
	}
	return EstimateMOS(Quality{
		Loss:   float64(st.PacketsLost+st.LateDropped) / float64(expected),
		Jitter: st.Jitter,
		RTT:    st.RTT,
		Ptime:  s.ptime,
	})
}

// Close stops the call: the sender sends an RTCP BYE, the readers stop
// and what the playout holds goes to the Sink. The sockets are left open
// (with no read deadline) for the caller. It returns the final figures
// and the Sink's error, if any; later calls return the same.
func (s *Session) Close() (Stats, error) {
	s.closeOnce.Do(func() {
		s.cancel()
		s.senderWG.Wait()
		s.readersWG.Wait()
		s.in.Flush()
		_ = s.cfg.RTP.SetReadDeadline(time.Time{})
		_ = s.cfg.RTCP.SetReadDeadline(time.Time{})
		s.final = s.Stats()
		if err := s.in.SinkErr(); err != nil {
			s.closeErr = fmt.Errorf("writing received audio: %w", err)
		}
	})
	return s.final, s.closeErr
}

// maxCatchUp is how many packets the sender sends back to back after a
// stall (a busy CPU); past that it skips, so timestamps stay true to the
// wall clock.
const maxCatchUp = 25

// sendLoop sends a packet every ptime, on the wall clock: after a stall
// it catches up (up to maxCatchUp packets) and skips the rest. RTCP reports go out from here too (the encrypting context has
// one user), and a BYE at the end.
func (s *Session) sendLoop(ctx context.Context) {
	defer s.senderWG.Done()
	samples := make([]int16, s.frame)
	buf := make([]byte, 0, MaxPacket)
	tick := time.NewTicker(s.ptime)
	defer tick.Stop()
	nextRTCP := s.start.Add(100 * time.Millisecond)
	reports := 0
	sourceDone := false
	var frames int64 // frames accounted for (sent or skipped)
	for {
		now := time.Now()
		due := int64(now.Sub(s.start)/s.ptime) + 1
		if behind := due - frames; behind > maxCatchUp {
			// Too far behind to catch up: skip, as a pause.
			s.out.Skip(int(behind-1) * s.frame)
			frames = due - 1
		}
		for ; frames < due; frames++ {
			if !s.sending.Load() {
				s.out.Skip(s.frame)
				continue
			}
			if !sourceDone {
				if err := readFull(s.cfg.Source, samples); err != nil {
					if !errors.Is(err, io.EOF) {
						s.log.Warn("audio source failed; sending silence", "err", err)
					}
					sourceDone = true
				}
			} else {
				clear(samples)
			}
			pkt, err := s.out.Packet(buf, samples)
			if err != nil {
				s.log.Error("protecting rtp", "err", err)
				continue
			}
			if _, err := s.cfg.RTP.WriteToUDPAddrPort(pkt, s.remoteRTP); err != nil {
				s.log.Debug("sending rtp", "err", err)
				continue
			}
			s.sent.Add(1)
		}
		if !now.Before(nextRTCP) {
			s.sendRTCP(now, false)
			reports++
			if reports == 1 {
				nextRTCP = s.start.Add(min(time.Second, s.cfg.RTCPInterval))
			} else {
				iv := float64(s.cfg.RTCPInterval) * (0.5 + rand.Float64())
				nextRTCP = now.Add(time.Duration(iv))
			}
		}
		select {
		case <-ctx.Done():
			s.sendRTCP(time.Now(), true)
			return
		case <-tick.C:
		}
	}
}

// readFull fills p from src, padding with silence at the end of the
// stream; io.EOF once nothing is left.
func readFull(src Source, p []int16) error {
	n := 0
	for n < len(p) {
		k, err := src.ReadSamples(p[n:])
		n += k
		if err != nil {
			clear(p[n:])
			if n > 0 && errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if k == 0 {
			clear(p[n:])
			return nil
		}
	}
	return nil
}

// sendRTCP sends a compound report: SR while we send (RR on hold), SDES
// CNAME, and BYE when the call ends.
func (s *Session) sendRTCP(now time.Time, bye bool) {
	var reports []rtcp.ReceptionReport
	if r, ok := s.in.report(now); ok {
		reports = append(reports, r)
	}
	var first rtcp.Packet
	packets, octets := s.out.Sent()
	if s.sending.Load() && packets > 0 {
		first = &rtcp.SenderReport{
			SSRC:        s.out.SSRC(),
			NTPTime:     ntpTime(now),
			RTPTime:     s.rtpTimeAt(now),
			PacketCount: uint32(packets),
			OctetCount:  uint32(octets),
			Reports:     reports,
		}
	} else {
		first = &rtcp.ReceiverReport{SSRC: s.out.SSRC(), Reports: reports}
	}
	pkts := []rtcp.Packet{first, rtcp.NewCNAMESourceDescription(s.out.SSRC(), s.cname)}
	if bye {
		pkts = append(pkts, &rtcp.Goodbye{Sources: []uint32{s.out.SSRC()}})
	}
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		s.log.Error("marshalling rtcp", "err", err)
		return
	}
	b, err = s.out.protectRTCP(b)
	if err != nil {
		s.log.Error("protecting rtcp", "err", err)
		return
	}
	if _, err := s.cfg.RTCP.WriteToUDPAddrPort(b, s.remoteRTCP); err != nil {
		s.log.Debug("sending rtcp", "err", err)
		return
	}
	s.rtcpSent.Add(1)
}

// rtpTimeAt is the RTP timestamp of the sample that would be taken at
// now: the next packet's timestamp less the time until it is due.
func (s *Session) rtpTimeAt(now time.Time) uint32 {
	elapsed := now.Sub(s.start)
	nextDue := (elapsed/s.ptime + 1) * s.ptime
	return s.out.Timestamp() - uint32(Samples(nextDue-elapsed))
}

// idleFlush is how long the RTP reader waits for a packet before it plays
// out what the reorder buffer holds. Both readers renew their deadline at
// every read, so a deadline set by Close (or left by an earlier Session
// on the same socket) neither spins them nor strands them.
const (
	idleFlush    = 200 * time.Millisecond
	rtcpReadWake = 500 * time.Millisecond
)

func (s *Session) readRTP(ctx context.Context) {
	defer s.readersWG.Done()
	buf := make([]byte, MaxPacket+1)
	for ctx.Err() == nil {
		_ = s.cfg.RTP.SetReadDeadline(time.Now().Add(idleFlush))
		if ctx.Err() != nil {
			return
		}
		n, from, err := s.cfg.RTP.ReadFromUDPAddrPort(buf)
		at := time.Now()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.in.Flush()
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("reading rtp", "err", err)
			continue
		}
		if unmap(from) != s.remoteRTP {
			s.stranger.Add(1)
			s.log.Debug("rtp from a stranger dropped", "from", from)
			continue
		}
		if err := s.in.Receive(buf[:n], at); err != nil {
			s.log.Debug("rtp dropped", "err", err)
		}
	}
}

func (s *Session) readRTCP(ctx context.Context) {
	defer s.readersWG.Done()
	buf := make([]byte, MaxPacket+1)
	for ctx.Err() == nil {
		_ = s.cfg.RTCP.SetReadDeadline(time.Now().Add(rtcpReadWake))
		if ctx.Err() != nil {
			return
		}
		n, from, err := s.cfg.RTCP.ReadFromUDPAddrPort(buf)
		at := time.Now()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("reading rtcp", "err", err)
			continue
		}
		if unmap(from) != s.remoteRTCP {
			s.stranger.Add(1)
			s.log.Debug("rtcp from a stranger dropped", "from", from)
			continue
		}
		if _, err := s.in.ReceiveRTCP(buf[:n], at); err != nil {
			s.log.Debug("rtcp dropped", "err", err)
		}
	}
}
