package wire

import (
	"time"

	"github.com/dialtone-dev/dialtone/internal/cel"
)

// The attestation exchanges between an agent and the server's API
// (DESIGN.md §5): enrollment in two steps (the credential challenge and its
// answer), then attestations, each over a fresh nonce. Byte fields are
// base64 in JSON.

// EnrollRequest is the first step of enrollment.
type EnrollRequest struct {
	Device   string `json:"device"`
	Model    string `json:"model"`
	EKPublic []byte `json:"ek_public"`         // TPMT_PUBLIC
	EKCert   []byte `json:"ek_cert,omitempty"` // DER, from the TPM's NV
	AKPublic []byte `json:"ak_public"`         // TPMT_PUBLIC
	Token    string `json:"token,omitempty"`   // a one-time enrollment token
}

// Challenge is a credential-activation challenge: a secret encrypted to
// the EK and bound to the AK's name (TPM2_MakeCredential's output).
type Challenge struct {
	CredBlob  []byte `json:"cred_blob"`
	EncSecret []byte `json:"enc_secret"`
}

// EnrollChallenge is the server's answer to an EnrollRequest.
type EnrollChallenge struct {
	ID        string    `json:"id"`
	Challenge Challenge `json:"challenge"`
}

// EnrollActivate is the second step: the secret the TPM recovered.
type EnrollActivate struct {
	Secret []byte `json:"secret"`
}

// Enrolled is the result of a finished enrollment.
type Enrolled struct {
	Device string `json:"device"`
	Tenant string `json:"tenant"`
	Method string `json:"method"`
	// Token is the device's attestation token, given once: its nonce and
	// attestation requests carry it, so that a verdict is only ever
	// reached on what the device itself sent. The agent keeps it sealed
	// to its TPM; the server keeps its SHA-256.
	Token string `json:"token"`
}

// AttestTokenPrefix starts every attestation token.
const AttestTokenPrefix = "dtat_"

// MaxAttestToken bounds an attestation token in a request.
const MaxAttestToken = 128

// NonceRequest asks for an attestation nonce.
type NonceRequest struct {
	Device string `json:"device"`
	Token  string `json:"token"`
}

// NonceResponse carries a nonce, single use, until Expires.
type NonceResponse struct {
	Nonce   []byte    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// Quote is a TPMS_ATTEST and the TPMT_SIGNATURE over it, marshalled.
type Quote struct {
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
}

// AttestRequest is one attestation.
type AttestRequest struct {
	Device string `json:"device"`
	Token  string `json:"token"` // the device's attestation token (Enrolled.Token)
	Nonce  []byte `json:"nonce"`
	Quote  Quote  `json:"quote"`
	Log    []byte `json:"log"` // the boot's measurement log, CEL TLV
	// Version is the version the agent says it booted; the version in the
	// device's reported state, when there is one, is what is judged.
	Version string `json:"version,omitempty"`
	// PCRValue is the measurement PCR as the agent read it.
	PCRValue []byte `json:"pcr_value,omitempty"`
}

// Verdict is the server's judgement of an attestation.
type Verdict struct {
	Outcome string `json:"outcome"` // trusted, untrusted
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
	// Booted is the last image the log says was booted, when the log was
	// good enough to say.
	Booted *cel.Firmware `json:"booted,omitempty"`
}

// CertRequest asks for a device certificate for a TPM-resident device key
// that the AK certified (TPM2_Certify) over a nonce from /v1/attest/nonce.
type CertRequest struct {
	Device        string `json:"device"`
	Nonce         []byte `json:"nonce"`
	KeyPublic     []byte `json:"key_public"`     // the device key's TPMT_PUBLIC
	CertifyAttest []byte `json:"certify_attest"` // TPMS_ATTEST of the certification
	CertifySig    []byte `json:"certify_sig"`    // the AK's TPMT_SIGNATURE over it
}

// CertResponse carries the certificate (PEM) and the device CA's.
type CertResponse struct {
	Certificate []byte    `json:"certificate"`
	CA          []byte    `json:"ca"`
	Expires     time.Time `json:"expires"`
}
