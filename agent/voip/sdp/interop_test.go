package sdp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/srtp/v2"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// These tests hold our SDP against a real peer: baresip with mediaenc=srtp-mand. A few bare SIP
// messages over UDP carry the SDP (SIP itself is another package's job). Success means baresip
// accepted our SDP and keys: the SRTP audio it then sends decrypts with the negotiated RemoteKey.

type baresip struct {
	sipAddr *net.UDPAddr
	mu      sync.Mutex
	log     bytes.Buffer
}

func (b *baresip) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.Write(p)
}

func (b *baresip) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// startBaresip runs baresip on a free loopback port with an auto-answering
// srtp-mand account. baresip cannot report the port it bound, so the test
// picks one and hands it over; another process may take it in between
// (baresip binds UDP, TCP and TLS), so a start that fails to bind is tried
// again on another port.
func startBaresip(t *testing.T, extra ...string) *baresip {
	t.Helper()
	bin, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip not found: install it (apt-get install baresip) to run the interop tests")
	}
	modules := "/usr/lib/baresip/modules"
	if _, err := os.Stat(filepath.Join(modules, "srtp.so")); err != nil {
		t.Fatalf("baresip srtp module missing (%v): install baresip-core", err)
	}
	var last string
	for range 5 {
		b, ok := tryBaresip(t, bin, modules, extra)
		if ok {
			return b
		}
		last = b.String()
	}
	t.Fatalf("baresip did not start in 5 tries; last output:\n%s", last)
	return nil
}

// tryBaresip starts baresip and waits for "baresip is ready."; false when
// it exited first (a port taken under it).
func tryBaresip(t *testing.T, bin, modules string, extra []string) (*baresip, bool) {
	t.Helper()
	port := freeSIPPort(t)
	dir := t.TempDir()
	config := fmt.Sprintf(`sip_listen 127.0.0.1:%d
module_path %s
module g711.so
module srtp.so
module ausine.so
module aubridge.so
module_app account.so
module_app menu.so
audio_player aubridge,nil
audio_alert aubridge,nil
audio_source ausine,440
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
sip_trans_def udp
`, port, modules)
	account := "<sip:alice@127.0.0.1>;regint=0;mediaenc=srtp-mand;answermode=auto;audio_codecs=PCMU,PCMA\n"
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(account), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &baresip{sipAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
	cmd := exec.Command(bin, append([]string{"-f", dir, "-t", "30"}, extra...)...)
	cmd.Stdout, cmd.Stderr = b, b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), "baresip is ready."); {
		select {
		case <-exited:
			return b, false
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("baresip not ready after 10s:\n%s", b)
		}
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("baresip output:\n%s", b)
		}
	})
	return b, true
}

// freeSIPPort is a loopback port free for UDP and TCP, with the next one
// free too (baresip's TLS listener).
func freeSIPPort(t *testing.T) int {
	t.Helper()
	return testutil.FreePorts(t, 2)
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type sipMsg struct {
	first   string
	headers map[string][]string // lower-case long names
	body    []byte
	from    *net.UDPAddr
}

var compact = map[string]string{"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length", "c": "content-type"}

func readSIP(t *testing.T, c *net.UDPConn, deadline time.Time) (sipMsg, bool) {
	t.Helper()
	buf := make([]byte, 65535)
	_ = c.SetReadDeadline(deadline)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return sipMsg{}, false
	}
	head, body, _ := bytes.Cut(buf[:n], []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	m := sipMsg{first: lines[0], headers: map[string][]string{}, body: bytes.Clone(body), from: from}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		k = strings.ToLower(strings.TrimSpace(k))
		if long, ok := compact[k]; ok {
			k = long
		}
		m.headers[k] = append(m.headers[k], strings.TrimSpace(v))
	}
	return m, true
}

