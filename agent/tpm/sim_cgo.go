//go:build cgo

package tpm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"
)

// simAvailable says whether this build has the in-process simulator.
const simAvailable = true

// ErrNoSim means this agent was built without cgo (as phones' agents are),
// which the C TPM simulator needs; cgo builds never return it. It wraps
// ErrSpec.
var ErrNoSim = fmt.Errorf("%w: the TPM simulator needs a cgo build; use swtpm:HOST:PORT", ErrSpec)

// The simulator is a C library with one global TPM per process, so every
// Open("sim") reaches the same one, started on first use and kept until
// the process exits: like swtpm, its keys and NV indexes outlive a
// connection (not the process — every run starts with new seeds). Commands
// from several handles are serialised, one at a time, as the C code needs.
var sim struct {
	mu  sync.Mutex
	tpm *simulator.Simulator
}

// openSim returns a handle on the process's simulator.
func openSim(ctx context.Context) (transport.TPMCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if sim.tpm == nil {
		s, err := simulator.Get()
		if err != nil {
			return nil, fmt.Errorf("starting the TPM simulator: %w", err)
		}
		sim.tpm = s
	}
	return &simHandle{}, nil
}

// errSimClosed means a command came on a simulator handle after its Close.
var errSimClosed = errors.New("tpm simulator handle closed")

// simHandle is one Open's view of the simulator. Closing it leaves the
// simulator running, as closing a swtpm connection leaves swtpm running.
type simHandle struct {
	closed bool
}

func (h *simHandle) Send(cmd []byte) ([]byte, error) {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if h.closed {
		return nil, errSimClosed
	}
	return tpmutil.RunCommandRaw(sim.tpm, cmd)
}

func (h *simHandle) Close() error {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	h.closed = true
	return nil
}
