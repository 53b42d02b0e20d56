package tpm

import (
	"context"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"
)

// Shared is one TPM connection shared by the agent's parts: swtpm serves
// one connection at a time, and a phone's resource manager is happier with
// one too. Send is safe for concurrent use, one command at a time; what
// loads transient objects (the attestation keys, the device key) takes the
// TPM for its whole sequence with Exclusive, so that two sequences never
// fill swtpm's few object slots together. The NV commands of the floor
// need no more than Send.
type Shared struct {
	t   transport.TPMCloser
	cmd sync.Mutex
	op  sync.Mutex
}

// NewShared shares t; Close closes it.
func NewShared(t transport.TPMCloser) *Shared { return &Shared{t: t} }

// Send implements transport.TPM.
func (s *Shared) Send(input []byte) ([]byte, error) {
	s.cmd.Lock()
	defer s.cmd.Unlock()
	return s.t.Send(input)
}

// Close closes the TPM.
func (s *Shared) Close() error { return s.t.Close() }

// Exclusive runs fn with the TPM to itself (among Exclusive users).
func (s *Shared) Exclusive(ctx context.Context, fn func(transport.TPM) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.op.Lock()
	defer s.op.Unlock()
	return fn(s)
}

// Opener returns a function that hands out the shared TPM exclusively
// until the returned closer is closed: for users written against an
// opener (the device key's crypto.Signer).
func (s *Shared) Opener() func(ctx context.Context) (transport.TPMCloser, error) {
	return func(ctx context.Context) (transport.TPMCloser, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.op.Lock()
		return &exclusive{s: s}, nil
	}
}

type exclusive struct {
	s    *Shared
	once sync.Once
}

func (e *exclusive) Send(in []byte) ([]byte, error) { return e.s.Send(in) }
func (e *exclusive) Close() error {
	e.once.Do(e.s.op.Unlock)
	return nil
}
