package keys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PKCS11PINEnv names the environment variable that holds the PIN of a
// PKCS#11 token when the key URI has neither pin-value nor pin-source.
const PKCS11PINEnv = "DIALTONE_PKCS11_PIN"

// maxPINFileBytes bounds a pin-source file: PINs are short.
const maxPINFileBytes = 4 << 10

// pkcs11URI is a parsed RFC 7512 PKCS#11 URI. Empty fields were absent.
type pkcs11URI struct {
	// Path attributes: which token, and which object in it.
	Token        string // CKA_LABEL of the token ("token")
	Manufacturer string // "manufacturer"
	Serial       string // "serial"
	Model        string // "model"
	Object       string // CKA_LABEL of the key ("object")
	ID           []byte // CKA_ID of the key ("id"), binary
	Type         string // "type": public, private, cert, secret-key or data
	SlotID       string // "slot-id", a decimal number (kept as text)
	SlotDesc     string // "slot-description"
	SlotMfr      string // "slot-manufacturer"
	LibMfr       string // "library-manufacturer"
	LibDesc      string // "library-description"
	LibVersion   string // "library-version", "M" or "M.m"

	// Query attributes: how to load the module and log in.
	ModulePath string // "module-path", an absolute path
	ModuleName string // "module-name"; parsed, but loading needs module-path
	PINValue   string // "pin-value"
	PINSource  string // "pin-source", a file: URI or an absolute path
}

// pkcs11Attr ties an RFC 7512 attribute name to its field, in the order
// String writes them.
type pkcs11Attr struct {
	name  string
	query bool
	field func(u *pkcs11URI) *string
}

var pkcs11Attrs = []pkcs11Attr{
	{name: "token", field: func(u *pkcs11URI) *string { return &u.Token }},
	{name: "manufacturer", field: func(u *pkcs11URI) *string { return &u.Manufacturer }},
	{name: "serial", field: func(u *pkcs11URI) *string { return &u.Serial }},
	{name: "model", field: func(u *pkcs11URI) *string { return &u.Model }},
	{name: "library-manufacturer", field: func(u *pkcs11URI) *string { return &u.LibMfr }},
	{name: "library-description", field: func(u *pkcs11URI) *string { return &u.LibDesc }},
	{name: "library-version", field: func(u *pkcs11URI) *string { return &u.LibVersion }},
	{name: "slot-description", field: func(u *pkcs11URI) *string { return &u.SlotDesc }},
	{name: "slot-manufacturer", field: func(u *pkcs11URI) *string { return &u.SlotMfr }},
	{name: "slot-id", field: func(u *pkcs11URI) *string { return &u.SlotID }},
	{name: "object", field: func(u *pkcs11URI) *string { return &u.Object }},
	{name: "type", field: func(u *pkcs11URI) *string { return &u.Type }},
	{name: "id"}, // binary: handled apart
	{name: "module-name", query: true, field: func(u *pkcs11URI) *string { return &u.ModuleName }},
	{name: "module-path", query: true, field: func(u *pkcs11URI) *string { return &u.ModulePath }},
	{name: "pin-source", query: true, field: func(u *pkcs11URI) *string { return &u.PINSource }},
	{name: "pin-value", query: true, field: func(u *pkcs11URI) *string { return &u.PINValue }},
}

func lookupPKCS11Attr(name string) (pkcs11Attr, bool) {
	for _, a := range pkcs11Attrs {
		if a.name == name {
			return a, true
		}
	}
	return pkcs11Attr{}, false
}

