package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrNVUndefined means the NV index does not exist yet.
var ErrNVUndefined = errors.New("nv index not defined")

// NVSpace is one owner-defined NV index holding a fixed number of bytes.
//
// It is written with owner authorization and read with its own (empty)
// authorization, so that restoring an old copy of the agent's state
// directory cannot change it: only the TPM's owner can.
type NVSpace struct {
	TPM   transport.TPM
	Index tpm2.TPMHandle
	Size  uint16
	// OwnerAuth is the owner hierarchy's password; empty on swtpm and on
	// phones whose owner hierarchy was not locked down.
	OwnerAuth []byte
}

func (s *NVSpace) ownerAuth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(s.OwnerAuth)}
}

func (s *NVSpace) public() (*tpm2.NVReadPublicResponse, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: s.Index}.Execute(s.TPM)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, fmt.Errorf("%w: %#x", ErrNVUndefined, uint32(s.Index))
		}
		return nil, fmt.Errorf("reading nv public %#x: %w", uint32(s.Index), err)
	}
	return rsp, nil
}

// Define creates the index unless it exists; an existing index of another
// size or kind is an error rather than something to redefine, because
// undefining it would drop the value it protects.
func (s *NVSpace) Define() error {
	rsp, err := s.public()
	if err == nil {
		pub, err := rsp.NVPublic.Contents()
		if err != nil {
			return fmt.Errorf("parsing nv public: %w", err)
		}
		if pub.DataSize != s.Size || pub.Attributes.NT != tpm2.TPMNTOrdinary {
			return fmt.Errorf("nv index %#x exists with size %d kind %d, want an ordinary index of %d bytes",
				uint32(s.Index), pub.DataSize, pub.Attributes.NT, s.Size)
		}
		return nil
	}
	if !errors.Is(err, ErrNVUndefined) {
		return err
	}
	def := tpm2.NVDefineSpace{
		AuthHandle: s.ownerAuth(),
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: s.Index,
			NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{
				OwnerWrite: true,
				AuthRead:   true,
				NoDA:       true,
				NT:         tpm2.TPMNTOrdinary,
			},
			DataSize: s.Size,
		}),
	}
	if _, err := def.Execute(s.TPM); err != nil {
		return fmt.Errorf("defining nv index %#x: %w", uint32(s.Index), err)
	}
	return nil
}

// Read returns the index's bytes; an index never written reads as
// ErrNVUndefined too, since it holds no value yet.
func (s *NVSpace) Read() ([]byte, error) {
	rsp, err := s.public()
	if err != nil {
		return nil, err
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("parsing nv public: %w", err)
	}
	if !pub.Attributes.Written {
		return nil, fmt.Errorf("%w: %#x never written", ErrNVUndefined, uint32(s.Index))
	}
	rd, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: s.Index, Name: rsp.NVName, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: s.Index, Name: rsp.NVName},
		Size:       pub.DataSize,
	}.Execute(s.TPM)
	if err != nil {
		return nil, fmt.Errorf("reading nv index %#x: %w", uint32(s.Index), err)
	}
	return rd.Data.Buffer, nil
}

// Write replaces the index's bytes in one TPM command, which the TPM
// applies whole or not at all.
func (s *NVSpace) Write(b []byte) error {
	if len(b) != int(s.Size) {
		return fmt.Errorf("nv write of %d bytes into a %d-byte index", len(b), s.Size)
	}
	rsp, err := s.public()
	if err != nil {
		return err
	}
	_, err = tpm2.NVWrite{
		AuthHandle: s.ownerAuth(),
		NVIndex:    tpm2.NamedHandle{Handle: s.Index, Name: rsp.NVName},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: b},
	}.Execute(s.TPM)
	if err != nil {
		return fmt.Errorf("writing nv index %#x: %w", uint32(s.Index), err)
	}
	return nil
}