func (m sipMsg) h(name string) string {
	if v := m.headers[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// decryptAudio reads RTP from conn until three packets decrypt with the negotiated remote key.
func decryptAudio(t *testing.T, conn *net.UDPConn, n Negotiated) {
	t.Helper()
	prof, ok := n.Suite.Profile()
	if !ok || !n.SRTP {
		t.Fatalf("negotiated %+v is not SRTP with a known suite", n)
	}
	kl := n.Suite.KeyLen()
	ctx, err := srtp.CreateContext(n.RemoteKey[:kl], n.RemoteKey[kl:], prof)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(10 * time.Second)
	for ok := 0; ok < 3; {
		_ = conn.SetReadDeadline(deadline)
		k, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("after %d packets: %v", ok, err)
		}
		plain, err := ctx.DecryptRTP(nil, buf[:k], nil)
		if err != nil {
			t.Fatalf("SRTP from baresip does not decrypt with the negotiated key (%s): %v", n.Suite, err)
		}
		if pt := plain[1] & 0x7f; pt != n.Codec.PT {
			t.Fatalf("baresip sends payload type %d, negotiated %d", pt, n.Codec.PT)
		}
		ok++
	}
}

func TestBaresipAnswersOurOffer(t *testing.T) {
	b := startBaresip(t)
	sipConn, rtpConn := listenUDP(t), listenUDP(t)
	me := sipConn.LocalAddr().(*net.UDPAddr)
	rtpAddr := rtpConn.LocalAddr().(*net.UDPAddr).AddrPort()

	s := NewSession("dialtone", nil)
	offered := Media{RTP: rtpAddr, Codecs: []Codec{PCMU, PCMA}}
	for i, suite := range DefaultSuites {
		c, err := NewCrypto(i+1, suite, nil)
		if err != nil {
			t.Fatal(err)
		}
		offered.Cryptos = append(offered.Cryptos, c)
	}
	offer, err := s.Offer(offered)
	if err != nil {
		t.Fatal(err)
	}
	common := fmt.Sprintf("From: <sip:bob@%s>;tag=dt1\r\nCall-ID: sdp-interop-1@127.0.0.1\r\nMax-Forwards: 70\r\n", me)
	invite := fmt.Sprintf("INVITE sip:alice@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-inv1;rport\r\n%sTo: <sip:alice@%s>\r\n"+
		"CSeq: 1 INVITE\r\nContact: <sip:bob@%s>\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		b.sipAddr, me, common, b.sipAddr, me, len(offer), offer)

	// Resend like SIP timer A until baresip, which may still be starting, responds with a final answer.
	var final sipMsg
	for deadline := time.Now().Add(15 * time.Second); final.first == "" && time.Now().Before(deadline); {
		if _, err := sipConn.WriteToUDP([]byte(invite), b.sipAddr); err != nil {
			t.Fatal(err)
		}
		for {
			m, ok := readSIP(t, sipConn, time.Now().Add(500*time.Millisecond))
			if !ok {
				break
			}
			if strings.HasPrefix(m.first, "SIP/2.0 1") {
				continue
			}
			final = m
			break
		}
	}
	if !strings.HasPrefix(final.first, "SIP/2.0 200") {
		t.Fatalf("baresip's final response to our offer: %q\n%s", final.first, offer)
	}
	ack := fmt.Sprintf("ACK sip:alice@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ack1;rport\r\n%sTo: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		b.sipAddr, me, common, final.h("to"))
	if _, err := sipConn.WriteToUDP([]byte(ack), b.sipAddr); err != nil {
		t.Fatal(err)
	}

	n, err := s.Accept(final.body, offered, DefaultPolicy())
	if err != nil {
		t.Fatalf("Accept(baresip's answer): %v\n%s", err, final.body)
	}
	t.Logf("baresip chose %s, %s", n.Suite, n.Codec.Name)
	if n.Direction != SendRecv || n.Codec != PCMU {
		t.Errorf("negotiated %+v", n)
	}
	decryptAudio(t, rtpConn, n)
}

func TestBaresipOfferWeAnswer(t *testing.T) {
	sipConn, rtpConn := listenUDP(t), listenUDP(t)
	me := sipConn.LocalAddr().(*net.UDPAddr)
	startBaresip(t, "-e", fmt.Sprintf("/dial sip:bob@%s", me))

	var invite sipMsg
	for deadline := time.Now().Add(15 * time.Second); ; {
		m, ok := readSIP(t, sipConn, deadline)
		if !ok {
			t.Fatal("no INVITE from baresip")
		}
		if strings.HasPrefix(m.first, "INVITE ") {
			invite = m
			break
		}
	}
	local := rtpConn.LocalAddr().(*net.UDPAddr).AddrPort()
	answer, n, err := NewSession("dialtone", nil).Answer(invite.body, local, DefaultPolicy(), nil)
	if err != nil {
		t.Fatalf("Answer(baresip's offer): %v\n%s", err, invite.body)
	}
	var via strings.Builder
	for _, v := range invite.headers["via"] {
		fmt.Fprintf(&via, "Via: %s\r\n", v)
	}
	ok200 := fmt.Sprintf("SIP/2.0 200 OK\r\n%sFrom: %s\r\nTo: %s;tag=dt2\r\nCall-ID: %s\r\nCSeq: %s\r\nContact: <sip:bob@%s>\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		via.String(), invite.h("from"), invite.h("to"), invite.h("call-id"), invite.h("cseq"), me, len(answer), answer)

	// Resend the 200 until ACKed, as a UAS does; a BYE instead means baresip refused our answer.
	acked := false
	for deadline := time.Now().Add(10 * time.Second); !acked && time.Now().Before(deadline); {
		if _, err := sipConn.WriteToUDP([]byte(ok200), invite.from); err != nil {
			t.Fatal(err)
		}
		for {
			m, ok := readSIP(t, sipConn, time.Now().Add(500*time.Millisecond))
			if !ok {
				break
			}
			if strings.HasPrefix(m.first, "ACK ") {
				acked = true
				break
			}
			if strings.HasPrefix(m.first, "BYE ") {
				t.Fatalf("baresip hung up on our answer:\n%s", answer)
			}
		}
	}
	if !acked {
		t.Fatal("baresip never ACKed our 200")
	}
	if n.Remote.Port() == 0 || n.Codec.Name != "PCMU" {
		t.Errorf("negotiated %+v", n)
	}
	// baresip sends to the c= address of our answer; check what it advertised for itself too.
	if !regexp.MustCompile(`(?m)^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:`).Match(answer) {
		t.Errorf("answer does not take baresip's tag 1:\n%s", answer)
	}
	if n.Local != netip.AddrPortFrom(local.Addr(), local.Port()) {
		t.Errorf("local %v, want %v", n.Local, local)
	}
	decryptAudio(t, rtpConn, n)
}
