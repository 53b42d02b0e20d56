package media

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/srtp/v2"
)

var suites = []struct {
	name    string
	profile srtp.ProtectionProfile
}{
	{"AES_CM_128_HMAC_SHA1_80", srtp.ProtectionProfileAes128CmHmacSha1_80},
	{"AES_CM_128_HMAC_SHA1_32", srtp.ProtectionProfileAes128CmHmacSha1_32},
	{"AEAD_AES_128_GCM", srtp.ProtectionProfileAeadAes128Gcm},
}

const toneLen = 600 * time.Millisecond

// Two sessions exchange tones with each suite and codec; what each
// receives is exactly what the other sent after a G.711 round trip, then
// silence; the figures are those of a clean loopback call.
func TestCallExchangesTone(t *testing.T) {
	for _, suite := range suites {
		for _, pt := range []uint8{PCMU, PCMA} {
			t.Run(suite.name+"/"+map[uint8]string{PCMU: "PCMU", PCMA: "PCMA"}[pt], func(t *testing.T) {
				t.Parallel()
				wavPath := filepath.Join(t.TempDir(), "b.wav")
				wav, err := CreateWAV(wavPath)
				if err != nil {
					t.Fatal(err)
				}
				capA := &capture{}
				c := startCall(t, callOpts{
					profile: suite.profile, pt: pt,
					srcA: NewTone(440, 12000, toneLen), srcB: NewTone(1000, 20000, toneLen),
					sinkA: capA, sinkB: wav,
				})
				// Both ends learn the round-trip time from the reports at
				// 100 ms and 1 s.
				waitFor(t, 5*time.Second, "round-trip times", func() bool {
					return c.a.Stats().RTT > 0 && c.b.Stats().RTT > 0
				})
				time.Sleep(100 * time.Millisecond)
				stA, err := c.a.Close()
				if err != nil {
					t.Fatal(err)
				}
				waitFor(t, 2*time.Second, "B to get A's BYE", func() bool { return c.b.Stats().ByeReceived })
				stB, err := c.b.Close()
				if err != nil {
					t.Fatal(err)
				}
				if err := wav.Close(); err != nil {
					t.Fatal(err)
				}
				r, err := OpenWAV(wavPath)
				if err != nil {
					t.Fatal(err)
				}
				gotB := readAll(t, r)
				r.Close()
				gotA, _ := capA.get()

				for _, x := range []struct {
					name string
					got  []int16
					sent Source
				}{
					{"B's wav of A's tone", gotB, NewTone(440, 12000, toneLen)},
					{"A's capture of B's tone", gotA, NewTone(1000, 20000, toneLen)},
				} {
					want := roundTripG711(pt, readAll(t, x.sent))
					if len(x.got) < len(want) {
						t.Fatalf("%s: %d samples, want at least %d", x.name, len(x.got), len(want))
					}
					if i := firstDiff(x.got[:len(want)], want); i >= 0 {
						t.Fatalf("%s differs at sample %d: %d, want %d", x.name, i, x.got[i], want[i])
					}
					silence := roundTripG711(pt, []int16{0})[0] // A-law has no zero level: 8
					if i := slices.IndexFunc(x.got[len(want):], func(s int16) bool { return s != silence }); i >= 0 {
						t.Fatalf("%s: sample %d after the tone is %d, want silence", x.name, len(want)+i, x.got[len(want)+i])
					}
				}
				for name, st := range map[string]Stats{"A": stA, "B": stB} {
					t.Logf("%s: %+v", name, st)
					if st.PacketsLost != 0 || st.LateDropped != 0 || st.AuthFailed != 0 || st.ReplayedDropped != 0 || st.StrangerDropped != 0 || st.InvalidDropped != 0 {
						t.Errorf("%s: refusals or loss on a clean loopback call: %+v", name, st)
					}
					if st.PacketsSent < 40 || st.PacketsReceived < 40 {
						t.Errorf("%s: sent %d, received %d packets in over a second", name, st.PacketsSent, st.PacketsReceived)
					}
					if st.RTT <= 0 || st.RTT > 100*time.Millisecond {
						t.Errorf("%s: RTT %v on loopback", name, st.RTT)
					}
					if st.Jitter > 20*time.Millisecond {
						t.Errorf("%s: jitter %v on loopback", name, st.Jitter)
					}
					if st.MOS < 4.3 || st.MOS > 4.5 {
						t.Errorf("%s: MOS %.2f, want about 4.4", name, st.MOS)
					}
					if st.RTCPSent < 3 || st.RTCPReceived < 2 {
						t.Errorf("%s: %d RTCP sent, %d received", name, st.RTCPSent, st.RTCPReceived)
					}
				}
				// Everything A sent reached B (B closed after A's BYE).
				if stB.PacketsReceived != stA.PacketsSent {
					t.Errorf("A sent %d packets, B received %d", stA.PacketsSent, stB.PacketsReceived)
				}
			})
		}
	}
}

