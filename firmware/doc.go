// Package firmware owns the bundle format (build, read, verify) and the
// publisher signature.
//
// A bundle is an uncompressed tar stream: manifest.json first, then the
// payload files in manifest order, nothing else. The manifest names the
// model, version and hardware revisions and lists each payload's name, size
// and SHA-256. Bundles are produced by Build and checked by Read and Verify,
// which stream: no payload is held in memory, and no size or count read from
// the stream is trusted before it has been checked against Limits.
//
// Bytes handed to a Read callback are not yet verified; they become
// trustworthy only when Read returns nil. The agent therefore streams a
// payload into the inactive slot and marks it bootable only afterwards.
//
// The publisher signature is what `cosign sign-blob --key` writes and
// `cosign verify-blob --key` checks: base64 of an ASN.1 DER ECDSA signature
// over the SHA-256 of the whole bundle file. The same SHA-256 is the TUF
// target hash, so a caller that tees the stream into one sha256 hash while
// calling Read can check both TUF and VerifySignatureDigest without a second
// pass over the data.
package firmware
