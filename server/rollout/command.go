package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// ErrUnknownCommand is returned by Command for a name other than check,
// attest and reboot.
var ErrUnknownCommand = errors.New("unknown command")

// Commands an operator sends to one device; the desired version has its
// own, retained, command (SetDesired).
var operatorCommands = map[string]bool{wire.CmdCheck: true, wire.CmdAttest: true, wire.CmdReboot: true, wire.CmdConfig: true}

// IsOperatorCommand reports whether name is a command Command sends.
func IsOperatorCommand(name string) bool { return operatorCommands[name] }

// Command sends device the one-off command name (check, attest, reboot or config)
// on its cmd topic, at QoS 1 and not retained: it reaches a device that is
// connected now (the agent's session is clean, so an offline device never
// gets it), and a later subscriber never sees it replayed. An unknown device is
// store.ErrNotFound; an unknown name ErrUnknownCommand. It returns the
// command as sent.
func (s *Service) Command(ctx context.Context, device, name string) (wire.Command, error) {
	if !IsOperatorCommand(name) {
		return wire.Command{}, fmt.Errorf("%w %q (want check, attest, reboot or config)", ErrUnknownCommand, name)
	}
	d, err := s.store.Device(ctx, device)
	if err != nil {
		return wire.Command{}, fmt.Errorf("looking up device %s: %w", device, err)
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id) // never fails
	cmd := wire.Command{Schema: wire.SchemaVersion, ID: name + "-" + hex.EncodeToString(id), Name: name, Time: s.now().UTC()}
	b, err := wire.EncodeCommand(cmd)
	if err != nil {
		return wire.Command{}, err
	}
	if err := s.pub.Publish(wire.Topic(d.Tenant, d.ID, wire.KindCmd), b, false, 1); err != nil {
		return wire.Command{}, fmt.Errorf("sending %s to %s: %w", name, device, err)
	}
	return cmd, nil
}
