package attest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// Enrollment errors, for callers to tell refusals apart.
var (
	ErrEKCert = errors.New("EK certificate not trusted")
	ErrEKKey  = errors.New("EK public key does not match its certificate")
)

// oidSAN is the subject alternative name extension. TCG EK certificates
// mark it critical and put the TPM's manufacturer, model and version in a
// directoryName, which crypto/x509 does not interpret — so it lists the
// extension as unhandled although there is nothing for a verifier to
// enforce in it (go-attestation does the same).
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCert checks an EK certificate (DER) against the manufacturer CAs
// the server trusts (roots, and the intermediates it knows) at time now,
// and that it certifies ekPublic, the EK's marshalled TPMT_PUBLIC. It
// returns the certificate.
func VerifyEKCert(der []byte, roots, intermediates *x509.CertPool, ekPublic []byte, now time.Time) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKCert, err)
	}
	var unhandled []asn1.ObjectIdentifier
	for _, o := range cert.UnhandledCriticalExtensions {
		if !o.Equal(oidSAN) {
			unhandled = append(unhandled, o)
		}
	}
	cert.UnhandledCriticalExtensions = unhandled
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKCert, err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKKey, err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKKey, err)
	}
	certKey, ok := cert.PublicKey.(*rsa.PublicKey)
	ekKey, ok2 := key.(*rsa.PublicKey)
	if !ok || !ok2 || !certKey.Equal(ekKey) {
		return nil, ErrEKKey
	}
	return cert, nil
}

// Challenge is a credential-activation challenge: a secret encrypted to
// the EK and bound to the AK's name. Only the TPM that holds both keys
// can recover the secret (TPM2_ActivateCredential), which is what proves
// the AK is that TPM's.
type Challenge = wire.Challenge

// NewChallenge makes a challenge for the EK and AK (marshalled
// TPMT_PUBLICs) and returns it with its secret. An AK that is not a
// restricted, TPM-resident signing key is refused before anything is sent.
func NewChallenge(ekPublic, akPublic []byte) (Challenge, []byte, error) {
	if _, err := quote.AKPublic(akPublic); err != nil {
		return Challenge{}, nil, err
	}
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		return Challenge{}, nil, fmt.Errorf("%w: %v", ErrEKKey, err)
	}
	key, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return Challenge{}, nil, fmt.Errorf("%w: %v", ErrEKKey, err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Challenge{}, nil, err
	}
	blob, enc, err := tpm2.CreateCredential(rand.Reader, key, quote.Name(akPublic), secret)
	if err != nil {
		return Challenge{}, nil, fmt.Errorf("making the credential challenge: %w", err)
	}
	return Challenge{CredBlob: blob, EncSecret: enc}, secret, nil
}

// CheckResponse compares the secret a device recovered with the one issued.
func CheckResponse(secret, response []byte) bool {
	return len(secret) > 0 && subtle.ConstantTimeCompare(secret, response) == 1
}