// parsePKCS11URI parses an RFC 7512 URI strictly: every attribute must be one
// the RFC defines, appear at most once, in its own component (path or
// query), with a non-empty value. Vendor-specific attributes are refused
// rather than ignored, so that a misspelt attribute never widens a match to
// some other key. Errors never quote pin-value.
func parsePKCS11URI(s string) (*pkcs11URI, error) {
	const scheme = "pkcs11:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, errors.New("not a pkcs11: uri")
	}
	rest := s[len(scheme):]
	if strings.Contains(rest, "#") {
		return nil, errors.New("pkcs11 uri: fragments are not allowed")
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	u := &pkcs11URI{}
	seen := map[string]bool{}
	parse := func(component string, sep string, inQuery bool) error {
		if component == "" {
			return nil
		}
		for attr := range strings.SplitSeq(component, sep) {
			if attr == "" {
				return fmt.Errorf("pkcs11 uri: empty attribute (stray %q)", sep)
			}
			name, raw, ok := strings.Cut(attr, "=")
			if !ok {
				return fmt.Errorf("pkcs11 uri: attribute %q has no value", clip(name))
			}
			a, known := lookupPKCS11Attr(name)
			if !known {
				return fmt.Errorf("pkcs11 uri: unknown attribute %q (RFC 7512 path attributes: token, manufacturer, serial, model, "+
					"object, id, type, slot-id, slot-description, slot-manufacturer, library-*; query: module-path, module-name, "+
					"pin-value, pin-source)", clip(name))
			}
			if a.query != inQuery {
				where := "path (before '?', separated by ';')"
				if a.query {
					where = "query (after '?', separated by '&')"
				}
				return fmt.Errorf("pkcs11 uri: attribute %q belongs in the %s", name, where)
			}
			if seen[name] {
				return fmt.Errorf("pkcs11 uri: attribute %q appears more than once", name)
			}
			seen[name] = true
			v, err := pctDecode(raw)
			if err != nil {
				if name == "pin-value" {
					return errors.New("pkcs11 uri: pin-value: bad percent-encoding")
				}
				return fmt.Errorf("pkcs11 uri: %s: %w", name, err)
			}
			if len(v) == 0 {
				return fmt.Errorf("pkcs11 uri: attribute %q is empty", name)
			}
			if a.field == nil { // id
				u.ID = v
				continue
			}
			*a.field(u) = string(v)
		}
		return nil
	}
	if err := parse(path, ";", false); err != nil {
		return nil, err
	}
	if hasQuery {
		if query == "" {
			return nil, errors.New("pkcs11 uri: empty query after '?'")
		}
		if err := parse(query, "&", true); err != nil {
			return nil, err
		}
	}
	if err := u.validate(); err != nil {
		return nil, err
	}
	return u, nil
}

// validate checks the values whose syntax RFC 7512 or Dialtone constrains.
func (u *pkcs11URI) validate() error {
	switch u.Type {
	case "", "public", "private", "cert", "secret-key", "data":
	default:
		return fmt.Errorf("pkcs11 uri: type %q: want public, private, cert, secret-key or data", clip(u.Type))
	}
	if u.SlotID != "" {
		if _, err := strconv.ParseUint(u.SlotID, 10, 64); err != nil || u.SlotID[0] == '+' {
			return fmt.Errorf("pkcs11 uri: slot-id %q is not a decimal number", clip(u.SlotID))
		}
	}
	if u.LibVersion != "" {
		if _, _, err := parseLibVersion(u.LibVersion); err != nil {
			return err
		}
	}
	if u.ModulePath != "" && !filepath.IsAbs(u.ModulePath) {
		return fmt.Errorf("pkcs11 uri: module-path %q must be an absolute path", clip(u.ModulePath))
	}
	if u.PINValue != "" && u.PINSource != "" {
		return errors.New("pkcs11 uri: pin-value and pin-source are both set; use one")
	}
	return nil
}

// parseLibVersion parses "M" or "M.m" (each 0..255, a CK_VERSION).
func parseLibVersion(v string) (major, minor uint8, err error) {
	maj, min, hasMinor := strings.Cut(v, ".")
	m, err1 := strconv.ParseUint(maj, 10, 8)
	n := uint64(0)
	var err2 error
	if hasMinor {
		n, err2 = strconv.ParseUint(min, 10, 8)
	}
	if err1 != nil || err2 != nil || strings.HasPrefix(maj, "+") || strings.HasPrefix(min, "+") {
		return 0, 0, fmt.Errorf("pkcs11 uri: library-version %q: want M or M.m", clip(v))
	}
	return uint8(m), uint8(n), nil
}

