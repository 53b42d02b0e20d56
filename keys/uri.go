package keys

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// uriScheme matches an RFC 3986 scheme followed by ':'. A plain path such as
// "keys/ci:prod.pem" would match too; that is deliberate, so that a
// misspelled "awskms:" never reads a local file. Prefix such paths with "./".
var uriScheme = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*):`)

// uriKind says which loader handles a key URI.
type uriKind int

const (
	uriFile   uriKind = iota // a path, a file: URI, or an unsupported scheme
	uriPKCS11                // pkcs11: (RFC 7512)
	uriKMS                   // a sigstore KMS provider: awskms:// and the like
)

// kmsSchemes are the URI schemes handed to sigstore's KMS providers. Only
// these reach kms.Get: for any other reference it would look for a plugin
// program named after the scheme in PATH and run it.
var kmsSchemes = []string{"awskms", "gcpkms", "azurekms", "hashivault"}

// classifyURI returns the loader for uri and its scheme in lower case ("" for
// a plain path). Unsupported schemes classify as uriFile, so that
// pathFromURI rejects them with ErrUnsupportedURI.
func classifyURI(uri string) (uriKind, string) {
	m := uriScheme.FindStringSubmatch(uri)
	if m == nil {
		return uriFile, ""
	}
	scheme := strings.ToLower(m[1])
	switch {
	case scheme == "pkcs11":
		return uriPKCS11, scheme
	case slices.Contains(kmsSchemes, scheme):
		return uriKMS, scheme
	}
	return uriFile, scheme
}

// RedactURI returns uri with the PIN of a pkcs11: URI (pin-value) replaced
// by REDACTED, for error messages and logs; other URIs come back unchanged.
// The errors of this package already quote key URIs this way. It splits the
// URI the way the pkcs11: parser does, so it also covers malformed URIs.
func RedactURI(uri string) string {
	if kind, _ := classifyURI(uri); kind != uriPKCS11 {
		return uri
	}
	const scheme = "pkcs11:"
	path, query, hasQuery := strings.Cut(uri[len(scheme):], "?")
	out := uri[:len(scheme)] + redactPINAttrs(path, ";")
	if hasQuery {
		out += "?" + redactPINAttrs(query, "&")
	}
	return out
}

func redactPINAttrs(s, sep string) string {
	attrs := strings.Split(s, sep)
	for i, a := range attrs {
		if strings.HasPrefix(a, "pin-value=") {
			attrs[i] = "pin-value=REDACTED"
		}
	}
	return strings.Join(attrs, sep)
}

// pathFromURI turns a key URI into a filesystem path.
func pathFromURI(uri string) (string, error) {
	if uri == "" {
		return "", errors.New("empty key uri")
	}
	m := uriScheme.FindStringSubmatch(uri)
	if m == nil {
		return uri, nil
	}
	if !strings.EqualFold(m[1], "file") {
		return "", fmt.Errorf("%w: scheme %q", ErrUnsupportedURI, m[1])
	}
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("parsing key uri: %w", err)
	}
	if u.Host != "" && u.Host != "localhost" {
		return "", fmt.Errorf("%w: file uri with remote host %q", ErrUnsupportedURI, u.Host)
	}
	if u.Opaque != "" || !filepath.IsAbs(u.Path) {
		return "", fmt.Errorf("file uri %q: want file:///absolute/path", uri)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("file uri %q: query and fragment are not allowed", uri)
	}
	return filepath.FromSlash(u.Path), nil
}

// writeNewFile creates path with data and perm, atomically and durably, and
// fails with an error wrapping fs.ErrExist if path exists. The data goes to a
// temporary file that is fsynced and then hard-linked into place: link(2),
// unlike rename(2), refuses to replace an existing file, so the existence
// check and the creation are a single step.
func writeNewFile(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		_ = os.Remove(tmp)
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		f = nil
		return err
	}
	f = nil
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
