package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"testing"
	"time"

	"github.com/pion/srtp/v2"
)

func near(a, b, eps float64) bool { return math.Abs(a-b) <= eps }

// RFC 3550 A.8 by hand: packets every 160 timestamp units arriving
// every 160 units have no jitter; one arriving 80 units late moves J to
// 80/16 = 5, and back on time to 5 + (80-5)/16 = 9.6875, then it decays
// by 15/16 per packet.
func TestJitterKnownInputs(t *testing.T) {
	var j jitterState
	arrive := uint32(1000)
	ts := uint32(4_294_967_000) // wraps during the test
	for range 10 {
		j.update(arrive, ts)
		arrive, ts = arrive+160, ts+160
	}
	if j.j != 0 {
		t.Fatalf("jitter %v for a perfectly paced stream", j.j)
	}
	j.update(arrive+80, ts)
	if !near(j.j, 5, 1e-9) {
		t.Fatalf("after one late packet: %v, want 5", j.j)
	}
	arrive, ts = arrive+160, ts+160
	j.update(arrive, ts)
	if !near(j.j, 9.6875, 1e-9) {
		t.Fatalf("back on time: %v, want 9.6875", j.j)
	}
	arrive, ts = arrive+160, ts+160
	j.update(arrive, ts)
	if !near(j.j, 9.6875*15/16, 1e-9) {
		t.Fatalf("decay: %v, want %v", j.j, 9.6875*15/16)
	}
}

// RFC 3550 A.3 loss: gaps count, reordering does not, sequence numbers
// wrap, a lone large jump is discarded and two in a row restart.
func TestSequenceLoss(t *testing.T) {
	tests := []struct {
		name     string
		seqs     []uint16
		lost     uint64
		received uint64
		extMax   uint64
	}{
		{"in order", []uint16{10, 11, 12, 13}, 0, 4, 13},
		{"one gap", []uint16{10, 11, 13, 14}, 1, 4, 14},
		{"reordered", []uint16{10, 12, 11, 13}, 0, 4, 13},
		{"reordered across a gap", []uint16{10, 13, 11, 14}, 1, 4, 14},
		{"wrap", []uint16{65534, 65535, 0, 1}, 0, 4, 65536 + 1},
		{"wrap with loss and reorder", []uint16{65533, 0, 65535, 2}, 2, 4, 65536 + 2},
		{"lone jump discarded", []uint16{10, 11, 5000, 12}, 0, 3, 12},
		{"confirmed jump restarts", []uint16{10, 11, 5000, 5001, 5003}, 1, 2, 5003}, // counts start again at 5001
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s seqState
			for _, q := range tc.seqs {
				s.update(q)
			}
			if s.lost() != tc.lost || s.received != tc.received || s.extendedMax() != tc.extMax {
				t.Errorf("lost %d received %d extended max %d, want %d %d %d", s.lost(), s.received, s.extendedMax(), tc.lost, tc.received, tc.extMax)
			}
		})
	}
}

func TestEModel(t *testing.T) {
	// G.107's defaults give R = 93.2 with no delay and no loss.
	if r := eRo - eIs - delayImpairment(0); !near(r, 93.2, 0.05) {
		t.Errorf("R with default parameters = %.3f, want 93.2", r)
	}
	if m := MOSFromR(93.2); !near(m, 4.41, 0.005) {
		t.Errorf("MOS(93.2) = %.3f, want 4.41", m)
	}
	for _, tc := range []struct{ r, mos float64 }{{-5, 1}, {0, 1}, {50, 2.58}, {70, 3.60}, {80, 4.02}, {100, 4.5}, {120, 4.5}} {
		if m := MOSFromR(tc.r); !near(m, tc.mos, 0.005) {
			t.Errorf("MOS(%v) = %.3f, want %.2f", tc.r, m, tc.mos)
		}
	}
	// Idd by hand: X = log2(Ta/100); 200 ms: 25((2)^1/6 - 3(1+3^-6)^1/6 + 2).
	for _, tc := range []struct{ ta, want float64 }{{50, 0}, {100, 0}, {200, 3.044}, {400, 24.07}} {
		if got := absoluteDelayImpairment(tc.ta); !near(got, tc.want, 0.01) {
			t.Errorf("Idd(%v) = %.3f, want %.3f", tc.ta, got, tc.want)
		}
	}
	if delayImpairment(400) <= delayImpairment(200) || delayImpairment(200) <= delayImpairment(20) {
		t.Error("Id does not grow with delay")
	}
	base := Quality{Ptime: 20 * time.Millisecond}
	clean := RFactor(base)
	if !near(clean, 92.6, 0.3) {
		t.Errorf("R for a clean 20 ms call = %.2f, want about 92.6", clean)
	}
	// Ie,eff = 95·Ppl/(Ppl + Bpl): 1% loss costs 17.9 without PLC, 3.64 with.
	loss := base
	loss.Loss = 0.01
	if d := clean - RFactor(loss); !near(d, 95.0/5.3, 0.01) {
		t.Errorf("1%% loss without PLC costs %.3f, want %.3f", d, 95.0/5.3)
	}
	loss.PLC = true
	if d := clean - RFactor(loss); !near(d, 95.0/26.1, 0.01) {
		t.Errorf("1%% loss with PLC costs %.3f, want %.3f", d, 95.0/26.1)
	}
	// Jitter and RTT count as delay: 150 ms RTT and 10 ms jitter make
	// Ta = 75 + 20 + 20 = 115 ms.
	d := Quality{RTT: 150 * time.Millisecond, Jitter: 10 * time.Millisecond}
	if ow := d.OneWayDelay(); ow != 115*time.Millisecond {
		t.Errorf("one-way delay %v, want 115ms", ow)
	}
	if EstimateMOS(d) >= EstimateMOS(base) {
		t.Errorf("delay does not lower MOS")
	}
	if m := EstimateMOS(Quality{Loss: 0.1}); m > 2 {
		t.Errorf("MOS %.2f with 10%% loss without PLC", m)
	}
}

