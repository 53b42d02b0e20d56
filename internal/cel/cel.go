// Package cel owns the event log that goes with the agent's TPM
// measurements, in the TCG Canonical Event Log format (CEL, TLV encoding):
// each record is a TLV sequence of its record number, its PCR, its digests
// (one TLV per hash algorithm, typed by the TPM algorithm ID) and its
// content. The agent appends a record for every firmware bundle it
// measures; the server replays the log against a quoted PCR value and reads
// the bundles from it (DESIGN.md §5).
//
// Dialtone's records carry a content of type ContentFirmware: a nested TLV
// of the measurement's kind, the bundle's version and TUF target path, and
// the bundle's SHA-256. The digest extended into the PCR is the SHA-256 of
// that nested TLV, so that editing a record's content breaks its digest and
// editing its digest breaks the replay.
package cel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// TLV types of a CEL record (TCG CEL spec, TLV encoding).
const (
	typeRecnum  = 0
	typePCR     = 1
	typeDigests = 3
	// ContentFirmware is Dialtone's content type, from the range the CEL
	// spec leaves to vendors.
	ContentFirmware = 0xD7
)

// algSHA256 is TPM_ALG_SHA256, the type of a SHA-256 digest TLV.
const algSHA256 = 0x000B

// Fields of a ContentFirmware content.
const (
	fieldKind    = 0
	fieldVersion = 1
	fieldTarget  = 2
	fieldSHA256  = 3
)

// Measurement kinds.
const (
	KindBooted    = "booted"    // the image the phone booted
	KindInstalled = "installed" // a bundle written to the inactive slot
)

// Limits of what Decode accepts: a log is outside data to the server.
const (
	MaxRecords   = 4096
	maxValue     = 4096
	maxFieldText = 256
)

// ErrInvalid is wrapped by every decoding error.
var ErrInvalid = errors.New("invalid event log")

// Firmware is what one record says was measured.
type Firmware struct {
	Kind    string   // KindBooted or KindInstalled
	Version string   // the bundle's version
	Target  string   // its TUF target path
	SHA256  [32]byte // the bundle's SHA-256 (its TUF target hash)
}

// Record is one event of the log.
type Record struct {
	Num      uint64
	PCR      uint8
	Digest   [32]byte // SHA-256 extended into PCR
	Firmware Firmware
}

// Content is the nested TLV of f; its SHA-256 is the digest to extend.
func (f Firmware) Content() []byte {
	var b bytes.Buffer
	writeTLV(&b, fieldKind, []byte(f.Kind))
	writeTLV(&b, fieldVersion, []byte(f.Version))
	writeTLV(&b, fieldTarget, []byte(f.Target))
	writeTLV(&b, fieldSHA256, f.SHA256[:])
	return b.Bytes()
}

// Digest is the digest a record of f extends into its PCR.
func (f Firmware) Digest() [32]byte { return sha256.Sum256(f.Content()) }

// NewRecord makes record num measuring f into pcr.
func NewRecord(num uint64, pcr uint8, f Firmware) Record {
	return Record{Num: num, PCR: pcr, Digest: f.Digest(), Firmware: f}
}

// Append encodes r and appends it to b.
func Append(b []byte, r Record) []byte {
	var buf bytes.Buffer
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], r.Num)
	writeTLV(&buf, typeRecnum, n[:])
	writeTLV(&buf, typePCR, []byte{r.PCR})
	var d bytes.Buffer
	writeTLV(&d, algSHA256&0xff, r.Digest[:])
	writeTLV(&buf, typeDigests, d.Bytes())
	writeTLV(&buf, ContentFirmware, r.Firmware.Content())
	return append(b, buf.Bytes()...)
}

func writeTLV(w *bytes.Buffer, typ byte, v []byte) {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(v)))
	w.Write(hdr[:])
	w.Write(v)
}

// reader reads TLVs from b.
type reader struct{ b []byte }

func (r *reader) next() (typ byte, v []byte, err error) {
	if len(r.b) == 0 {
		return 0, nil, io.EOF
	}
	if len(r.b) < 5 {
		return 0, nil, fmt.Errorf("%w: truncated TLV header", ErrInvalid)
	}
	typ = r.b[0]
	n := binary.BigEndian.Uint32(r.b[1:5])
	if n > maxValue || int(n) > len(r.b)-5 {
		return 0, nil, fmt.Errorf("%w: TLV of type %d claims %d bytes", ErrInvalid, typ, n)
	}
	v = r.b[5 : 5+n]
	r.b = r.b[5+n:]
	return typ, v, nil
}

