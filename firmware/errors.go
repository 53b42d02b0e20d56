package firmware

import "errors"

// Sentinel errors callers test with errors.Is. Every error Read returns for
// bad input wraps exactly one of the first three; errors from the underlying
// reader and from ctx are returned wrapped but without a sentinel, so a
// network failure is never mistaken for a malicious bundle.
var (
	// ErrManifest reports a manifest that is malformed, over a limit, or
	// fails validation.
	ErrManifest = errors.New("invalid manifest")
	// ErrPayloadMismatch reports a payload whose size or SHA-256 differs
	// from the manifest.
	ErrPayloadMismatch = errors.New("payload does not match manifest")
	// ErrBundleLayout reports a tar stream that is not exactly manifest.json
	// followed by the listed payloads: wrong order, extra or missing
	// entries, non-regular files, unsafe names, truncation, trailing data.
	ErrBundleLayout = errors.New("invalid bundle layout")
	// ErrSignature reports a publisher signature that does not verify.
	ErrSignature = errors.New("signature does not verify")
)
