package media

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"
)

// FuzzWAV: the header parser and sample reader take any bytes without
// panicking, read no more than they are given, and what they accept is
// 8 kHz 16-bit mono PCM.
func FuzzWAV(f *testing.F) {
	var good seekBuffer
	w, _ := NewWAVWriter(&good)
	_ = w.WriteSamples([]int16{1, -2, 3, 32767, -32768})
	_ = w.Close()
	f.Add(good.b)
	f.Add(good.b[:44])
	f.Add(good.b[:30])
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVE"))
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xff"))
	ext := append([]byte(nil), good.b[:36]...)
	ext = append(ext, "LIST\x05\x00\x00\x00abcde\x00data\x03\x00\x00\x00\x01\x02\x03"...)
	f.Add(ext)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewWAVReader(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrNotWAV) && !errors.Is(err, ErrWAVFormat) {
				t.Fatalf("error outside the taxonomy: %v", err)
			}
			return
		}
		buf := make([]int16, 7)
		total := 0
		for {
			n, err := r.ReadSamples(buf)
			total += n
			if n > len(buf) || total*2 > len(b) {
				t.Fatalf("read %d samples from %d bytes", total, len(b))
			}
			if err != nil {
				if err != io.EOF {
					t.Fatalf("read error: %v", err)
				}
				break
			}
		}
	})
}

// fuzzKey is the key of FuzzInbound's receiver: packets protected with it
// are in the seeds, so the fuzzer starts from authenticated ones.
var fuzzKey = bytes.Repeat([]byte{0x5a}, 30)

// FuzzInbound: any bytes given to the receive path (as SRTP and as SRTCP)
// neither panic nor reach the sink unless they authenticate, which a
// bare pion context with the same key confirms independently.
func FuzzInbound(f *testing.F) {
	p := srtp.ProtectionProfileAes128CmHmacSha1_80
	out, err := NewOutbound(p, fuzzKey, PCMU)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		pkt, _ := out.Packet(nil, make([]int16, 160+i))
		f.Add(pkt)
		f.Add(pkt[:len(pkt)-1])
		f.Add(pkt[:12])
	}
	sr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: out.SSRC(), Reports: []rtcp.ReceptionReport{{SSRC: 1, LastSenderReport: 5}}}, &rtcp.Goodbye{Sources: []uint32{out.SSRC()}}})
	srtcp, _ := out.protectRTCP(sr)
	f.Add(srtcp)
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		sink := &capture{}
		in, err := NewInbound(p, fuzzKey, PCMU, sink)
		if err != nil {
			t.Fatal(err)
		}
		rtpErr := in.Receive(append([]byte(nil), b...), time.Now())
		in.Flush()
		_, rtcpErr := in.ReceiveRTCP(append([]byte(nil), b...), time.Now())
		_, writes := sink.get()
		if rtpErr != nil {
			if writes != 0 {
				t.Fatalf("refused packet (%v) reached the sink", rtpErr)
			}
			if !errors.Is(rtpErr, ErrInvalid) && !errors.Is(rtpErr, ErrAuth) && !errors.Is(rtpErr, ErrReplayed) {
				t.Fatalf("error outside the taxonomy: %v", rtpErr)
			}
		} else {
			ref, _ := srtp.CreateContext(fuzzKey[:16], fuzzKey[16:], p)
			if _, err := ref.DecryptRTP(nil, b, &rtp.Header{}); err != nil {
				t.Fatalf("accepted a packet pion refuses: %v", err)
			}
		}
		if rtcpErr == nil {
			ref, _ := srtp.CreateContext(fuzzKey[:16], fuzzKey[16:], p)
			if _, err := ref.DecryptRTCP(nil, b, nil); err != nil {
				t.Fatalf("accepted rtcp pion refuses: %v", err)
			}
		}
	})
}
