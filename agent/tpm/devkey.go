package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/quote"
)

// DeviceKeyTemplate is the device key: the key behind the phone's X.509
// identity. The TPM generates it and never lets it out (fixedTPM,
// fixedParent, sensitiveDataOrigin); unlike the AK it is not restricted,
// because it signs outside data (TLS handshakes), and it cannot decrypt.
// Its scheme is fixed to ECDSA / SHA-256 so that nothing but that can be
// asked of it.
var DeviceKeyTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// ErrKeyBlob means a device key file is not one this package wrote.
var ErrKeyBlob = errors.New("bad device key blob")

// DeviceKeyBlob is the device key as the TPM hands it out: its public area
// (TPMT_PUBLIC) and its private area (the contents of a TPM2B_PRIVATE),
// which the storage root key encrypted and only this TPM can load.
type DeviceKeyBlob struct {
	Public, Private []byte
}

// deviceKeyFormat is the device key file. Bounds: a TPMT_PUBLIC of an
// ECC key is about 90 bytes and a TPM2B_PRIVATE some 130, so these leave
// room without letting a damaged file ask for much.
var deviceKeyFormat = objectFormat{
	magic: []byte("DTDK\x01"), maxPublic: 1024, maxPrivate: 1024, maxFile: 8 << 10,
	what: "the device key", err: ErrKeyBlob,
}

// Marshal encodes the blob for the agent's state directory.
func (b DeviceKeyBlob) Marshal() []byte { return deviceKeyFormat.marshal(b.Public, b.Private) }

// UnmarshalDeviceKeyBlob decodes what Marshal wrote, refusing anything
// else — other magic, oversized parts, trailing bytes, a public area that
// is not a device key.
func UnmarshalDeviceKeyBlob(data []byte) (DeviceKeyBlob, error) {
	pub, priv, err := deviceKeyFormat.unmarshal(data)
	if err != nil {
		return DeviceKeyBlob{}, err
	}
	if _, err := quote.DeviceKeyPublic(pub); err != nil {
		return DeviceKeyBlob{}, fmt.Errorf("%w: %w", ErrKeyBlob, err)
	}
	return DeviceKeyBlob{Public: pub, Private: priv}, nil
}

// WriteFile saves the blob, replacing name atomically: a power cut leaves
// the old key or the new one, never a file that loads neither.
func (b DeviceKeyBlob) WriteFile(name string) error {
	return atomicfile.WriteFile(name, b.Marshal(), 0o600)
}

// ReadDeviceKeyBlob reads a blob WriteFile saved.
func ReadDeviceKeyBlob(name string) (DeviceKeyBlob, error) {
	data, err := deviceKeyFormat.read(name)
	if err != nil {
		return DeviceKeyBlob{}, err
	}
	return UnmarshalDeviceKeyBlob(data)
}

// createSRK makes the storage root key: the ECC P-256 primary of the owner
// hierarchy from the TCG template. The template being fixed and the owner
// seed surviving reboots, it is the same key every time, so it needs no
// persistent handle — at the price of a key derivation each time.
func createSRK(t transport.TPM) (*tpm2.CreatePrimaryResponse, error) {
	srk, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the storage root key: %w", err)
	}
	return srk, nil
}

// CreateDeviceKey has the TPM generate a new device key under the storage
// root key and returns its blob, which the agent saves (WriteFile) to load
// the key again after a reboot. It needs two free transient object slots:
// on a TPM where an Attestor is open, use the Attestor's CreateDeviceKey.
func CreateDeviceKey(t transport.TPM) (DeviceKeyBlob, error) {
	return createKey(t, DeviceKeyTemplate)
}

// createKey creates a key from any template under the SRK; tests use it
// for keys the verifier must refuse.
func createKey(t transport.TPM, template tpm2.TPMTPublic) (DeviceKeyBlob, error) {
	srk, err := createSRK(t)
	if err != nil {
		return DeviceKeyBlob{}, err
	}
	defer flush(t, srk.ObjectHandle)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(template),
	}.Execute(t)
	if err != nil {
		return DeviceKeyBlob{}, fmt.Errorf("creating the device key: %w", err)
	}
	return DeviceKeyBlob{Public: bytes.Clone(rsp.OutPublic.Bytes()), Private: bytes.Clone(rsp.OutPrivate.Buffer)}, nil
}

// DeviceKey is the device key loaded in the TPM. Close flushes it.
type DeviceKey struct {
	tpm    transport.TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte
	key    *ecdsa.PublicKey
}

