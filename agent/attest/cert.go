package attest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Files of the device identity in Config.Dir.
const (
	deviceKeyFile  = "devkey.blob" // the TPM-resident key's blobs (useless without that TPM)
	deviceCertFile = "device.crt"  // its certificate from the server's device CA
	deviceCAFile   = "device-ca.crt"
)

// ErrNoCertificate: the device has no usable certificate yet.
var ErrNoCertificate = errors.New("no device certificate")

// Certificate returns the device certificate with its TPM-backed key, for
// mTLS to the broker and the API.
func (cl *Client) Certificate() (*tls.Certificate, error) {
	cl.certMu.Lock()
	defer cl.certMu.Unlock()
	if cl.cert == nil {
		if err := cl.loadCertLocked(); err != nil {
			return nil, err
		}
	}
	if time.Now().After(cl.cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("%w: expired %s", ErrNoCertificate, cl.cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	return cl.cert, nil
}

func (cl *Client) loadCertLocked() error {
	blob, err := tpm.ReadDeviceKeyBlob(filepath.Join(cl.c.Dir, deviceKeyFile))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoCertificate, err)
	}
	b, err := os.ReadFile(filepath.Join(cl.c.Dir, deviceCertFile))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoCertificate, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("%w: %s holds no PEM certificate", ErrNoCertificate, deviceCertFile)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoCertificate, err)
	}
	signer, err := tpm.NewSigner(tpm.Opener(cl.c.TPM.Opener()), blob)
	if err != nil {
		return err
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return fmt.Errorf("%w: the certificate is not for the TPM's device key", ErrNoCertificate)
	}
	cl.cert = &tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: signer, Leaf: leaf,
		SupportedSignatureAlgorithms: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}}
	return nil
}

// RenewDue reports whether the certificate is missing or past half its
// life: renewal follows a trusted attestation, so an untrusted device's
// certificate runs out.
func (cl *Client) RenewDue() bool {
	c, err := cl.Certificate()
	if err != nil {
		return true
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	return time.Until(c.Leaf.NotAfter) < life/2
}

// RenewCertificate makes the device key on first use, has the AK certify
// it over a fresh nonce, and asks the server for a certificate — which it
// issues only while the device's attestation is trusted.
func (cl *Client) RenewCertificate(ctx context.Context) error {
	keyPath := filepath.Join(cl.c.Dir, deviceKeyFile)
	var nr wire.NonceResponse
	token, err := cl.attestToken(ctx)
	if err != nil {
		return err
	}
	if err := cl.post(ctx, "/v1/attest/nonce", wire.NonceRequest{Device: cl.c.Device, Token: token}, &nr); err != nil {
		return err
	}
	req := wire.CertRequest{Device: cl.c.Device, Nonce: nr.Nonce}
	err = cl.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		a, err := tpm.NewAttestor(t)
		if err != nil {
			return err
		}
		defer a.Close()
		blob, err := tpm.ReadDeviceKeyBlob(keyPath)
		if errors.Is(err, os.ErrNotExist) {
			if blob, err = a.CreateDeviceKey(); err != nil {
				return fmt.Errorf("creating the device key: %w", err)
			}
			if err := blob.WriteFile(keyPath); err != nil {
				return err
			}
			cl.log.Info("device key created in the TPM")
		} else if err != nil {
			return err
		}
		c, err := a.Certify(blob, nr.Nonce)
		if err != nil {
			return fmt.Errorf("certifying the device key: %w", err)
		}
		req.KeyPublic = blob.Public // its TPMT_PUBLIC
		req.CertifyAttest, req.CertifySig = c.Attest, c.Signature
		return nil
	})
	if err != nil {
		return err
	}
	var res wire.CertResponse
	if err := cl.post(ctx, "/v1/device-certificates", req, &res); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(cl.c.Dir, deviceCAFile), res.CA, 0o644); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(cl.c.Dir, deviceCertFile), res.Certificate, 0o644); err != nil {
		return err
	}
	cl.certMu.Lock()
	cl.cert = nil
	err = cl.loadCertLocked()
	cl.certMu.Unlock()
	if err != nil {
		return err
	}
	cl.log.Info("device certificate renewed", "expires", res.Expires)
	return nil
}
