//go:build !cgo

package keys

import (
	"context"
	"crypto"
	"fmt"

	"github.com/sigstore/sigstore/pkg/signature"
)

// errNoPKCS11 is what pkcs11: URIs get from a build without cgo: the
// PKCS#11 library is C, loaded with dlopen.
var errNoPKCS11 = fmt.Errorf("%w: this build has no PKCS#11 support (built without cgo)", ErrUnsupportedURI)

func loadPKCS11Signer(_ context.Context, uri string) (signature.SignerVerifier, error) {
	if _, err := parseKeyRef(uri); err != nil {
		return nil, err
	}
	return nil, errNoPKCS11
}

func generatePKCS11(_ context.Context, uri string) (crypto.PublicKey, error) {
	if _, err := parseKeyRef(uri); err != nil {
		return nil, err
	}
	return nil, errNoPKCS11
}
