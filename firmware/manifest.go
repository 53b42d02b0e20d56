package firmware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// ManifestSchema is the manifest schema version this package reads and
// writes. A reader refuses other versions rather than guessing.
const ManifestSchema = 1

// ManifestName is the name of the first tar entry of every bundle.
const ManifestName = "manifest.json"

// Payload describes one file of a bundle.
type Payload struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lowercase hex
}

// Manifest is the first entry of a bundle.
type Manifest struct {
	Schema   int       `json:"schema"`
	Model    string    `json:"model"`
	Version  string    `json:"version"` // semver MAJOR.MINOR.PATCH[-PRERELEASE]
	Hardware []string  `json:"hardware"`
	Payloads []Payload `json:"payloads"`
	Created  time.Time `json:"created"`
}

// Limits bounds what Read accepts. A zero or negative field takes its
// DefaultLimits value, so a partially filled Limits never disables a check.
type Limits struct {
	MaxManifestBytes int64
	MaxPayloads      int
	MaxPayloadBytes  int64
	MaxBundleBytes   int64 // the whole tar stream, headers and padding included
}

// DefaultLimits returns limits sized for desk-phone firmware with room to
// spare: 64 KiB manifest, 16 payloads, 4 GiB per payload, 8 GiB in total.
func DefaultLimits() Limits {
	return Limits{
		MaxManifestBytes: 64 << 10,
		MaxPayloads:      16,
		MaxPayloadBytes:  4 << 30,
		MaxBundleBytes:   8 << 30,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxManifestBytes <= 0 {
		l.MaxManifestBytes = d.MaxManifestBytes
	}
	if l.MaxPayloads <= 0 {
		l.MaxPayloads = d.MaxPayloads
	}
	if l.MaxPayloadBytes <= 0 {
		l.MaxPayloadBytes = d.MaxPayloadBytes
	}
	if l.MaxBundleBytes <= 0 {
		l.MaxBundleBytes = d.MaxBundleBytes
	}
	return l
}

var (
	// Models and hardware revisions end up in TUF target paths
	// (firmware/<model>/...) and in device queries, so they are tokens.
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// Payload names become file names in a slot and tar entry names. A
	// leading alphanumeric rules out ".", ".." and hidden files; 100 bytes
	// keeps them within a plain ustar header.
	payloadNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$`)
	// Semantic Versioning 2.0.0 without build metadata: build metadata does
	// not take part in precedence, so two different bundles could compare
	// equal, which anti-rollback cannot tolerate.
	semverRE = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)` +
		`(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?$`)
	sha256HexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

const maxVersionLen = 64

// ReadManifest parses and validates a manifest. The JSON must be strict:
// no unknown, duplicate or differently cased keys, no trailing data. Those
// are rejected because another implementation (a python-tuf based tool, a
// jq script in CI) could read such a document differently from us.
func ReadManifest(b []byte, lim Limits) (Manifest, error) {
	lim = lim.withDefaults()
	if int64(len(b)) > lim.MaxManifestBytes {
		return Manifest{}, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrManifest, len(b), lim.MaxManifestBytes)
	}
	if err := checkJSONShape(b); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: decoding: %w", ErrManifest, err)
	}
	if err := validateManifest(&m, lim); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return m, nil
}

