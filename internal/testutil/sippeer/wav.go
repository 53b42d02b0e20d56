package sippeer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// WriteWAV writes mono 16-bit PCM samples at rate Hz as a WAV file, the
// format baresip's aufile source reads (rate 8000 for G.711).
func WriteWAV(path string, rate int, samples []int16) error {
	var h [44]byte
	n := uint32(2 * len(samples))
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+n)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1) // PCM
	binary.LittleEndian.PutUint16(h[22:], 1) // mono
	binary.LittleEndian.PutUint32(h[24:], uint32(rate))
	binary.LittleEndian.PutUint32(h[28:], uint32(2*rate))
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], n)
	b := make([]byte, 0, 44+n)
	b = append(b, h[:]...)
	for _, s := range samples {
		b = binary.LittleEndian.AppendUint16(b, uint16(s))
	}
	return os.WriteFile(path, b, 0o600)
}

// Tone returns seconds of a sine wave of freq Hz at rate Hz, at half
// full scale.
func Tone(rate int, freq float64, seconds float64) []int16 {
	s := make([]int16, int(float64(rate)*seconds))
	for i := range s {
		s[i] = int16(16383 * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return s
}

// ReadWAV reads a 16-bit PCM WAV file (mono or the first channel of
// several) of at most maxBytes bytes and returns its rate and samples.
func ReadWAV(r io.Reader, maxBytes int64) (rate int, samples []int16, err error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("reading wav: %w", err)
	}
	if int64(len(b)) > maxBytes {
		return 0, nil, fmt.Errorf("wav larger than %d bytes", maxBytes)
	}
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return 0, nil, errors.New("not a RIFF/WAVE file")
	}
	channels := 0
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), int(binary.LittleEndian.Uint32(b[p+4:]))
		body := b[p+8:]
		if size < 0 || size > len(body) {
			// Recorders that were killed leave the data size unset.
			if id != "data" {
				return 0, nil, fmt.Errorf("wav chunk %q overruns the file", id)
			}
			size = len(body)
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if size < 16 {
				return 0, nil, errors.New("short wav fmt chunk")
			}
			if f := binary.LittleEndian.Uint16(body); f != 1 {
				return 0, nil, fmt.Errorf("wav format %d is not PCM", f)
			}
			channels = int(binary.LittleEndian.Uint16(body[2:]))
			rate = int(binary.LittleEndian.Uint32(body[4:]))
			if bits := binary.LittleEndian.Uint16(body[14:]); bits != 16 || channels < 1 {
				return 0, nil, fmt.Errorf("wav has %d channels of %d bits; want 16-bit PCM", channels, bits)
			}
		case "data":
			if channels == 0 {
				return 0, nil, errors.New("wav data before fmt")
			}
			frame := 2 * channels
			samples = make([]int16, 0, size/frame)
			for i := 0; i+frame <= size; i += frame {
				samples = append(samples, int16(binary.LittleEndian.Uint16(body[i:])))
			}
			return rate, samples, nil
		}
		p += 8 + size + size%2
	}
	return 0, nil, errors.New("wav has no data chunk")
}

// PCMU encodes samples with G.711 µ-law as baresip (libre) does, e.g. to
// look for sent audio in a capture with Capture.ContainsPayload.
func PCMU(samples []int16) []byte {
	out := make([]byte, len(samples))
	for i, s := range samples {
		out[i] = ulaw(s)
	}
	return out
}

func ulaw(s int16) byte {
	const bias, clip = 0x84, 32635
	x := int(s)
	var sign byte
	if x < 0 {
		x, sign = -x, 0x80
	}
	if x > clip {
		x = clip
	}
	x += bias
	exp := 7
	for mask := 0x4000; x&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (x >> (exp + 3)) & 0x0f
	return ^(sign | byte(exp<<4) | byte(mant))
}
