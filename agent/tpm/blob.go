package tpm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// objectFormat is how the agent keeps a TPM object it created under the
// storage root key (a device key, a sealed secret) in its state directory:
// a magic string, then the TPM2B public and private areas byte for byte as
// tpm2_create writes them with -u and -r, each behind a big-endian uint16
// length. The private area is encrypted by the TPM and loads in no other.
type objectFormat struct {
	magic                          []byte
	maxPublic, maxPrivate, maxFile int
	what                           string // for messages: "the device key"
	err                            error  // wrapped by every refusal
}

func (f objectFormat) marshal(pub, priv []byte) []byte {
	out := bytes.Clone(f.magic)
	out = binary.BigEndian.AppendUint16(out, uint16(len(pub)))
	out = append(out, pub...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(priv)))
	return append(out, priv...)
}

// unmarshal splits what marshal wrote, refusing other magic, oversized
// parts, trailing bytes and an empty private part. The caller checks the
// public area's shape.
func (f objectFormat) unmarshal(data []byte) (pub, priv []byte, err error) {
	rest, ok := bytes.CutPrefix(data, f.magic)
	if !ok {
		return nil, nil, fmt.Errorf("%w: no %s header", f.err, f.what)
	}
	pub, rest, err = sized(rest, f.maxPublic)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: public: %v", f.err, err)
	}
	priv, rest, err = sized(rest, f.maxPrivate)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: private: %v", f.err, err)
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", f.err, len(rest))
	}
	if len(priv) == 0 {
		return nil, nil, fmt.Errorf("%w: empty private part", f.err)
	}
	return bytes.Clone(pub), bytes.Clone(priv), nil
}

// read reads a file marshal's output was saved to, bounded. A missing
// file is an error that wraps fs.ErrNotExist.
func (f objectFormat) read(name string) ([]byte, error) {
	file, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.what, err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, int64(f.maxFile)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.what, err)
	}
	if len(data) > f.maxFile {
		return nil, fmt.Errorf("%w: %s is over %d bytes", f.err, name, f.maxFile)
	}
	return data, nil
}

// sized splits a big-endian uint16 length and that many bytes off b.
func sized(b []byte, limit int) (part, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, io.ErrUnexpectedEOF
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > limit {
		return nil, nil, fmt.Errorf("%d bytes, at most %d", n, limit)
	}
	if len(b)-2 < n {
		return nil, nil, io.ErrUnexpectedEOF
	}
	return b[2 : 2+n], b[2+n:], nil
}