func (r *reader) want(typ byte) ([]byte, error) {
	t, v, err := r.next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: record ends before TLV type %d", ErrInvalid, typ)
	}
	if err != nil {
		return nil, err
	}
	if t != typ {
		return nil, fmt.Errorf("%w: TLV type %d where %d belongs", ErrInvalid, t, typ)
	}
	return v, nil
}

// Decode parses a whole log. Records must be numbered 0, 1, 2, … in order;
// anything else — a gap, a duplicate, unknown or malformed TLVs, a digest
// that is not the SHA-256 of its content — is an error wrapping ErrInvalid.
func Decode(b []byte) ([]Record, error) {
	r := &reader{b: b}
	var out []Record
	for len(r.b) > 0 {
		if len(out) == MaxRecords {
			return nil, fmt.Errorf("%w: more than %d records", ErrInvalid, MaxRecords)
		}
		rec, err := decodeRecord(r)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", len(out), err)
		}
		if rec.Num != uint64(len(out)) {
			return nil, fmt.Errorf("%w: record %d is numbered %d (removed or reordered records)", ErrInvalid, len(out), rec.Num)
		}
		out = append(out, rec)
	}
	return out, nil
}

func decodeRecord(r *reader) (Record, error) {
	var rec Record
	v, err := r.want(typeRecnum)
	if err != nil {
		return rec, err
	}
	if len(v) != 8 {
		return rec, fmt.Errorf("%w: record number of %d bytes", ErrInvalid, len(v))
	}
	rec.Num = binary.BigEndian.Uint64(v)
	if v, err = r.want(typePCR); err != nil {
		return rec, err
	}
	if len(v) != 1 || v[0] > 23 {
		return rec, fmt.Errorf("%w: bad PCR index", ErrInvalid)
	}
	rec.PCR = v[0]
	if v, err = r.want(typeDigests); err != nil {
		return rec, err
	}
	dr := &reader{b: v}
	dv, err := dr.want(algSHA256 & 0xff)
	if err != nil {
		return rec, err
	}
	if len(dv) != 32 || len(dr.b) != 0 {
		return rec, fmt.Errorf("%w: want exactly one SHA-256 digest", ErrInvalid)
	}
	copy(rec.Digest[:], dv)
	if v, err = r.want(ContentFirmware); err != nil {
		return rec, err
	}
	if rec.Firmware, err = decodeFirmware(v); err != nil {
		return rec, err
	}
	if rec.Firmware.Digest() != rec.Digest {
		return rec, fmt.Errorf("%w: digest is not the SHA-256 of the record's content (edited record)", ErrInvalid)
	}
	return rec, nil
}

func decodeFirmware(b []byte) (Firmware, error) {
	var f Firmware
	r := &reader{b: b}
	text := func(typ byte) (string, error) {
		v, err := r.want(typ)
		if err != nil {
			return "", err
		}
		if len(v) == 0 || len(v) > maxFieldText {
			return "", fmt.Errorf("%w: field %d of %d bytes", ErrInvalid, typ, len(v))
		}
		return string(v), nil
	}
	var err error
	if f.Kind, err = text(fieldKind); err != nil {
		return f, err
	}
	if f.Kind != KindBooted && f.Kind != KindInstalled {
		return f, fmt.Errorf("%w: unknown measurement kind %q", ErrInvalid, f.Kind)
	}
	if f.Version, err = text(fieldVersion); err != nil {
		return f, err
	}
	if f.Target, err = text(fieldTarget); err != nil {
		return f, err
	}
	v, err := r.want(fieldSHA256)
	if err != nil {
		return f, err
	}
	if len(v) != 32 || len(r.b) != 0 {
		return f, fmt.Errorf("%w: bad firmware content", ErrInvalid)
	}
	copy(f.SHA256[:], v)
	return f, nil
}

// Replay computes what the records make of each PCR they extend, from the
// PCR's reset value (all zeros): PCR = SHA-256(PCR || digest), in order.
func Replay(recs []Record) map[uint8][32]byte {
	out := map[uint8][32]byte{}
	for _, r := range recs {
		cur := out[r.PCR]
		out[r.PCR] = sha256.Sum256(append(cur[:], r.Digest[:]...))
	}
	return out
}