// LoadDeviceKey loads a blob CreateDeviceKey made on this TPM. It takes two
// of the TPM's transient object slots while loading (the SRK and the key)
// and one after. A blob of another TPM, or of this one after its owner
// hierarchy was cleared, does not load.
func LoadDeviceKey(t transport.TPM, b DeviceKeyBlob) (*DeviceKey, error) {
	key, err := quote.DeviceKeyPublic(b.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyBlob, err)
	}
	h, name, err := loadKey(t, b)
	if err != nil {
		return nil, err
	}
	return &DeviceKey{tpm: t, handle: h, name: name, public: bytes.Clone(b.Public), key: key}, nil
}

// loadKey loads any blob under the SRK, which it flushes again: a loaded
// key does not need its parent to sign or be certified.
func loadKey(t transport.TPM, b DeviceKeyBlob) (tpm2.TPMHandle, tpm2.TPM2BName, error) {
	srk, err := createSRK(t)
	if err != nil {
		return 0, tpm2.TPM2BName{}, err
	}
	defer flush(t, srk.ObjectHandle)
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: b.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
	}.Execute(t)
	if err != nil {
		return 0, tpm2.TPM2BName{}, fmt.Errorf("loading the device key: %w", err)
	}
	return rsp.ObjectHandle, rsp.Name, nil
}

// Public is the key's public half.
func (k *DeviceKey) Public() *ecdsa.PublicKey { return k.key }

// PublicArea is the key's TPMT_PUBLIC, marshalled: what the server checks
// a certification against (quote.VerifyCertify).
func (k *DeviceKey) PublicArea() []byte { return bytes.Clone(k.public) }

// Close flushes the key from the TPM.
func (k *DeviceKey) Close() error {
	_, err := tpm2.FlushContext{FlushHandle: k.handle}.Execute(k.tpm)
	if err != nil {
		return fmt.Errorf("flushing the device key: %w", err)
	}
	return nil
}

// Certify has the AK certify (TPM2_Certify) the device key of blob b over
// the server's nonce: the proof, for quote.VerifyCertify, that the key
// lives in the same TPM as the AK.
func (a *Attestor) Certify(b DeviceKeyBlob, nonce []byte) (quote.Certification, error) {
	if _, err := quote.DeviceKeyPublic(b.Public); err != nil {
		return quote.Certification{}, fmt.Errorf("%w: %w", ErrKeyBlob, err)
	}
	return a.certify(b, nonce)
}

// CreateDeviceKey is CreateDeviceKey on the Attestor's TPM, which the
// Attestor's keys leave too full for it (see withRoom).
func (a *Attestor) CreateDeviceKey() (b DeviceKeyBlob, err error) {
	err = a.withRoom(func() error {
		b, err = CreateDeviceKey(a.tpm)
		return err
	})
	return b, err
}

// withRoom runs f with the EK saved out of the TPM (TPM2_ContextSave) and
// loads it back after. The Attestor keeps the EK and the AK loaded, and a
// TPM without a resource manager — swtpm, the simulator, /dev/tpm0 —
// holds only three transient objects, while creating or certifying the
// device key takes the SRK, the key and, to certify, the AK.
func (a *Attestor) withRoom(f func() error) (err error) {
	saved, err := tpm2.ContextSave{SaveHandle: a.ek.ObjectHandle}.Execute(a.tpm)
	if err != nil {
		return fmt.Errorf("saving the EK's context: %w", err)
	}
	flush(a.tpm, a.ek.ObjectHandle)
	defer func() {
		rsp, lerr := tpm2.ContextLoad{Context: saved.Context}.Execute(a.tpm)
		if lerr != nil {
			err = errors.Join(err, fmt.Errorf("loading the EK back: %w", lerr))
			return
		}
		a.ek.ObjectHandle = rsp.LoadedHandle
	}()
	return f()
}

// certify is Certify without the check of the key's shape, so that tests
// can have the TPM certify keys the verifier must refuse.
func (a *Attestor) certify(b DeviceKeyBlob, nonce []byte) (c quote.Certification, err error) {
	err = a.withRoom(func() error {
		h, name, err := loadKey(a.tpm, b)
		if err != nil {
			return err
		}
		defer flush(a.tpm, h)
		rsp, err := tpm2.Certify{
			ObjectHandle:   tpm2.AuthHandle{Handle: h, Name: name, Auth: tpm2.PasswordAuth(nil)},
			SignHandle:     tpm2.AuthHandle{Handle: a.ak.ObjectHandle, Name: a.ak.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(a.tpm)
		if err != nil {
			return fmt.Errorf("certifying the device key: %w", err)
		}
		c = quote.Certification{Attest: bytes.Clone(rsp.CertifyInfo.Bytes()), Signature: tpm2.Marshal(rsp.Signature)}
		return nil
	})
	return c, err
}
