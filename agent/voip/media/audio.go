package media

import (
	"io"
	"math"
	"time"
)

// SampleRate is the only rate this package speaks: G.711's 8 kHz.
const SampleRate = 8000

// Source produces 8 kHz mono samples. ReadSamples fills up to len(p)
// samples and returns how many; io.EOF ends the stream.
type Source interface {
	ReadSamples(p []int16) (int, error)
}

// Sink consumes 8 kHz mono samples. p is only valid during the call.
type Sink interface {
	WriteSamples(p []int16) error
}

// Samples is the number of samples in d at SampleRate.
func Samples(d time.Duration) int {
	return int(d * SampleRate / time.Second)
}

// Tone is a deterministic sine wave of a fixed length.
type Tone struct {
	step float64 // radians per sample
	amp  float64
	n, i int
}

// NewTone returns freqHz at amplitude for d: sample i is
// round(amplitude·sin(2π·freqHz·i/8000)), the same on every run.
func NewTone(freqHz float64, amplitude int16, d time.Duration) Source {
	return &Tone{step: 2 * math.Pi * freqHz / SampleRate, amp: float64(amplitude), n: Samples(d)}
}

// ReadSamples implements Source.
func (t *Tone) ReadSamples(p []int16) (int, error) {
	if t.i >= t.n {
		return 0, io.EOF
	}
	k := min(len(p), t.n-t.i)
	for j := range p[:k] {
		p[j] = int16(math.Round(t.amp * math.Sin(t.step*float64(t.i+j))))
	}
	t.i += k
	return k, nil
}

// Silence is a Source of endless silence.
type Silence struct{}

// ReadSamples implements Source.
func (Silence) ReadSamples(p []int16) (int, error) {
	clear(p)
	return len(p), nil
}

// Discard is a Sink that drops everything.
type Discard struct{}

// WriteSamples implements Sink.
func (Discard) WriteSamples([]int16) error { return nil }
