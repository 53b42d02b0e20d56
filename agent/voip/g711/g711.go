// Package g711 owns the ITU-T G.711 codecs the phone speaks: μ-law (PCMU,
// RTP payload type 0) and A-law (PCMA, payload type 8), between 16-bit
// linear PCM and one byte per sample.
//
// The conversions follow the reference algorithm of the Sun/CCITT g711.c
// that ITU-T G.191 ships: the encoders truncate to 14 bits (μ-law) or 13
// bits (A-law) and pick the segment from the magnitude's bit length. Both
// directions run from tables built from that algorithm at start-up. Encoding is
// exact (every int16 maps to the reference code) and decoding any code
// then encoding the result gives the code back.
package g711

import "math/bits"

const (
	ulawBias = 0x84 // added to the magnitude so every segment has a leading one
	ulawClip = 8159 // largest 14-bit magnitude before the bias
)

// Decoding tables, and encoding tables indexed by the bits the encoder
// keeps (14 for μ-law, 13 for A-law): 24 KiB in all, built at start-up
// from the reference algorithm, so a sample costs one lookup either way.
var (
	ulawTable [256]int16
	alawTable [256]int16
	ulawEnc   [1 << 14]byte
	alawEnc   [1 << 13]byte
)

func init() {
	for i := range 256 {
		ulawTable[i] = ulawToLinear(byte(i))
		alawTable[i] = alawToLinear(byte(i))
	}
	for i := range ulawEnc {
		ulawEnc[i] = linearToUlaw(int16(uint16(i) << 2))
	}
	for i := range alawEnc {
		alawEnc[i] = linearToAlaw(int16(uint16(i) << 3))
	}
}

// EncodeUlaw encodes min(len(dst), len(src)) samples to μ-law.
func EncodeUlaw(dst []byte, src []int16) {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, s := range src {
		dst[i] = ulawEnc[uint16(s)>>2]
	}
}

// DecodeUlaw decodes min(len(dst), len(src)) μ-law bytes.
func DecodeUlaw(dst []int16, src []byte) {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, c := range src {
		dst[i] = ulawTable[c]
	}
}

// EncodeAlaw encodes min(len(dst), len(src)) samples to A-law.
func EncodeAlaw(dst []byte, src []int16) {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, s := range src {
		dst[i] = alawEnc[uint16(s)>>3]
	}
}

// DecodeAlaw decodes min(len(dst), len(src)) A-law bytes.
func DecodeAlaw(dst []int16, src []byte) {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, c := range src {
		dst[i] = alawTable[c]
	}
}

// UlawToLinear decodes one μ-law byte.
func UlawToLinear(c byte) int16 { return ulawTable[c] }

// AlawToLinear decodes one A-law byte.
func AlawToLinear(c byte) int16 { return alawTable[c] }

// LinearToUlaw encodes one sample to μ-law.
func LinearToUlaw(s int16) byte { return ulawEnc[uint16(s)>>2] }

// LinearToAlaw encodes one sample to A-law.
func LinearToAlaw(s int16) byte { return alawEnc[uint16(s)>>3] }

func linearToUlaw(s int16) byte {
	v := int32(s) >> 2 // 14-bit
	mask := byte(0xFF)
	if v < 0 {
		v, mask = -v, 0x7F
	}
	v = min(v, ulawClip) + ulawBias>>2
	// v is in [33, 8192]: its segment is its bit length less 6 (the
	// reference's table search over 0x3F, 0x7F, ... 0x1FFF).
	seg := bits.Len32(uint32(v)) - 6
	if seg >= 8 {
		return 0x7F ^ mask
	}
	return (byte(seg)<<4 | byte(v>>(seg+1))&0x0F) ^ mask
}

func ulawToLinear(c byte) int16 {
	c = ^c
	t := (int32(c&0x0F) << 3) + ulawBias
	t <<= (c & 0x70) >> 4
	if c&0x80 != 0 {
		return int16(ulawBias - t)
	}
	return int16(t - ulawBias)
}

func linearToAlaw(s int16) byte {
	v := int32(s) >> 3 // 13-bit
	mask := byte(0xD5)
	if v < 0 {
		v, mask = -v-1, 0x55
	}
	// Segment: 0 up to 0x1F, then one per further bit of magnitude
	// (the reference's search over 0x1F, 0x3F, ... 0xFFF).
	seg := max(bits.Len32(uint32(v))-5, 0)
	if seg >= 8 {
		return 0x7F ^ mask
	}
	shift := seg
	if seg < 2 {
		shift = 1
	}
	return (byte(seg)<<4 | byte(v>>shift)&0x0F) ^ mask
}

func alawToLinear(c byte) int16 {
	c ^= 0x55
	t := int32(c&0x0F) << 4
	switch seg := (c & 0x70) >> 4; seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if c&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}