func firstDiff(a, b []int16) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// A relay that sends some packets twice from the negotiated address: the
// replay windows drop exactly those copies, SRTP and SRTCP alike, and the
// audio is unharmed.
func TestReplayDropped(t *testing.T) {
	t.Parallel()
	var rtpDup, rtcpDup atomic.Int64
	capB := &capture{}
	c := startCall(t, callOpts{
		pt: PCMU, srcA: NewTone(440, 12000, toneLen), sinkB: capB,
		rtpHook: func(dir, i int, _ []byte) int {
			if dir == 0 && (i == 5 || i == 6 || i == 20) {
				rtpDup.Add(1)
				return 2
			}
			return 1
		},
		rtcpHook: func(dir, i int, _ []byte) int {
			if dir == 0 && i == 0 {
				rtcpDup.Add(1)
				return 2
			}
			return 1
		},
	})
	waitFor(t, 5*time.Second, "the replays", func() bool {
		return c.b.Stats().ReplayedDropped == 4
	})
	time.Sleep(toneLen)
	c.a.Close()
	stB, _ := c.b.Close()
	if stB.ReplayedDropped != uint64(rtpDup.Load()+rtcpDup.Load()) || stB.AuthFailed != 0 || stB.PacketsLost != 0 {
		t.Errorf("B: %+v; relay repeated %d RTP and %d RTCP packets", stB, rtpDup.Load(), rtcpDup.Load())
	}
	got, _ := capB.get()
	want := roundTripG711(PCMU, readAll(t, NewTone(440, 12000, toneLen)))
	if len(got) < len(want) || firstDiff(got[:len(want)], want) >= 0 {
		t.Errorf("audio at B harmed by the replays")
	}
}

// With the wrong key nothing authenticates: every packet is counted as an
// authentication failure and nothing reaches the sink.
func TestWrongKey(t *testing.T) {
	t.Parallel()
	for _, suite := range suites {
		t.Run(suite.name, func(t *testing.T) {
			t.Parallel()
			capB := &capture{}
			c := startCall(t, callOpts{profile: suite.profile, pt: PCMA, srcA: NewTone(440, 12000, time.Second), sinkB: capB, wrongKeyAtB: true})
			waitFor(t, 5*time.Second, "authentication failures (RTP and RTCP)", func() bool {
				st := c.b.Stats()
				return st.AuthFailed >= 10 && st.RTCPSent >= 1 && c.a.Stats().RTCPSent >= 1
			})
			time.Sleep(50 * time.Millisecond)
			c.a.Close()
			stB, _ := c.b.Close()
			if stB.PacketsReceived != 0 || stB.RTCPReceived != 0 || stB.RTT != 0 || stB.MOS != 0 {
				t.Errorf("B accepted something under the wrong key: %+v", stB)
			}
			if _, writes := capB.get(); writes != 0 {
				t.Errorf("the sink got %d writes under the wrong key", writes)
			}
		})
	}
}