// String encodes u as a canonical PKCS#11 URI: attributes in a fixed order,
// and every byte outside the unreserved set percent-encoded (module-path and
// pin-source keep their slashes). parsePKCS11URI(u.String()) equals u.
func (u *pkcs11URI) String() string {
	var path, query []string
	for _, a := range pkcs11Attrs {
		var v []byte
		if a.field == nil {
			v = u.ID
		} else {
			v = []byte(*a.field(u))
		}
		if len(v) == 0 {
			continue
		}
		if a.query {
			query = append(query, a.name+"="+pctEncode(v, "/:"))
		} else {
			path = append(path, a.name+"="+pctEncode(v, ""))
		}
	}
	s := "pkcs11:" + strings.Join(path, ";")
	if len(query) > 0 {
		s += "?" + strings.Join(query, "&")
	}
	return s
}

// Redacted is String with the PIN value hidden.
func (u *pkcs11URI) Redacted() string {
	if u.PINValue == "" {
		return u.String()
	}
	c := *u
	c.PINValue = "REDACTED"
	return c.String()
}

// pin returns the PIN the URI asks for: pin-value, else the contents of the
// pin-source file, else DIALTONE_PKCS11_PIN. ok is false when none is set.
func (u *pkcs11URI) pin() (pin string, ok bool, err error) {
	switch {
	case u.PINValue != "":
		return u.PINValue, true, nil
	case u.PINSource != "":
		p, err := readPINSource(u.PINSource)
		if err != nil {
			return "", false, err
		}
		return p, true, nil
	}
	if v := os.Getenv(PKCS11PINEnv); v != "" {
		return v, true, nil
	}
	return "", false, nil
}

// readPINSource reads a PIN from pin-source: "file:/abs", "file:///abs" or an
// absolute path. Commands ("|prog") are refused: a key URI must not run
// programs. One trailing newline is dropped.
func readPINSource(src string) (string, error) {
	path := src
	if rest, ok := strings.CutPrefix(src, "file:"); ok {
		path = rest
		if after, ok := strings.CutPrefix(rest, "//"); ok {
			host, p, _ := strings.Cut(after, "/")
			if host != "" && host != "localhost" {
				return "", fmt.Errorf("pin-source %q: remote hosts are not supported", src)
			}
			path = "/" + p
		}
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("pin-source %q: want file:/absolute/path", src)
	}
	b, err := readBounded(path)
	if err != nil {
		return "", fmt.Errorf("pin-source: %w", err)
	}
	if len(b) > maxPINFileBytes {
		return "", fmt.Errorf("pin-source %s: longer than %d bytes", path, maxPINFileBytes)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("pin-source %s: file is empty", path)
	}
	return string(b), nil
}

// pctDecode decodes RFC 3986 percent-encoding strictly: every '%' must start
// a two-digit hex escape. Other bytes stand for themselves ('+' is a plus).
func pctDecode(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(s) {
			return nil, errors.New("truncated percent-encoding")
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return nil, errors.New("bad percent-encoding")
		}
		out = append(out, hi<<4|lo)
		i += 2
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// pctEncode percent-encodes every byte but RFC 3986 unreserved characters
// and those in keep.
func pctEncode(v []byte, keep string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c != '%' && strings.IndexByte(keep, c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// clip shortens attacker-sized text quoted in an error.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// parseKeyRef parses a pkcs11: URI that names one private key: it must say
// which module to load and name the key by object (label) or id, and its
// type, if any, must be private.
func parseKeyRef(uri string) (*pkcs11URI, error) {
	u, err := parsePKCS11URI(uri)
	if err != nil {
		return nil, err
	}
	if u.ModulePath == "" {
		if u.ModuleName != "" {
			return nil, fmt.Errorf("pkcs11 uri: module-name %q is not supported; give the module's file with module-path=/absolute/path.so", clip(u.ModuleName))
		}
		return nil, errors.New("pkcs11 uri: module-path is required (for SoftHSM: ?module-path=/usr/lib/softhsm/libsofthsm2.so)")
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, errors.New("pkcs11 uri: name the key with object=LABEL or id=%01%02 (its CKA_ID, percent-encoded)")
	}
	if u.Type != "" && u.Type != "private" {
		return nil, fmt.Errorf("pkcs11 uri: type=%s: a signing key is type=private (or leave type out)", u.Type)
	}
	return u, nil
}
