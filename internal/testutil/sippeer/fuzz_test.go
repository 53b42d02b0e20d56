package sippeer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

func FuzzParseSippStats(f *testing.F) {
	f.Add([]byte("StartTime;SuccessfulCall(C);FailedCall(C)\n2026;1;0\n"))
	f.Add([]byte("a;b\r\n1;2\r\n3\r\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseSippStats(bytes.NewReader(b))
		if err == nil && m == nil {
			t.Fatal("nil map without error")
		}
	})
}

func FuzzReadNetstring(f *testing.F) {
	f.Add([]byte(`12:{"event":1},`))
	f.Add([]byte("0:,"))
	f.Add([]byte("999999999999:x,"))
	f.Add([]byte("3:abc;"))
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := ReadNetstring(bufio.NewReader(bytes.NewReader(b)), 1024)
		if err == nil && (len(msg) > 1024 || !bytes.Contains(b, msg)) {
			t.Fatalf("ReadNetstring(%q) = %q", b, msg)
		}
	})
}

func FuzzReadWAV(f *testing.F) {
	var w bytes.Buffer
	w.WriteString("RIFF\x00\x00\x00\x00WAVEfmt ")
	_ = binary.Write(&w, binary.LittleEndian, []uint32{16})
	_ = binary.Write(&w, binary.LittleEndian, []uint16{1, 1})
	_ = binary.Write(&w, binary.LittleEndian, []uint32{8000, 16000})
	_ = binary.Write(&w, binary.LittleEndian, []uint16{2, 16})
	w.WriteString("data\x04\x00\x00\x00\x01\x00\xff\xff")
	f.Add(w.Bytes())
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rate, s, err := ReadWAV(bytes.NewReader(b), 1<<20)
		if err == nil && (rate < 0 || 2*len(s) > len(b)) {
			t.Fatalf("ReadWAV: rate %d, %d samples from %d bytes", rate, len(s), len(b))
		}
	})
}

func FuzzReadPcap(f *testing.F) {
	f.Add(pcapFile([]byte("SIP/2.0 200 OK\r\n")))
	f.Add(pcapFile(nil)[:30])
	f.Add([]byte("\xd4\xc3\xb2\xa1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, _ := ReadPcap(bytes.NewReader(b), 1<<20)
		for _, p := range pkts {
			if len(p.Payload) > len(b) || (p.Proto != "tcp" && p.Proto != "udp") {
				t.Fatalf("bad packet %+v", p)
			}
			_ = SIPLines(p.Payload)
		}
	})
}

// pcapFile is a pcap file (Ethernet) with one UDP packet
// 127.0.0.1:5060 > 127.0.0.1:40000 carrying payload.
func pcapFile(payload []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	_ = binary.Write(&b, le, []uint32{0xa1b2c3d4})
	_ = binary.Write(&b, le, []uint16{2, 4})
	_ = binary.Write(&b, le, []uint32{0, 0, 65535, linkEthernet})
	frame := make([]byte, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	ip := frame[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[9] = 17
	copy(ip[12:], []byte{127, 0, 0, 1, 127, 0, 0, 1})
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp, 5060)
	binary.BigEndian.PutUint16(udp[2:], 40000)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	_ = binary.Write(&b, le, []uint32{0, 0, uint32(len(frame)), uint32(len(frame))})
	b.Write(frame)
	return b.Bytes()
}

func TestReadPcapAndSIPLines(t *testing.T) {
	pkts, err := ReadPcap(bytes.NewReader(pcapFile([]byte("INVITE sip:bob@x SIP/2.0\r\nVia: x\r\n\r\n"))), 1<<20)
	if err != nil || len(pkts) != 1 {
		t.Fatalf("ReadPcap = %v, %v", pkts, err)
	}
	p := pkts[0]
	if p.Proto != "udp" || p.Src.String() != "127.0.0.1:5060" || p.Dst.String() != "127.0.0.1:40000" {
		t.Fatalf("packet %+v", p)
	}
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"INVITE sip:bob@x SIP/2.0\r\nVia: x\r\n", []string{"INVITE sip:bob@x SIP/2.0"}},
		{"SIP/2.0 488 Not Acceptable Here\r\n", []string{"SIP/2.0 488 Not Acceptable Here"}},
		{"\x17\x03\x03 random TLS bytes SIP", nil},
		{"FOO sip:x SIP/2.0\r\n", nil},
	} {
		if got := SIPLines([]byte(tt.in)); strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("SIPLines(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestWAVRoundTrip(t *testing.T) {
	path := t.TempDir() + "/t.wav"
	tone := Tone(8000, 1000, 0.1)
	if err := WriteWAV(path, 8000, tone); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rate, got, err := ReadWAV(f, 1<<20)
	if err != nil || rate != 8000 || len(got) != len(tone) || got[2] != tone[2] {
		t.Fatalf("ReadWAV = %d, %d samples, %v", rate, len(got), err)
	}
	// G.711 µ-law reference points (ITU-T G.711 table 2a).
	if got := PCMU([]int16{0, -1, 32767, -32768}); !bytes.Equal(got, []byte{0xff, 0x7f, 0x80, 0x00}) {
		t.Errorf("PCMU = % x", got)
	}
}