// A datagram from anyone but the negotiated remote is dropped and
// counted, even when it is properly protected.
func TestStrangerDropped(t *testing.T) {
	t.Parallel()
	capB := &capture{}
	c := startCall(t, callOpts{pt: PCMU, sinkB: capB}) // A sends silence
	stranger, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip0()))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	// The stranger even has A's key.
	out, err := NewOutbound(srtp.ProtectionProfileAes128CmHmacSha1_80, c.keyA, PCMU)
	if err != nil {
		t.Fatal(err)
	}
	loud := make([]int16, 160)
	for i := range loud {
		loud[i] = 20000
	}
	for range 5 {
		pkt, err := out.Packet(nil, loud)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stranger.WriteToUDPAddrPort(pkt, c.bRTP); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stranger.WriteToUDPAddrPort([]byte("not rtcp at all"), c.bRTCP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the stranger's datagrams to be dropped", func() bool { return c.b.Stats().StrangerDropped == 6 })
	c.a.Close()
	stB, _ := c.b.Close()
	if stB.AuthFailed != 0 || stB.InvalidDropped != 0 {
		t.Errorf("stranger's packets went further than the address check: %+v", stB)
	}
	got, _ := capB.get()
	if i := slices.IndexFunc(got, func(s int16) bool { return s != 0 }); i >= 0 {
		t.Errorf("the stranger's audio reached the sink at sample %d", i)
	}
}

// Hold stops RTP but not RTCP; resuming continues the sequence (no loss)
// and the receiver's audio stays aligned with silence over the pause.
func TestHold(t *testing.T) {
	t.Parallel()
	capB := &capture{}
	c := startCall(t, callOpts{pt: PCMU, srcA: NewTone(300, 8000, 3*time.Second), sinkB: capB, rtcpInterval: 200 * time.Millisecond})
	waitFor(t, 5*time.Second, "packets at B", func() bool { return c.b.Stats().PacketsReceived >= 10 })
	c.a.SetSending(false)
	time.Sleep(60 * time.Millisecond) // in flight
	held := c.b.Stats()
	time.Sleep(600 * time.Millisecond)
	after := c.b.Stats()
	if after.PacketsReceived != held.PacketsReceived {
		t.Errorf("B received %d packets while A was on hold", after.PacketsReceived-held.PacketsReceived)
	}
	if after.RTCPReceived <= held.RTCPReceived {
		t.Errorf("no RTCP during hold (%d before, %d after)", held.RTCPReceived, after.RTCPReceived)
	}
	c.a.SetSending(true)
	waitFor(t, 5*time.Second, "packets after hold", func() bool { return c.b.Stats().PacketsReceived >= after.PacketsReceived+10 })
	stA, _ := c.a.Close()
	stB, _ := c.b.Close()
	if stB.PacketsLost != 0 {
		t.Errorf("hold shows as %d packets lost", stB.PacketsLost)
	}
	got, _ := capB.get()
	// Received audio spans the call's time, hold included.
	sentAudio := int(stA.PacketsSent) * 160
	if len(got) < sentAudio+Samples(500*time.Millisecond) {
		t.Errorf("B got %d samples for %d sent: the hold was not filled with silence", len(got), sentAudio)
	}
}

// Every 10th packet dropped by a relay shows as loss at the receiver, in
// the reports the sender gets back, and in a lower MOS; the received
// audio keeps its length with silence where the packets were.
func TestInducedLoss(t *testing.T) {
	t.Parallel()
	var dropped atomic.Int64
	capB := &capture{}
	src := NewTone(440, 12000, 3*time.Second)
	c := startCall(t, callOpts{
		pt: PCMA, srcA: src, sinkB: capB, rtcpInterval: 300 * time.Millisecond,
		rtpHook: func(dir, i int, _ []byte) int {
			if dir == 0 && i%10 == 9 {
				dropped.Add(1)
				return 0
			}
			return 1
		},
	})
	waitFor(t, 5*time.Second, "losses and a report of them", func() bool {
		return c.b.Stats().PacketsLost >= 5 && c.a.Stats().RemoteFractionLost > 0
	})
	stA, _ := c.a.Close()
	time.Sleep(100 * time.Millisecond)
	stB, _ := c.b.Close()
	d := uint64(dropped.Load())
	// A trailing drop is not yet a gap.
	if stB.PacketsLost != d && stB.PacketsLost != d-1 {
		t.Errorf("B counts %d lost, relay dropped %d", stB.PacketsLost, d)
	}
	if stB.MOS >= 3 || stB.MOS < 1 {
		t.Errorf("MOS %.2f with 10%% loss, want well under 3", stB.MOS)
	}
	if stA.RemoteFractionLost < 0.05 || stA.RemoteFractionLost > 0.2 {
		t.Errorf("A's peer reported %.3f lost, want about 0.1", stA.RemoteFractionLost)
	}
	got, _ := capB.get()
	want := roundTripG711(PCMA, readAll(t, NewTone(440, 12000, 3*time.Second)))
	n := min(len(got), len(want))
	if n < int(stB.PacketsReceived)*160 {
		t.Fatalf("B has %d samples for %d packets", len(got), stB.PacketsReceived)
	}
	for f := 0; f*160+160 <= n; f++ {
		frame, ref := got[f*160:f*160+160], want[f*160:f*160+160]
		if f%10 == 9 {
			if slices.ContainsFunc(frame, func(s int16) bool { return s != 0 }) {
				t.Fatalf("frame %d was dropped but is not silence", f)
			}
		} else if i := firstDiff(frame, ref); i >= 0 {
			t.Fatalf("frame %d differs from what was sent at %d: %v vs %v (B: %+v)", f, i, frame[:8], ref[:8], stB)
		}
	}
	t.Logf("dropped %d; B: %+v", d, stB)
}

func TestStartRefuses(t *testing.T) {
	good := func(t *testing.T) Config {
		rtp, rtcp, err := ListenPair(loopback)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rtp.Close(); rtcp.Close() })
		p := srtp.ProtectionProfileAes128CmHmacSha1_80
		return Config{RTP: rtp, RTCP: rtcp, Remote: localAddr(rtp), Profile: p, LocalKey: newKey(t, p), RemoteKey: newKey(t, p)}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   error
	}{
		{"AES-256 profile", func(c *Config) { c.Profile = srtp.ProtectionProfileAes256CmHmacSha1_80 }, ErrProfile},
		{"null cipher", func(c *Config) { c.Profile = srtp.ProtectionProfileNullHmacSha1_80 }, ErrProfile},
		{"short local key", func(c *Config) { c.LocalKey = c.LocalKey[:16] }, ErrKeyLength},
		{"GCM length for AES-CM", func(c *Config) { c.RemoteKey = c.RemoteKey[:28] }, ErrKeyLength},
		{"AES-CM length for GCM", func(c *Config) { c.Profile = srtp.ProtectionProfileAeadAes128Gcm }, ErrKeyLength},
		{"G.722", func(c *Config) { c.PayloadType = 9 }, ErrPayloadType},
		{"no remote", func(c *Config) { c.Remote = netip0() }, ErrConfig},
		{"no rtcp socket", func(c *Config) { c.RTCP = nil }, ErrConfig},
		{"ptime 5ms", func(c *Config) { c.Ptime = 5 * time.Millisecond }, ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good(t)
			tc.mutate(&c)
			s, err := Start(context.Background(), c)
			if !errors.Is(err, tc.want) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Start: %v, want %v", err, tc.want)
			}
			// The sockets stay the caller's.
			if c.RTP != nil {
				if _, err := c.RTP.WriteToUDPAddrPort([]byte{0}, localAddr(c.RTP)); err != nil {
					t.Errorf("rtp socket unusable after a failed Start: %v", err)
				}
			}
		})
	}
}