// The pipeline without sockets: packets shuffled within the reorder depth
// come out in order with nothing lost; a packet later than that is
// dropped as late and its frame played as silence.
func TestInboundReorder(t *testing.T) {
	p := srtp.ProtectionProfileAes128CmHmacSha1_80
	key := newKey(t, p)
	out, err := NewOutbound(p, key, PCMU)
	if err != nil {
		t.Fatal(err)
	}
	sink := &capture{}
	in, err := NewInbound(p, key, PCMU, sink)
	if err != nil {
		t.Fatal(err)
	}
	const frames = 40
	var pkts [][]byte
	var sent []int16
	for f := range frames {
		fr := make([]int16, 160)
		for i := range fr {
			fr[i] = int16(f*100 + i + 1)
		}
		sent = append(sent, fr...)
		pkt, err := out.Packet(nil, fr)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, pkt)
	}
	// Swap neighbours and move one packet 3 places later: within depth.
	order := []int{0}
	for i := 1; i < 19; i += 2 {
		order = append(order, i+1, i)
	}
	order = append(order, 19)
	order = append(order, 21, 22, 23, 20)
	// Packet 24 arrives after 24+depth+1 others: too late.
	for i := 25; i < frames; i++ {
		order = append(order, i)
		if i == 25+reorderDepth+1 {
			order = append(order, 24)
		}
	}
	now := time.Now()
	for k, i := range order {
		if err := in.Receive(append([]byte(nil), pkts[i]...), now.Add(time.Duration(k)*20*time.Millisecond)); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
	in.Flush()
	st := in.Stats()
	if st.PacketsReceived != frames || st.PacketsLost != 0 || st.LateDropped != 1 {
		t.Fatalf("stats %+v", st)
	}
	got, _ := sink.get()
	want := roundTripG711(PCMU, sent)
	clear(want[24*160 : 25*160]) // played as silence
	if len(got) != len(want) {
		t.Fatalf("%d samples, want %d", len(got), len(want))
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("sample %d (frame %d): %d, want %d", i, i/160, got[i], want[i])
	}
	// The same packet again is a replay.
	if err := in.Receive(append([]byte(nil), pkts[30]...), now); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	// Tampering fails authentication.
	bad := append([]byte(nil), pkts[39]...)
	bad[20] ^= 1
	bad[2]++ // a sequence number not yet seen, so the replay window passes it
	if err := in.Receive(bad, now); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v", err)
	}
}

