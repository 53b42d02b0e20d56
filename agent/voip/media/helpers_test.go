package media

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/voip/g711"
	"github.com/pion/srtp/v2"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// capture is a Sink that keeps what it is given.
type capture struct {
	mu      sync.Mutex
	samples []int16
	writes  int
}

func (c *capture) WriteSamples(p []int16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples = append(c.samples, p...)
	c.writes++
	return nil
}

func (c *capture) get() ([]int16, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int16(nil), c.samples...), c.writes
}

func newKey(t testing.TB, p srtp.ProtectionProfile) []byte {
	t.Helper()
	n, err := KeyLen(p)
	if err != nil {
		t.Fatal(err)
	}
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// roundTrip is what G.711 makes of samples: decode(encode(x)).
func roundTripG711(pt uint8, samples []int16) []int16 {
	b := make([]byte, len(samples))
	out := make([]int16, len(samples))
	if pt == PCMU {
		g711.EncodeUlaw(b, samples)
		g711.DecodeUlaw(out, b)
	} else {
		g711.EncodeAlaw(b, samples)
		g711.DecodeAlaw(out, b)
	}
	return out
}

func readAll(t testing.TB, src Source) []int16 {
	t.Helper()
	var all []int16
	buf := make([]int16, 333)
	for {
		n, err := src.ReadSamples(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			return all
		}
	}
}

// hook decides what a relay does with the i-th packet (from 0) going in
// direction dir (0: A to B, 1: B to A): how many copies to forward.
type hook func(dir, i int, pkt []byte) int

// relay forwards datagrams between two sides through two sockets of its
// own, so each side sees the relay as its peer.
type relay struct {
	s [2]*net.UDPConn // s[0] faces side A, s[1] faces side B
}

func (r *relay) addr(side int) netip.AddrPort {
	return r.s[side].LocalAddr().(*net.UDPAddr).AddrPort()
}

func newRelay(t *testing.T) *relay {
	t.Helper()
	r := &relay{}
	for i := range r.s {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
		if err != nil {
			t.Fatal(err)
		}
		r.s[i] = c
		t.Cleanup(func() { c.Close() })
	}
	return r
}

// run forwards what arrives from side A (at s[0]) to dstB and back.
func (r *relay) run(t *testing.T, dstA, dstB netip.AddrPort, h hook) {
	for dir := range 2 {
		in, out, dst := r.s[dir], r.s[1-dir], dstB
		if dir == 1 {
			dst = dstA
		}
		go func() {
			buf := make([]byte, 2048)
			for i := 0; ; i++ {
				n, _, err := in.ReadFromUDPAddrPort(buf)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						t.Logf("relay: %v", err)
					}
					return
				}
				copies := 1
				if h != nil {
					copies = h(dir, i, buf[:n])
				}
				for range copies {
					_, _ = out.WriteToUDPAddrPort(buf[:n], dst)
				}
			}
		}()
	}
}

type callOpts struct {
	profile           srtp.ProtectionProfile
	pt                uint8
	srcA, srcB        Source
	sinkA, sinkB      Sink
	rtpHook, rtcpHook hook // non-nil: a relay in between
	relayed           bool
	rtcpInterval      time.Duration
	wrongKeyAtB       bool
}

type call struct {
	a, b       *Session
	bRTP       netip.AddrPort // B's sockets, for strangers
	bRTCP      netip.AddrPort
	keyA, keyB []byte
}

func localAddr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// startCall starts two sessions on loopback that talk to each other,
// directly or through relays.
func startCall(t *testing.T, o callOpts) *call {
	t.Helper()
	if o.profile == 0 {
		o.profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	}
	aRTP, aRTCP, err := ListenPair(loopback)
	if err != nil {
		t.Fatal(err)
	}
	bRTP, bRTCP, err := ListenPair(loopback)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.UDPConn{aRTP, aRTCP, bRTP, bRTCP} {
		t.Cleanup(func() { c.Close() })
	}
	// Where each side sends: the other side, or the relay's socket facing it.
	aToRTP, aToRTCP := localAddr(bRTP), localAddr(bRTCP)
	bToRTP, bToRTCP := localAddr(aRTP), localAddr(aRTCP)
	if o.relayed || o.rtpHook != nil || o.rtcpHook != nil {
		r1, r2 := newRelay(t), newRelay(t)
		r1.run(t, localAddr(aRTP), localAddr(bRTP), o.rtpHook)
		r2.run(t, localAddr(aRTCP), localAddr(bRTCP), o.rtcpHook)
		aToRTP, aToRTCP = r1.addr(0), r2.addr(0)
		bToRTP, bToRTCP = r1.addr(1), r2.addr(1)
	}
	c := &call{keyA: newKey(t, o.profile), keyB: newKey(t, o.profile), bRTP: localAddr(bRTP), bRTCP: localAddr(bRTCP)}
	remoteAtB := c.keyA
	if o.wrongKeyAtB {
		remoteAtB = newKey(t, o.profile)
	}
	ctx := context.Background()
	c.a, err = Start(ctx, Config{
		RTP: aRTP, RTCP: aRTCP, Remote: aToRTP, RemoteRTCP: aToRTCP,
		PayloadType: o.pt, Profile: o.profile, LocalKey: c.keyA, RemoteKey: c.keyB,
		Source: o.srcA, Sink: o.sinkA, Logger: testLogger(t).With("side", "A"), RTCPInterval: o.rtcpInterval,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.a.Close() })
	c.b, err = Start(ctx, Config{
		RTP: bRTP, RTCP: bRTCP, Remote: bToRTP, RemoteRTCP: bToRTCP,
		PayloadType: o.pt, Profile: o.profile, LocalKey: c.keyB, RemoteKey: remoteAtB,
		Source: o.srcB, Sink: o.sinkB, Logger: testLogger(t).With("side", "B"), RTCPInterval: o.rtcpInterval,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.b.Close() })
	return c
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func netip0() netip.AddrPort { return netip.AddrPortFrom(loopback, 0) }
