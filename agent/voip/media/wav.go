package media

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Bounds on what the header parser reads before the samples: a file that
// needs more is refused rather than read without end.
const (
	maxWAVChunks     = 64
	maxWAVHeaderSkip = 1 << 20 // bytes of chunks other than fmt and data
	maxFmtChunk      = 64
)

// KSDATAFORMAT_SUBTYPE_PCM, the sub-format of a WAVE_FORMAT_EXTENSIBLE
// file holding integer PCM.
var pcmSubFormat = []byte{0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71}

// WAVReader is a Source over an 8 kHz 16-bit mono PCM WAV stream.
type WAVReader struct {
	r      *bufio.Reader
	c      io.Closer
	remain int64 // data bytes left; -1: to the end of the stream
	buf    []byte
}

// OpenWAV opens an 8 kHz 16-bit mono PCM WAV file; any other format is
// refused with ErrWAVFormat. Close the reader when done.
func OpenWAV(path string) (*WAVReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening wav: %w", err)
	}
	w, err := NewWAVReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w.c = f
	return w, nil
}

// NewWAVReader parses the header of a WAV stream and returns a reader
// positioned at its first sample.
func NewWAVReader(r io.Reader) (*WAVReader, error) {
	br := bufio.NewReader(r)
	var riff [12]byte
	if _, err := io.ReadFull(br, riff[:]); err != nil {
		return nil, fmt.Errorf("%w: reading RIFF header: %w", ErrNotWAV, err)
	}
	if string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WAVE" {
		return nil, ErrNotWAV
	}
	haveFmt := false
	skipped := int64(0)
	for range maxWAVChunks {
		var ch [8]byte
		if _, err := io.ReadFull(br, ch[:]); err != nil {
			return nil, fmt.Errorf("%w: no data chunk: %w", ErrNotWAV, err)
		}
		id, size := string(ch[0:4]), int64(binary.LittleEndian.Uint32(ch[4:8]))
		switch id {
		case "fmt ":
			if size < 16 || size > maxFmtChunk {
				return nil, fmt.Errorf("%w: fmt chunk of %d bytes", ErrWAVFormat, size)
			}
			b := make([]byte, size+size&1)
			if _, err := io.ReadFull(br, b); err != nil {
				return nil, fmt.Errorf("%w: reading fmt chunk: %w", ErrNotWAV, err)
			}
			if err := checkFmt(b[:size]); err != nil {
				return nil, err
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: data chunk before fmt chunk", ErrNotWAV)
			}
			remain := size
			// Streaming writers leave the size 0 or all ones: read to
			// the end.
			if size == 0 || size == 0xFFFFFFFF {
				remain = -1
			}
			return &WAVReader{r: br, remain: remain}, nil
		default:
			skipped += size + size&1
			if skipped > maxWAVHeaderSkip {
				return nil, fmt.Errorf("%w: more than %d bytes of chunks before the samples", ErrNotWAV, maxWAVHeaderSkip)
			}
			if _, err := br.Discard(int(size + size&1)); err != nil {
				return nil, fmt.Errorf("%w: skipping %q chunk: %w", ErrNotWAV, id, err)
			}
		}
	}
	return nil, fmt.Errorf("%w: no data chunk in the first %d chunks", ErrNotWAV, maxWAVChunks)
}

func checkFmt(b []byte) error {
	format := binary.LittleEndian.Uint16(b[0:2])
	channels := binary.LittleEndian.Uint16(b[2:4])
	rate := binary.LittleEndian.Uint32(b[4:8])
	byteRate := binary.LittleEndian.Uint32(b[8:12])
	align := binary.LittleEndian.Uint16(b[12:14])
	depth := binary.LittleEndian.Uint16(b[14:16])
	switch format {
	case 1: // WAVE_FORMAT_PCM
	case 0xFFFE: // WAVE_FORMAT_EXTENSIBLE: fine if the sub-format is PCM
		if len(b) < 40 || !bytes.Equal(b[24:40], pcmSubFormat) {
			return fmt.Errorf("%w: extensible format that is not PCM", ErrWAVFormat)
		}
	default:
		return fmt.Errorf("%w: format tag %#04x is not PCM", ErrWAVFormat, format)
	}
	switch {
	case channels != 1:
		return fmt.Errorf("%w: %d channels", ErrWAVFormat, channels)
	case rate != SampleRate:
		return fmt.Errorf("%w: %d Hz", ErrWAVFormat, rate)
	case depth != 16:
		return fmt.Errorf("%w: %d bits per sample", ErrWAVFormat, depth)
	case align != 2 || byteRate != 2*SampleRate:
		return fmt.Errorf("%w: block align %d, byte rate %d", ErrWAVFormat, align, byteRate)
	}
	return nil
}

