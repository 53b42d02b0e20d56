package keys

import (
	"context"
	"crypto"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// loadKMSSigner hands a KMS reference to the sigstore provider registered
// for its scheme (see kms_providers.go) and checks the key it names.
func loadKMSSigner(ctx context.Context, scheme, uri string) (signature.SignerVerifier, error) {
	// kms.Get matches providers by "scheme://" prefix and, failing that,
	// runs a plugin program named after the scheme: insist on the prefix,
	// in the lower case the providers expect.
	prefix := scheme + "://"
	if len(uri) < len(prefix) || !strings.EqualFold(uri[:len(prefix)], prefix) {
		return nil, fmt.Errorf("kms uri: want %s<key reference>", prefix)
	}
	if !kmsProviderLinked(scheme) {
		return nil, fmt.Errorf("%w: scheme %q: this build has no %s provider", ErrUnsupportedURI, scheme, scheme)
	}
	ref := prefix + uri[len(prefix):]
	sv, err := kms.Get(ctx, ref, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	// Fetching the public key now proves the reference, the credentials and
	// the network path work before anything is signed, and applies the key
	// policy (P-256, RSA >= 2048 bits, Ed25519) to KMS keys as to files.
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading the public key from %s: %w", scheme, err)
	}
	if err := checkPublic(pub); err != nil {
		return nil, err
	}
	return sv, nil
}
