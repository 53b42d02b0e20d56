package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/quote"
)

// ErrHash means a Sign asked for a digest the device key cannot sign: its
// scheme is fixed to ECDSA with SHA-256.
var ErrHash = errors.New("the device key signs SHA-256 digests only")

// Opener reaches the TPM for one operation; Open with the agent's --tpm
// spec is one.
type Opener func(ctx context.Context) (transport.TPMCloser, error)

// Signer is the device key as a crypto.Signer, for the client certificate
// of the agent's mTLS connections.
//
// The agent does not hold the TPM open — swtpm serves one connection at a
// time, and the attestation and NV code need their turn — so every Sign
// opens the TPM, recreates the SRK, loads the key, signs, flushes and
// closes: five TPM commands, one of them an ECC key derivation (the SRK).
// On swtpm that is about 2 ms a Sign (BenchmarkSignerOnSwtpm, loopback
// TCP); a phone's TPM is slower, likely tens of milliseconds — paid once
// per TLS handshake. Signs are serialised.
type Signer struct {
	open Opener
	blob DeviceKeyBlob
	pub  *ecdsa.PublicKey
	mu   sync.Mutex
}

var _ crypto.Signer = (*Signer)(nil)

// NewSigner makes a Signer for the device key of blob, reaching the TPM
// through open. It does not touch the TPM.
func NewSigner(open Opener, b DeviceKeyBlob) (*Signer, error) {
	pub, err := quote.DeviceKeyPublic(b.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyBlob, err)
	}
	return &Signer{open: open, blob: b, pub: pub}, nil
}

// Public returns the device key's *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// signTimeout bounds one Sign, which crypto.Signer gives no context: the
// TPM transports bound each command too, this bounds reaching the TPM.
const signTimeout = time.Minute

// Sign signs a SHA-256 digest with the device key and returns an ASN.1 DER
// ECDSA signature, as crypto.Signer wants. rand is not used: the TPM makes
// its own nonce.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	// crypto.Signer has no context; crypto/tls calls Sign in the middle
	// of a handshake that has its own deadline on the connection.
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	return s.SignContext(ctx, digest, opts)
}

// SignContext is Sign for callers with a context.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("%w: asked for %v", ErrHash, hashName(opts))
	}
	if len(digest) != crypto.SHA256.Size() {
		return nil, fmt.Errorf("%w: a digest of %d bytes", ErrHash, len(digest))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("signing with the device key: %w", err)
	}
	defer t.Close()
	h, name, err := loadKey(t, s.blob)
	if err != nil {
		return nil, err
	}
	defer flush(t, h)
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme:  tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		// An unrestricted key needs no proof that the TPM hashed the
		// data itself: the NULL ticket.
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("signing with the device key: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("signing with the device key: %w", err)
	}
	der, err := asn1.Marshal(struct{ R, S *big.Int }{
		new(big.Int).SetBytes(sig.SignatureR.Buffer),
		new(big.Int).SetBytes(sig.SignatureS.Buffer),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the signature: %w", err)
	}
	return der, nil
}

func hashName(opts crypto.SignerOpts) string {
	if opts == nil {
		return "no hash"
	}
	if h := opts.HashFunc(); h != 0 {
		return h.String()
	}
	return "no hash (a signature over the message itself)"
}