// ReadSamples implements Source.
func (w *WAVReader) ReadSamples(p []int16) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	want := int64(2 * len(p))
	if w.remain >= 0 {
		want = min(want, w.remain&^1)
	}
	if want == 0 {
		return 0, io.EOF
	}
	if int64(cap(w.buf)) < want {
		w.buf = make([]byte, want)
	}
	b := w.buf[:want]
	n, err := io.ReadFull(w.r, b)
	n &^= 1
	for i := 0; i < n; i += 2 {
		p[i/2] = int16(binary.LittleEndian.Uint16(b[i:]))
	}
	if w.remain >= 0 {
		w.remain -= int64(n)
	}
	switch {
	case n > 0:
		return n / 2, nil
	case errors.Is(err, io.ErrUnexpectedEOF), err == nil:
		return 0, io.EOF
	default:
		return 0, err
	}
}

// Close closes the file OpenWAV opened.
func (w *WAVReader) Close() error {
	if w.c == nil {
		return nil
	}
	return w.c.Close()
}

// WAVWriter is a Sink writing an 8 kHz 16-bit mono PCM WAV file. The
// header's sizes are fixed by Close.
type WAVWriter struct {
	ws   io.WriteSeeker
	bw   *bufio.Writer
	f    *os.File
	n    int64 // data bytes written
	buf  []byte
	err  error
	done bool
}

const wavHeaderLen = 44

// CreateWAV creates (or truncates) path and writes a WAV header to it.
func CreateWAV(path string) (*WAVWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating wav: %w", err)
	}
	w, err := NewWAVWriter(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f = f
	return w, nil
}

// NewWAVWriter writes a WAV header to ws; Close fixes its sizes (it does
// not close ws).
func NewWAVWriter(ws io.WriteSeeker) (*WAVWriter, error) {
	w := &WAVWriter{ws: ws, bw: bufio.NewWriter(ws)}
	if _, err := w.bw.Write(wavHeader(0)); err != nil {
		return nil, fmt.Errorf("writing wav header: %w", err)
	}
	return w, nil
}

func wavHeader(dataLen uint32) []byte {
	h := make([]byte, 0, wavHeaderLen)
	h = append(h, "RIFF"...)
	h = binary.LittleEndian.AppendUint32(h, 36+dataLen)
	h = append(h, "WAVEfmt "...)
	h = binary.LittleEndian.AppendUint32(h, 16)
	h = binary.LittleEndian.AppendUint16(h, 1) // PCM
	h = binary.LittleEndian.AppendUint16(h, 1) // mono
	h = binary.LittleEndian.AppendUint32(h, SampleRate)
	h = binary.LittleEndian.AppendUint32(h, 2*SampleRate)
	h = binary.LittleEndian.AppendUint16(h, 2)
	h = binary.LittleEndian.AppendUint16(h, 16)
	h = append(h, "data"...)
	return binary.LittleEndian.AppendUint32(h, dataLen)
}

// WriteSamples implements Sink.
func (w *WAVWriter) WriteSamples(p []int16) error {
	if w.err != nil {
		return w.err
	}
	if w.n+int64(2*len(p)) > 0xFFFFFFFF-36 {
		w.err = ErrWAVTooLarge
		return w.err
	}
	if cap(w.buf) < 2*len(p) {
		w.buf = make([]byte, 2*len(p))
	}
	b := w.buf[:2*len(p)]
	for i, s := range p {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(s))
	}
	if _, err := w.bw.Write(b); err != nil {
		w.err = fmt.Errorf("writing wav: %w", err)
		return w.err
	}
	w.n += int64(len(b))
	return nil
}

// Close flushes the samples, writes the header's sizes and, for a file
// from CreateWAV, closes it.
func (w *WAVWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	err := w.bw.Flush()
	if err == nil {
		if _, err = w.ws.Seek(0, io.SeekStart); err == nil {
			_, err = w.ws.Write(wavHeader(uint32(w.n)))
		}
	}
	if w.f != nil {
		err = errors.Join(err, w.f.Close())
	}
	if err != nil {
		return fmt.Errorf("closing wav: %w", err)
	}
	return nil
}
