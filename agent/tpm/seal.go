package tpm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
)

// MaxSealedSecret is the most a sealed data object holds: the TPM's
// MAX_SYM_DATA.
const MaxSealedSecret = 128

// SealedTemplate is a sealed data object: a keyed-hash object that can
// neither sign nor decrypt, so that all the TPM does with it is hand its
// data back (TPM2_Unseal), and only under the parent that created it, in
// the TPM that created it (fixedTPM, fixedParent). It has no auth value of
// its own (noDA: nothing to guess); what protects it is that its private
// area loads in no other TPM.
var SealedTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgKeyedHash,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:     true,
		FixedParent:  true,
		UserWithAuth: true,
		NoDA:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
		Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
	}),
}

// ErrSealedBlob means a sealed file is not one this package wrote.
var ErrSealedBlob = errors.New("bad sealed blob")

// ErrSecretSize means a secret is empty or longer than MaxSealedSecret.
var ErrSecretSize = fmt.Errorf("secret must be 1 to %d bytes", MaxSealedSecret)

// SealedBlob is a sealed data object as the TPM hands it out: its public
// area (TPMT_PUBLIC) and its private area (the contents of a
// TPM2B_PRIVATE), encrypted by the storage root key, which only this TPM
// can load.
type SealedBlob struct {
	Public, Private []byte
}

// sealedFormat is the sealed secret file. Bounds: a sealed object's
// TPMT_PUBLIC is some 50 bytes and its TPM2B_PRIVATE some 200 with a full
// 128-byte secret.
var sealedFormat = objectFormat{
	magic: []byte("DTSL\x01"), maxPublic: 512, maxPrivate: 1024, maxFile: 4 << 10,
	what: "the sealed blob", err: ErrSealedBlob,
}

// Marshal encodes the blob for the agent's state directory.
func (b SealedBlob) Marshal() []byte { return sealedFormat.marshal(b.Public, b.Private) }

// UnmarshalSealedBlob decodes what Marshal wrote, refusing anything else:
// other magic, oversized parts, trailing bytes, a public area that is not
// a sealed data object.
func UnmarshalSealedBlob(data []byte) (SealedBlob, error) {
	pub, priv, err := sealedFormat.unmarshal(data)
	if err != nil {
		return SealedBlob{}, err
	}
	if err := checkSealedPublic(pub); err != nil {
		return SealedBlob{}, err
	}
	return SealedBlob{Public: pub, Private: priv}, nil
}

// checkSealedPublic accepts only the public area of a sealed data object
// of SealedTemplate's shape, encoded canonically.
func checkSealedPublic(b []byte) error {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return fmt.Errorf("%w: public area: %v", ErrSealedBlob, err)
	}
	if !bytes.Equal(tpm2.Marshal(*pub), b) {
		return fmt.Errorf("%w: public area: trailing or non-canonical bytes", ErrSealedBlob)
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: not a keyed-hash object with SHA-256 names", ErrSealedBlob)
	}
	if !a.FixedTPM || !a.FixedParent || a.SignEncrypt || a.Decrypt || a.Restricted {
		return fmt.Errorf("%w: not a sealed data object bound to its TPM", ErrSealedBlob)
	}
	return nil
}

// WriteFile saves the blob, replacing name atomically.
func (b SealedBlob) WriteFile(name string) error {
	return atomicfile.WriteFile(name, b.Marshal(), 0o600)
}

// ReadSealedBlob reads a blob WriteFile saved. A missing file is an error
// that wraps fs.ErrNotExist.
func ReadSealedBlob(name string) (SealedBlob, error) {
	data, err := sealedFormat.read(name)
	if err != nil {
		return SealedBlob{}, err
	}
	return UnmarshalSealedBlob(data)
}

// srkSession is an HMAC session salted with the SRK, encrypting the
// command's first parameter (dir EncryptIn) or the response's (EncryptOut):
// the secret crosses the bus to the TPM, or a swtpm socket, encrypted.
func srkSession(srk *tpm2.CreatePrimaryResponse, dir tpm2.AuthOption) (tpm2.Session, error) {
	pub, err := srk.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("reading the storage root key: %w", err)
	}
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, dir, tpm2.Salted(srk.ObjectHandle, *pub)), nil
}

// Seal has the TPM seal secret (1 to MaxSealedSecret bytes) into a sealed
// data object under the storage root key and returns its blob. It takes one
// transient object slot while it runs (the SRK) and none after.
func Seal(t transport.TPM, secret []byte) (SealedBlob, error) {
	if len(secret) == 0 || len(secret) > MaxSealedSecret {
		return SealedBlob{}, ErrSecretSize
	}
	srk, err := createSRK(t)
	if err != nil {
		return SealedBlob{}, err
	}
	defer flush(t, srk.ObjectHandle)
	sess, err := srkSession(srk, tpm2.AESEncryption(128, tpm2.EncryptIn))
	if err != nil {
		return SealedBlob{}, err
	}
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(SealedTemplate),
	}.Execute(t, sess)
	if err != nil {
		return SealedBlob{}, fmt.Errorf("sealing: %w", err)
	}
	return SealedBlob{Public: bytes.Clone(rsp.OutPublic.Bytes()), Private: bytes.Clone(rsp.OutPrivate.Buffer)}, nil
}

// Unseal loads a blob Seal made on this TPM and returns its secret,
// flushing everything it loaded. It takes two transient object slots while
// it runs (the SRK and the sealed object). A blob of another TPM, or of
// this one after its owner hierarchy was cleared, does not load.
func Unseal(t transport.TPM, b SealedBlob) ([]byte, error) {
	if err := checkSealedPublic(b.Public); err != nil {
		return nil, err
	}
	srk, err := createSRK(t)
	if err != nil {
		return nil, err
	}
	defer flush(t, srk.ObjectHandle)
	obj, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: b.Private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("loading the sealed object: %w", err)
	}
	defer flush(t, obj.ObjectHandle)
	sess, err := srkSession(srk, tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: tpm2.PasswordAuth(nil)},
	}.Execute(t, sess)
	if err != nil {
		return nil, fmt.Errorf("unsealing: %w", err)
	}
	return bytes.Clone(rsp.OutData.Buffer), nil
}