// marshalManifest is the one encoding Build writes, so bundles built from
// the same inputs are byte-identical.
func marshalManifest(m Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func validateManifest(m *Manifest, lim Limits) error {
	if m.Schema != ManifestSchema {
		return fmt.Errorf("schema %d, want %d", m.Schema, ManifestSchema)
	}
	if err := validateMeta(m.Model, m.Version, m.Hardware, m.Created); err != nil {
		return err
	}
	if err := validatePayloadNames(len(m.Payloads), func(i int) string { return m.Payloads[i].Name }, lim); err != nil {
		return err
	}
	var total int64
	for i, p := range m.Payloads {
		if p.Size < 0 || p.Size > lim.MaxPayloadBytes {
			return fmt.Errorf("payload %q: size %d outside [0, %d]", p.Name, p.Size, lim.MaxPayloadBytes)
		}
		// Both terms are at most MaxBundleBytes here, so this cannot
		// overflow.
		total += p.Size
		if total > lim.MaxBundleBytes {
			return fmt.Errorf("payloads total more than the %d byte bundle limit at payload %d", lim.MaxBundleBytes, i)
		}
		if !sha256HexRE.MatchString(p.SHA256) {
			return fmt.Errorf("payload %q: sha256 must be 64 lowercase hex digits", p.Name)
		}
	}
	return nil
}

// validateMeta checks the fields Build knows before hashing anything, so a
// typo in a version fails in milliseconds rather than after gigabytes.
func validateMeta(model, version string, hardware []string, created time.Time) error {
	if !tokenRE.MatchString(model) {
		return fmt.Errorf("model %q must match %s", model, tokenRE)
	}
	if len(version) > maxVersionLen || !semverRE.MatchString(version) {
		return fmt.Errorf("version %q is not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE]", version)
	}
	if len(hardware) == 0 {
		return errors.New("hardware lists no revisions")
	}
	seen := make(map[string]bool, len(hardware))
	for _, h := range hardware {
		if !tokenRE.MatchString(h) {
			return fmt.Errorf("hardware revision %q must match %s", h, tokenRE)
		}
		if seen[h] {
			return fmt.Errorf("hardware revision %q listed twice", h)
		}
		seen[h] = true
	}
	if created.IsZero() {
		return errors.New("created time is missing")
	}
	return nil
}

func validatePayloadNames(n int, name func(int) string, lim Limits) error {
	if n == 0 {
		return errors.New("no payloads")
	}
	if n > lim.MaxPayloads {
		return fmt.Errorf("%d payloads exceeds the limit of %d", n, lim.MaxPayloads)
	}
	// Names are compared case-insensitively because the agent writes them
	// into a slot directory that may live on a case-insensitive filesystem.
	seen := make(map[string]bool, n)
	for i := range n {
		nm := name(i)
		if !payloadNameRE.MatchString(nm) {
			return fmt.Errorf("payload name %q must match %s", nm, payloadNameRE)
		}
		if strings.Contains(nm, "..") {
			// Harmless without a '/', but tar tools and humans read ".."
			// as a parent directory, so it is refused everywhere.
			return fmt.Errorf("payload name %q contains \"..\"", nm)
		}
		folded := strings.ToLower(nm)
		if folded == ManifestName {
			return fmt.Errorf("payload name %q is reserved", nm)
		}
		if seen[folded] {
			return fmt.Errorf("payload name %q listed twice", nm)
		}
		seen[folded] = true
	}
	return nil
}

// jsonShape describes which object keys are allowed where; nil means a
// scalar is expected.
type jsonShape struct {
	keys map[string]*jsonShape // object
	elem *jsonShape            // array
	arr  bool
}

var (
	scalarArray  = &jsonShape{arr: true}
	payloadShape = &jsonShape{keys: map[string]*jsonShape{"name": nil, "size": nil, "sha256": nil}}
	manifestJSON = &jsonShape{keys: map[string]*jsonShape{
		"schema":   nil,
		"model":    nil,
		"version":  nil,
		"hardware": scalarArray,
		"payloads": {arr: true, elem: payloadShape},
		"created":  nil,
	}}
)

// checkJSONShape rejects what encoding/json would silently accept:
// duplicate keys (last one wins), keys differing only in case (matched
// case-insensitively), and data after the top-level value. Because it
// follows the schema, nesting depth is bounded by the schema's.
func checkJSONShape(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := walkJSON(dec, manifestJSON); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the manifest object")
	}
	return nil
}

func walkJSON(dec *json.Decoder, s *jsonShape) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("parsing json: %w", err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		if s != nil && tok != nil {
			return fmt.Errorf("unexpected %T where an object or array belongs", tok)
		}
		return nil // null, or a scalar whose type Decode checks
	}
	switch {
	case d == '{' && s != nil && s.keys != nil:
		seen := make(map[string]bool, len(s.keys))
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("parsing json: %w", err)
			}
			k, _ := kt.(string)
			child, known := s.keys[k]
			if !known {
				return fmt.Errorf("unknown field %q", k)
			}
			if seen[k] {
				return fmt.Errorf("duplicate field %q", k)
			}
			seen[k] = true
			if err := walkJSON(dec, child); err != nil {
				return err
			}
		}
	case d == '[' && s != nil && s.arr:
		for dec.More() {
			if err := walkJSON(dec, s.elem); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected %q", d.String())
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return fmt.Errorf("parsing json: %w", err)
	}
	return nil
}
