// Package tpm owns the agent's access to the phone's TPM 2.0: which
// transport reaches it (the kernel's resource manager on a phone, a swtpm
// socket in tests and the demo) and the NV storage the agent keeps there.
package tpm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// ErrSpec means a --tpm value names no known transport.
var ErrSpec = errors.New("bad tpm spec")

// Open reaches the TPM a spec names:
//
//	device:/dev/tpmrm0     the kernel's TPM resource manager (phones)
//	swtpm:127.0.0.1:2321   swtpm's command socket (swtpm socket --server type=tcp,...)
//	sim                    the in-process simulator of go-tpm-tools (cgo builds only)
//
// swtpm must have been started with --flags startup-clear (or be sent
// TPM2_Startup by its control channel); the agent does not power it on.
func Open(ctx context.Context, spec string) (transport.TPMCloser, error) {
	if spec == "sim" {
		return openSim(ctx)
	}
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return nil, fmt.Errorf("%w %q: want device:PATH or swtpm:HOST:PORT", ErrSpec, spec)
	}
	switch kind {
	case "device":
		t, err := linuxtpm.Open(arg)
		if err != nil {
			return nil, fmt.Errorf("opening tpm %s: %w", arg, err)
		}
		return t, nil
	case "swtpm":
		if _, _, err := net.SplitHostPort(arg); err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrSpec, spec, err)
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", arg)
		if err != nil {
			return nil, fmt.Errorf("reaching swtpm at %s: %w", arg, err)
		}
		// swtpm's --server socket carries raw TPM commands, one response
		// per command; a stuck swtpm must not hang the agent.
		return transport.FromReadWriteCloser(&deadlineConn{Conn: c}), nil
	default:
		return nil, fmt.Errorf("%w %q: unknown transport %q (want device or swtpm)", ErrSpec, spec, kind)
	}
}

// deadlineConn bounds every command's round trip.
type deadlineConn struct{ net.Conn }

const commandTimeout = 30 * time.Second

func (c *deadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