// Forged packets with many SSRCs before the real stream do not stop it
// from being accepted, and once it is, other SSRCs are refused unread.
func TestInboundSSRCBound(t *testing.T) {
	p := srtp.ProtectionProfileAeadAes128Gcm
	key := newKey(t, p)
	in, err := NewInbound(p, key, PCMA, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := make([]byte, 12+160+16)
	forged[0] = 0x80
	for i := range 100 {
		binary.BigEndian.PutUint32(forged[8:], uint32(i))
		if err := in.Receive(append([]byte(nil), forged...), time.Now()); !errors.Is(err, ErrAuth) {
			t.Fatalf("forged %d: %v", i, err)
		}
	}
	out, _ := NewOutbound(p, key, PCMA)
	pkt, _ := out.Packet(nil, make([]int16, 160))
	if err := in.Receive(pkt, time.Now()); err != nil {
		t.Fatalf("real packet after forgeries: %v", err)
	}
	if err := in.Receive(append([]byte(nil), forged...), time.Now()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("other ssrc after lock: %v", err)
	}
}

func TestWAV(t *testing.T) {
	var buf seekBuffer
	w, err := NewWAVWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	samples := readAll(t, NewTone(700, 30000, 250*time.Millisecond))
	if err := w.WriteSamples(samples[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteSamples(samples[1000:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.b
	if got := binary.LittleEndian.Uint32(b[40:]); got != uint32(2*len(samples)) {
		t.Fatalf("data size %d, want %d", got, 2*len(samples))
	}
	if got := binary.LittleEndian.Uint32(b[4:]); got != uint32(36+2*len(samples)) {
		t.Fatalf("RIFF size %d", got)
	}
	r, err := NewWAVReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); firstDiff(got, samples) >= 0 || len(got) != len(samples) {
		t.Fatal("samples differ after a WAV round trip")
	}
	// An extra chunk before the data and a streaming (size 0) data chunk.
	ext := append([]byte(nil), b[:36]...)
	ext = append(ext, "LIST\x04\x00\x00\x00abcd"...)
	ext = append(ext, "data\x00\x00\x00\x00"...)
	ext = append(ext, b[44:]...)
	binary.LittleEndian.PutUint32(ext[4:], 0)
	r, err = NewWAVReader(bytes.NewReader(ext))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); len(got) != len(samples) {
		t.Fatalf("streaming wav: %d samples, want %d", len(got), len(samples))
	}

	refuse := []struct {
		name  string
		patch func([]byte)
		want  error
	}{
		{"not riff", func(h []byte) { copy(h, "RIFX") }, ErrNotWAV},
		{"16 kHz", func(h []byte) {
			binary.LittleEndian.PutUint32(h[24:], 16000)
			binary.LittleEndian.PutUint32(h[28:], 32000)
		}, ErrWAVFormat},
		{"stereo", func(h []byte) { binary.LittleEndian.PutUint16(h[22:], 2) }, ErrWAVFormat},
		{"8-bit", func(h []byte) { binary.LittleEndian.PutUint16(h[34:], 8) }, ErrWAVFormat},
		{"float", func(h []byte) { binary.LittleEndian.PutUint16(h[20:], 3) }, ErrWAVFormat},
		{"μ-law", func(h []byte) { binary.LittleEndian.PutUint16(h[20:], 7) }, ErrWAVFormat},
		{"huge fmt", func(h []byte) { binary.LittleEndian.PutUint32(h[16:], 1<<30) }, ErrWAVFormat},
	}
	for _, tc := range refuse {
		h := append([]byte(nil), b...)
		tc.patch(h)
		if _, err := NewWAVReader(bytes.NewReader(h)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := OpenWAV("/nonexistent/x.wav"); err == nil {
		t.Error("opened a missing file")
	}
}

func TestToneDeterministic(t *testing.T) {
	a := readAll(t, NewTone(1000, 16000, 100*time.Millisecond))
	b := readAll(t, NewTone(1000, 16000, 100*time.Millisecond))
	if len(a) != 800 || firstDiff(a, b) >= 0 {
		t.Fatalf("tone: %d samples, or two tones differ", len(a))
	}
	// 1 kHz at 8 kHz: sample 2 is the crest.
	if a[0] != 0 || a[2] != 16000 || a[6] != -16000 {
		t.Fatalf("tone samples %v", a[:8])
	}
	if _, err := NewTone(1, 1, 0).ReadSamples(make([]int16, 4)); err != io.EOF {
		t.Fatalf("empty tone: %v", err)
	}
}

// seekBuffer is an in-memory io.WriteSeeker.
type seekBuffer struct {
	b   []byte
	pos int
}

func (s *seekBuffer) Write(p []byte) (int, error) {
	if need := s.pos + len(p); need > len(s.b) {
		s.b = append(s.b, make([]byte, need-len(s.b))...)
	}
	copy(s.b[s.pos:], p)
	s.pos += len(p)
	return len(p), nil
}

func (s *seekBuffer) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekStart {
		return 0, errors.New("only SeekStart")
	}
	s.pos = int(off)
	return off, nil
}
