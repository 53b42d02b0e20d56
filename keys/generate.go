package keys

import (
	"context"
	"crypto"
	"fmt"
	"os"
)

// GenerateURI creates a new ECDSA P-256 key where uri says and returns its
// public half:
//
//   - a path or file:// URI: as Generate (the public key also goes to
//     path+".pub"), or as GenerateEncrypted with the passphrase in
//     DIALTONE_KEY_PASSPHRASE when that variable is set and not empty;
//   - a pkcs11: URI: a key pair inside the token, labelled with the URI's
//     object and id (a random 16-byte id if it has none), the private half
//     sensitive and not extractable. The token must be writable and the URI
//     must supply the user PIN.
//
// It never replaces a key: an existing file, or an object with the same
// label or id in the token, fails with an error wrapping fs.ErrExist. KMS
// keys are created with the cloud's own tools; their URIs fail with
// ErrUnsupportedURI.
func GenerateURI(ctx context.Context, uri string) (crypto.PublicKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("generating key %q: %w", RedactURI(uri), err)
	}
	switch kind, scheme := classifyURI(uri); kind {
	case uriPKCS11:
		pub, err := generatePKCS11(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("generating key %q: %w", RedactURI(uri), err)
		}
		return pub, nil
	case uriKMS:
		return nil, fmt.Errorf("generating key %q: %w: scheme %q: create KMS keys with the provider's own tools, then load them by uri",
			uri, ErrUnsupportedURI, scheme)
	}
	path, err := pathFromURI(uri)
	if err != nil {
		return nil, fmt.Errorf("generating key %q: %w", uri, err)
	}
	return generateFile(path, []byte(os.Getenv(PassphraseEnv)))
}
