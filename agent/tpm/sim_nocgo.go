//go:build !cgo

package tpm

import (
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

// simAvailable says whether this build has the in-process simulator.
const simAvailable = false

// ErrNoSim means this agent was built without cgo (as phones' agents are),
// which the C TPM simulator needs. It wraps ErrSpec.
var ErrNoSim = fmt.Errorf("%w: the TPM simulator needs a cgo build; use swtpm:HOST:PORT", ErrSpec)

func openSim(context.Context) (transport.TPMCloser, error) { return nil, ErrNoSim }
