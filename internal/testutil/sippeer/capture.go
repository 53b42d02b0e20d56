package sippeer

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// maxPcap bounds how much of a capture file is read.
const maxPcap = 256 << 20

// Capture is a tshark capture on the loopback interface. tshark needs
// capture privileges (root, or dumpcap's capabilities).
//
// tshark writes the capture to a pipe that Capture reads as it comes; a
// probe datagram to a port of its own, sent and seen in the capture, tells
// when capturing has begun and when everything sent before Stop is in.
type Capture struct {
	// Path is a copy of the capture file (classic pcap), complete after Stop.
	Path string

	t     testing.TB
	proc  *proc
	logs  testutil.SyncBuffer
	probe *net.UDPConn // receives (and discards) the probe datagrams
	seq   int

	mu      sync.Mutex
	pcap    []byte
	readErr error
	copied  chan struct{} // closed when tshark's output ended
	stopped bool
}

// StartCapture starts tshark on "lo" capturing TCP and UDP packets to or
// from any of ports (all loopback traffic if none) and waits until it
// captures. It is stopped in t.Cleanup.
func StartCapture(t testing.TB, ports ...uint16) *Capture {
	t.Helper()
	bin := testutil.RequireBinary(t, "tshark", Hint)
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("sippeer: probe socket: %v", err)
	}
	c := &Capture{Path: filepath.Join(t.TempDir(), "capture.pcap"), t: t, probe: probe, copied: make(chan struct{})}
	go func() {
		// Drain the probe socket so the kernel never answers with ICMP.
		buf := make([]byte, 64)
		for {
			if _, _, err := probe.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	filter := []string{"udp port " + strconv.Itoa(c.probePort())}
	if len(ports) == 0 {
		filter = []string{"tcp or udp"}
	}
	for _, p := range ports {
		filter = append(filter, "port "+strconv.Itoa(int(p)))
	}
	cmd := exec.Command(bin, "-i", "lo", "-F", "pcap", "-w", "-", "-f", strings.Join(filter, " or "))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &c.logs
	p, err := startProc(cmd, nil)
	if err != nil {
		t.Fatalf("sippeer: %v", err)
	}
	c.proc = p
	go c.copy(out)
	t.Cleanup(func() {
		c.Stop()
		_ = probe.Close()
		if t.Failed() {
			t.Logf("tshark (%s):\n%s", c.Path, c.logs.String())
		}
	})
	if err := c.sync(readyTimeout); err != nil {
		t.Fatalf("sippeer: tshark not capturing (it needs root or dumpcap's capabilities): %v\n%s", err, c.logs.String())
	}
	return c
}

func (c *Capture) probePort() int { return c.probe.LocalAddr().(*net.UDPAddr).Port }

// copy keeps tshark's output in memory and in Path.
func (c *Capture) copy(r io.Reader) {
	defer close(c.copied)
	f, err := os.Create(c.Path)
	if err != nil {
		c.mu.Lock()
		c.readErr = err
		c.mu.Unlock()
		_, _ = io.Copy(io.Discard, r)
		return
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = f.Write(buf[:n])
			c.mu.Lock()
			if len(c.pcap)+n > maxPcap {
				c.readErr = fmt.Errorf("capture larger than %d bytes", maxPcap)
			} else {
				c.pcap = append(c.pcap, buf[:n]...)
			}
			c.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// sync sends probe datagrams until one shows up in the capture.
func (c *Capture) sync(timeout time.Duration) error {
	c.seq++
	marker := []byte(fmt.Sprintf("sippeer-capture-probe-%d-%d", os.Getpid(), c.seq))
	conn, err := net.DialUDP("udp4", nil, c.probe.LocalAddr().(*net.UDPAddr))
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	for {
		_, _ = conn.Write(marker)
		for i := 0; i < 5; i++ {
			time.Sleep(20 * time.Millisecond)
			c.mu.Lock()
			found, rerr := bytes.Contains(c.pcap, marker), c.readErr
			c.mu.Unlock()
			if found {
				return nil
			}
			if rerr != nil {
				return rerr
			}
		}
		select {
		case <-c.proc.exited:
			return fmt.Errorf("tshark exited: %s", c.proc.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("probe not captured after %s", timeout)
		}
	}
}

// Stop waits until what was sent so far is captured, ends the capture and
// returns the path of the capture file. It may be called more than once.
func (c *Capture) Stop() string {
	c.mu.Lock()
	stopped := c.stopped
	c.stopped = true
	c.mu.Unlock()
	if stopped {
		return c.Path
	}
	if err := c.sync(stopTimeout); err != nil {
		c.t.Logf("sippeer: capture may miss the last packets: %v", err)
	}
	c.proc.stop()
	select {
	case <-c.copied:
	case <-time.After(stopTimeout):
	}
	return c.Path
}

// Packets stops the capture and returns its TCP and UDP packets, without
// the probes.
func (c *Capture) Packets() ([]Packet, error) {
	c.Stop()
	c.mu.Lock()
	data, rerr := c.pcap, c.readErr
	c.mu.Unlock()
	if rerr != nil {
		return nil, fmt.Errorf("capturing: %w", rerr)
	}
	all, err := ReadPcap(bytes.NewReader(data), maxPcap)
	if err != nil {
		return nil, err
	}
	probe := uint16(c.probePort())
	pkts := all[:0]
	for _, p := range all {
		if p.Proto == "udp" && (p.Dst.Port() == probe || p.Src.Port() == probe) {
			continue
		}
		pkts = append(pkts, p)
	}
	return pkts, nil
}

// PlaintextSIP stops the capture and describes every packet (and TCP stream)
// that carries a SIP request or status line in clear, e.g.
// "udp 127.0.0.1:5060 > 127.0.0.1:40000: REGISTER sip:dialtone.test SIP/2.0".
func (c *Capture) PlaintextSIP() ([]string, error) {
	pkts, err := c.Packets()
	if err != nil {
		return nil, err
	}
	var found []string
	for _, s := range streams(pkts) {
		for _, line := range SIPLines(s.payload) {
			found = append(found, fmt.Sprintf("%s %s > %s: %s", s.proto, s.src, s.dst, line))
		}
	}
	return found, nil
}

// ContainsPayload stops the capture and reports whether b occurs in any UDP
// datagram or TCP stream (one direction of a connection, reassembled in
// capture order).
func (c *Capture) ContainsPayload(b []byte) (bool, error) {
	pkts, err := c.Packets()
	if err != nil {
		return false, err
	}
	for _, s := range streams(pkts) {
		if bytes.Contains(s.payload, b) {
			return true, nil
		}
	}
	return false, nil
}

type stream struct {
	proto    string
	src, dst string
	payload  []byte
}

// streams returns each UDP datagram, and each TCP direction's payloads
// concatenated: loopback TCP neither reorders nor drops.
func streams(pkts []Packet) []stream {
	var out []stream
	tcp := map[string]int{}
	for _, p := range pkts {
		s := stream{proto: p.Proto, src: p.Src.String(), dst: p.Dst.String()}
		if p.Proto == "udp" {
			s.payload = p.Payload
			out = append(out, s)
			continue
		}
		key := s.src + ">" + s.dst
		i, ok := tcp[key]
		if !ok {
			i = len(out)
			tcp[key] = i
			out = append(out, s)
		}
		out[i].payload = append(out[i].payload, p.Payload...)
	}
	return out
}

var sipMethods = []string{"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}

// SIPLines returns the SIP request and status lines in b: lines starting
// with "SIP/2.0 " or of the form "METHOD uri SIP/2.0".
func SIPLines(b []byte) []string {
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
			out = append(out, string(line))
			continue
		}
		if !bytes.HasSuffix(line, []byte(" SIP/2.0")) {
			continue
		}
		for _, m := range sipMethods {
			if bytes.HasPrefix(line, []byte(m+" ")) {
				out = append(out, string(line))
				break
			}
		}
	}
	return out
}
