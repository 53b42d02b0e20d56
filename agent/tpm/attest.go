package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultPCR is the PCR the agent measures firmware into: not resettable
// without a reboot, and not used by U-Boot or a Linux kernel's IMA.
const DefaultPCR = 14

// EKCertIndex is the NV index of the RSA 2048 EK certificate (TCG EK
// Credential Profile), where manufacturers — and swtpm_setup
// --create-ek-cert — put it.
const EKCertIndex = tpm2.TPMHandle(0x01c00002)

// AKTemplate is the attestation key: a restricted ECDSA P-256 signing key,
// which the TPM lets sign only what it produced itself (quotes,
// certifications), never outside data made to look like a quote. As a
// primary key of the endorsement hierarchy it is the same key after every
// reboot, without any key blob on the phone's disk.
var AKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		// "dialtone-ak" keeps the AK apart from other primaries of the
		// endorsement hierarchy made from a similar template.
		X: tpm2.TPM2BECCParameter{Buffer: []byte("dialtone-ak")},
	}),
}

// ErrNoEKCert means the TPM holds no EK certificate; enrollment then needs
// an operator to approve the EK public key.
var ErrNoEKCert = errors.New("no EK certificate in the TPM")

// Attestor holds the TPM's endorsement key and attestation key, loaded for
// the agent's attestation exchanges. Close flushes them.
type Attestor struct {
	tpm transport.TPM
	ek  *tpm2.CreatePrimaryResponse
	ak  *tpm2.CreatePrimaryResponse
}

// NewAttestor loads the EK (RSA 2048, the TCG default template, which the
// EK certificate certifies) and the AK.
func NewAttestor(t transport.TPM) (*Attestor, error) {
	ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the endorsement key: %w", err)
	}
	ak, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(AKTemplate)}.Execute(t)
	if err != nil {
		flush(t, ek.ObjectHandle)
		return nil, fmt.Errorf("creating the attestation key: %w", err)
	}
	return &Attestor{tpm: t, ek: ek, ak: ak}, nil
}

// Close flushes the keys from the TPM.
func (a *Attestor) Close() error {
	flush(a.tpm, a.ak.ObjectHandle)
	flush(a.tpm, a.ek.ObjectHandle)
	return nil
}

func flush(t transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// EKPublic is the EK's TPMT_PUBLIC, marshalled.
func (a *Attestor) EKPublic() []byte { return a.ek.OutPublic.Bytes() }

// AKPublic is the AK's TPMT_PUBLIC, marshalled: what the server checks the
// credential activation against and verifies quotes with.
func (a *Attestor) AKPublic() []byte { return a.ak.OutPublic.Bytes() }

// AKName is the AK's TPM name (nameAlg || digest of its public area).
func (a *Attestor) AKName() []byte { return a.ak.Name.Buffer }

// EKCertificate reads the EK certificate (DER) from its NV index.
func (a *Attestor) EKCertificate() ([]byte, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: EKCertIndex}.Execute(a.tpm)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoEKCert, err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("parsing the EK certificate's nv public: %w", err)
	}
	// Read in chunks: a TPM's NV buffer is smaller than most certificates.
	const chunk = 512
	var out []byte
	for off := uint16(0); off < pub.DataSize; off += chunk {
		n := min(chunk, pub.DataSize-off)
		rd, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: EKCertIndex, Name: rsp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: EKCertIndex, Name: rsp.NVName},
			Size:       n,
			Offset:     off,
		}.Execute(a.tpm)
		if err != nil {
			return nil, fmt.Errorf("reading the EK certificate: %w", err)
		}
		out = append(out, rd.Data.Buffer...)
	}
	return trimDER(out), nil
}

// trimDER drops the padding some TPMs leave after the certificate in its
// NV index (the index is sized generously).
func trimDER(b []byte) []byte {
	if len(b) < 4 || b[0] != 0x30 {
		return b
	}
	var n int
	switch {
	case b[1] < 0x80:
		n = 2 + int(b[1])
	case b[1] == 0x81:
		n = 3 + int(b[2])
	case b[1] == 0x82:
		n = 4 + int(b[2])<<8 + int(b[3])
	default:
		return b
	}
	if n <= len(b) {
		return b[:n]
	}
	return b
}

// ActivateCredential recovers the secret the server encrypted to the EK for
// the AK's name (the server's MakeCredential): the TPM releases it only if
// the AK is loaded in the same TPM as the EK, which is what proves the AK
// is this TPM's.
func (a *Attestor) ActivateCredential(credBlob, encSecret []byte) ([]byte, error) {
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.NamedHandle{Handle: a.ak.ObjectHandle, Name: a.ak.Name},
		KeyHandle: tpm2.AuthHandle{Handle: a.ek.ObjectHandle, Name: a.ek.Name,
			Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: credBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(a.tpm)
	if err != nil {
		return nil, fmt.Errorf("activating the credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// ekPolicy satisfies the default EK's policy: PolicySecret(endorsement).
func ekPolicy(t transport.TPM, handle tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: handle, NonceTPM: nonceTPM}.Execute(t)
	return err
}

// Quote is a TPM quote: the TPMS_ATTEST the TPM produced and the AK's
// signature over it (TPMT_SIGNATURE), both marshalled.
type Quote struct {
	Attest    []byte
	Signature []byte
}

// PCRSelection selects SHA-256 PCRs.
func PCRSelection(pcrs ...uint) tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...)},
	}}
}

// Quote has the AK sign the SHA-256 PCRs pcrs and nonce.
func (a *Attestor) Quote(nonce []byte, pcrs ...uint) (Quote, error) {
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: a.ak.ObjectHandle, Name: a.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      PCRSelection(pcrs...),
	}.Execute(a.tpm)
	if err != nil {
		return Quote{}, fmt.Errorf("quoting PCRs %v: %w", pcrs, err)
	}
	return Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}, nil
}

// Extend extends a SHA-256 digest into a PCR.
func Extend(t transport.TPM, pcr uint, digest [32]byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]}}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("extending PCR %d: %w", pcr, err)
	}
	return nil
}

// ReadPCR reads a SHA-256 PCR.
func ReadPCR(t transport.TPM, pcr uint) ([32]byte, error) {
	rsp, err := tpm2.PCRRead{PCRSelectionIn: PCRSelection(pcr)}.Execute(t)
	if err != nil {
		return [32]byte{}, fmt.Errorf("reading PCR %d: %w", pcr, err)
	}
	if len(rsp.PCRValues.Digests) != 1 || len(rsp.PCRValues.Digests[0].Buffer) != 32 {
		return [32]byte{}, fmt.Errorf("reading PCR %d: the TPM returned %d values", pcr, len(rsp.PCRValues.Digests))
	}
	var out [32]byte
	copy(out[:], rsp.PCRValues.Digests[0].Buffer)
	return out, nil
}
