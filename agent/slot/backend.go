package slot

import "context"

// Backend is a slot store: the dir backend for development and tests, the
// uboot backend on phones. The update flow relies on these guarantees:
//
//   - Nothing written through an Installer boots before SetTrial names its
//     slot, and SetTrial refuses a slot whose Finish did not complete.
//   - Every state change is atomic with respect to a crash or power cut:
//     after a restart, Status shows either the state before or the state
//     after the call, never a mix.
//   - Boot is called once per start of the agent. It reports what the boot
//     counter decided: the dir backend counts the attempt itself, the uboot
//     backend reads what U-Boot counted. Once the attempts pass the boot
//     limit the committed slot is active again. A trial slot the
//     bootloader has not started yet is ErrTrialNotBooted (uboot).
type Backend interface {
	Status() (Status, error)
	BeginInstall(ctx context.Context) (Installer, error)
	SetTrial(ctx context.Context, s string) error
	Boot(ctx context.Context) (Status, error)
	Commit(ctx context.Context) error
	Rollback(ctx context.Context, reason string) error
}

var _ Backend = (*Dir)(nil)
