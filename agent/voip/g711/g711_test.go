package g711

import (
	"slices"
	"testing"
)

// The reference algorithm as written in the Sun/CCITT g711.c (ITU-T
// G.191), segment search and all, to check the bit-length shortcut of the
// encoders against every input.
var (
	segUend = [8]int32{0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF}
	segAend = [8]int32{0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF}
)

func search(v int32, table [8]int32) int32 {
	for i, t := range table {
		if v <= t {
			return int32(i)
		}
	}
	return 8
}

func refLinear2Ulaw(pcm int16) byte {
	v := int32(pcm) >> 2
	var mask int32
	if v < 0 {
		v, mask = -v, 0x7F
	} else {
		mask = 0xFF
	}
	if v > 8159 {
		v = 8159
	}
	v += 0x84 >> 2
	seg := search(v, segUend)
	if seg >= 8 {
		return byte(0x7F ^ mask)
	}
	return byte(((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask)
}

func refLinear2Alaw(pcm int16) byte {
	v := int32(pcm) >> 3
	var mask int32
	if v >= 0 {
		mask = 0xD5
	} else {
		mask, v = 0x55, -v-1
	}
	seg := search(v, segAend)
	if seg >= 8 {
		return byte(0x7F ^ mask)
	}
	a := seg << 4
	if seg < 2 {
		a |= (v >> 1) & 0xF
	} else {
		a |= (v >> seg) & 0xF
	}
	return byte(a ^ mask)
}

func TestEncodersMatchReference(t *testing.T) {
	for x := -32768; x <= 32767; x++ {
		s := int16(x)
		if got, want := LinearToUlaw(s), refLinear2Ulaw(s); got != want {
			t.Fatalf("μ-law(%d) = %#02x, reference %#02x", s, got, want)
		}
		if got, want := LinearToAlaw(s), refLinear2Alaw(s); got != want {
			t.Fatalf("A-law(%d) = %#02x, reference %#02x", s, got, want)
		}
	}
}

// Known values from the G.711 tables (ITU-T G.711 Tables 1a/2a, as
// reproduced in the reference decoders' output).
func TestKnownVectors(t *testing.T) {
	decode := []struct {
		name string
		f    func(byte) int16
		code byte
		want int16
	}{
		{"ulaw", UlawToLinear, 0x00, -32124},
		{"ulaw", UlawToLinear, 0x01, -31100},
		{"ulaw", UlawToLinear, 0x0F, -16764},
		{"ulaw", UlawToLinear, 0x7E, -8},
		{"ulaw", UlawToLinear, 0x7F, 0},
		{"ulaw", UlawToLinear, 0x80, 32124},
		{"ulaw", UlawToLinear, 0xFE, 8},
		{"ulaw", UlawToLinear, 0xFF, 0},
		{"alaw", AlawToLinear, 0x55, -8},
		{"alaw", AlawToLinear, 0xD5, 8},
		{"alaw", AlawToLinear, 0x2A, -32256},
		{"alaw", AlawToLinear, 0xAA, 32256},
		{"alaw", AlawToLinear, 0x00, -5504},
		{"alaw", AlawToLinear, 0x80, 5504},
	}
	for _, tc := range decode {
		if got := tc.f(tc.code); got != tc.want {
			t.Errorf("%s decode %#02x = %d, want %d", tc.name, tc.code, got, tc.want)
		}
	}
	encode := []struct {
		name string
		f    func(int16) byte
		in   int16
		want byte
	}{
		{"ulaw", LinearToUlaw, 0, 0xFF},
		{"ulaw", LinearToUlaw, -1, 0x7E}, // -1>>2 is -1: the smallest negative level, not zero
		{"ulaw", LinearToUlaw, 32767, 0x80},
		{"ulaw", LinearToUlaw, -32768, 0x00},
		{"ulaw", LinearToUlaw, 1000, 0xCE},
		{"ulaw", LinearToUlaw, -1000, 0x4E},
		{"alaw", LinearToAlaw, 0, 0xD5},
		{"alaw", LinearToAlaw, -1, 0x55},
		{"alaw", LinearToAlaw, 32767, 0xAA},
		{"alaw", LinearToAlaw, -32768, 0x2A},
		{"alaw", LinearToAlaw, 1000, 0xFA},
		{"alaw", LinearToAlaw, -1000, 0x7A},
	}
	for _, tc := range encode {
		if got := tc.f(tc.in); got != tc.want {
			t.Errorf("%s encode %d = %#02x, want %#02x", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	codecs := []struct {
		name  string
		enc   func(int16) byte
		dec   func(byte) int16
		trunc int // what the truncation to 14 or 13 bits can lose, in 16-bit units
	}{
		{"ulaw", LinearToUlaw, UlawToLinear, 4},
		{"alaw", LinearToAlaw, AlawToLinear, 8},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			// Decoding a code and encoding the level gives the code back
			// (μ-law's negative zero, 0x7F, decodes to 0 = 0xFF).
			var levels []int
			for i := range 256 {
				code := byte(i)
				y := c.dec(code)
				levels = append(levels, int(y))
				if got := c.enc(y); got != code && !(c.name == "ulaw" && code == 0x7F) {
					t.Errorf("enc(dec(%#02x)=%d) = %#02x", code, y, got)
				}
			}
			slices.Sort(levels)
			levels = slices.Compact(levels)
			prev := -1 << 20
			for x := -32768; x <= 32767; x++ {
				y := int(c.dec(c.enc(int16(x))))
				if y < prev {
					t.Fatalf("not monotonic at %d: %d after %d", x, y, prev)
				}
				prev = y
				// Inside the levels' range the error is at most half the
				// quantisation step at the level chosen (segments differ in
				// step, so a decision boundary between segments is not
				// halfway) plus what the truncation loses; outside it the
				// encoder clips.
				if x < levels[0] || x > levels[len(levels)-1] {
					continue
				}
				j, _ := slices.BinarySearch(levels, y)
				step := 0
				if j > 0 {
					step = levels[j] - levels[j-1]
				}
				if j+1 < len(levels) {
					step = max(step, levels[j+1]-levels[j])
				}
				if err := abs(x - y); err > step/2+c.trunc {
					t.Fatalf("%d -> %d: error %d exceeds %d", x, y, err, step/2+c.trunc)
				}
			}
		})
	}
}

func TestSliceFunctions(t *testing.T) {
	src := []int16{0, 1000, -1000, 32767, -32768, 123, -4567}
	u := make([]byte, len(src))
	a := make([]byte, len(src))
	EncodeUlaw(u, src)
	EncodeAlaw(a, src)
	du := make([]int16, len(src))
	da := make([]int16, len(src))
	DecodeUlaw(du, u)
	DecodeAlaw(da, a)
	for i, s := range src {
		if u[i] != LinearToUlaw(s) || du[i] != UlawToLinear(u[i]) || a[i] != LinearToAlaw(s) || da[i] != AlawToLinear(a[i]) {
			t.Errorf("sample %d (%d): slice and scalar functions disagree", i, s)
		}
	}
	// Short destinations bound the work rather than panic.
	EncodeUlaw(u[:2], src)
	DecodeAlaw(da[:1], a)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func BenchmarkEncodeUlaw(b *testing.B) {
	src := make([]int16, 160)
	for i := range src {
		src[i] = int16(i * 199)
	}
	dst := make([]byte, 160)
	for b.Loop() {
		EncodeUlaw(dst, src)
	}
}

func BenchmarkEncodeAlaw(b *testing.B) {
	src := make([]int16, 160)
	for i := range src {
		src[i] = int16(i * 199)
	}
	dst := make([]byte, 160)
	for b.Loop() {
		EncodeAlaw(dst, src)
	}
}