func TestListenPair(t *testing.T) {
	for range 5 {
		rtp, rtcp, err := ListenPair(loopback)
		if err != nil {
			t.Fatal(err)
		}
		p, q := localAddr(rtp).Port(), localAddr(rtcp).Port()
		rtp.Close()
		rtcp.Close()
		if p%2 != 0 || q != p+1 {
			t.Fatalf("rtp port %d, rtcp port %d", p, q)
		}
	}
}

// Cancelling Start's context stops the call; Close still reports.
func TestContextEndsCall(t *testing.T) {
	t.Parallel()
	rtp, rtcp, err := ListenPair(loopback)
	if err != nil {
		t.Fatal(err)
	}
	peerRTP, peerRTCP, err := ListenPair(loopback)
	if err != nil {
		t.Fatal(err)
	}
	defer peerRTP.Close()
	defer peerRTCP.Close()
	defer rtp.Close()
	defer rtcp.Close()
	p := srtp.ProtectionProfileAeadAes128Gcm
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Config{RTP: rtp, RTCP: rtcp, Remote: localAddr(peerRTP), Profile: p, LocalKey: newKey(t, p), RemoteKey: newKey(t, p)})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	time.Sleep(100 * time.Millisecond)
	sent := s.Stats().PacketsSent
	time.Sleep(100 * time.Millisecond)
	if now := s.Stats().PacketsSent; now != sent {
		t.Errorf("still sending after the context ended: %d then %d", sent, now)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung after the context ended")
	}
}

// After Close the sockets are the caller's again: a new Session with new
// keys (a re-INVITE) runs on them.
func TestSocketsReusable(t *testing.T) {
	t.Parallel()
	sockets := func() (*net.UDPConn, *net.UDPConn) {
		rtp, rtcp, err := ListenPair(loopback)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rtp.Close(); rtcp.Close() })
		return rtp, rtcp
	}
	aRTP, aRTCP := sockets()
	bRTP, bRTCP := sockets()
	p := srtp.ProtectionProfileAes128CmHmacSha1_32
	for round := range 2 {
		ka, kb := newKey(t, p), newKey(t, p)
		a, err := Start(context.Background(), Config{RTP: aRTP, RTCP: aRTCP, Remote: localAddr(bRTP), RemoteRTCP: localAddr(bRTCP),
			Profile: p, LocalKey: ka, RemoteKey: kb, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Start(context.Background(), Config{RTP: bRTP, RTCP: bRTCP, Remote: localAddr(aRTP), RemoteRTCP: localAddr(aRTCP),
			Profile: p, LocalKey: kb, RemoteKey: ka, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "packets both ways", func() bool {
			return a.Stats().PacketsReceived >= 10 && b.Stats().PacketsReceived >= 10
		})
		sa, _ := a.Close()
		sb, _ := b.Close()
		if sa.PacketsLost != 0 || sb.PacketsLost != 0 {
			t.Errorf("round %d: loss %d, %d", round, sa.PacketsLost, sb.PacketsLost)
		}
	}
}
