package cli

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/spf13/cobra"
)

// slotOptions choose and configure the slot backend; shared by provision
// and run.
type slotOptions struct {
	Backend    string
	EnvConfig  string
	DefaultEnv string
	Partitions []string // NAME=SLOT_A_DEST,SLOT_B_DEST
	Reboot     string
}

func (o *slotOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Backend, "slot", "dir", "slot backend: dir (folders in the state dir; a reboot restarts the agent) or uboot (U-Boot environment and partitions)")
	f.StringVar(&o.EnvConfig, "uboot-env-config", "/etc/fw_env.config", "uboot: fw_env.config naming where the U-Boot environment lives")
	f.StringVar(&o.DefaultEnv, "uboot-default-env", "/etc/u-boot-initial-env", "uboot: default environment, used only when provisioning a never-saved environment")
	f.StringArrayVar(&o.Partitions, "uboot-partition", nil, "uboot: NAME=A_DEST,B_DEST: where payload NAME goes in slot A and slot B (block devices or files); repeatable")
	f.StringVar(&o.Reboot, "reboot-command", "", "uboot: command that reboots the phone into a trial slot (for example \"systemctl reboot\")")
}

func (o *slotOptions) Validate() error {
	switch o.Backend {
	case "dir":
		return nil
	case "uboot":
	default:
		return fmt.Errorf("--slot %q: want dir or uboot", o.Backend)
	}
	if _, err := o.ubootConfig(); err != nil {
		return err
	}
	return nil
}

func (o *slotOptions) ubootConfig() (slot.UBootConfig, error) {
	cfg := slot.UBootConfig{EnvConfig: o.EnvConfig, DefaultEnv: o.DefaultEnv, Partitions: map[string][2]string{}}
	if len(o.Partitions) == 0 {
		return cfg, fmt.Errorf("--slot uboot needs at least one --uboot-partition NAME=A_DEST,B_DEST")
	}
	for _, p := range o.Partitions {
		name, dests, ok := strings.Cut(p, "=")
		a, b, ok2 := strings.Cut(dests, ",")
		if !ok || !ok2 || name == "" || !filepath.IsAbs(a) || !filepath.IsAbs(b) || a == b {
			return cfg, fmt.Errorf("--uboot-partition %q: want NAME=/slot/a/dest,/slot/b/dest (two different absolute paths)", p)
		}
		if _, dup := cfg.Partitions[name]; dup {
			return cfg, fmt.Errorf("--uboot-partition: %s named twice", name)
		}
		cfg.Partitions[name] = [2]string{a, b}
	}
	return cfg, nil
}

func (o *slotOptions) open(ctx context.Context, stateDir string) (slot.Backend, error) {
	if o.Backend == "dir" {
		return slot.OpenDir(filepath.Join(stateDir, "slots"))
	}
	cfg, err := o.ubootConfig()
	if err != nil {
		return nil, err
	}
	return slot.OpenUBoot(ctx, cfg)
}

func (o *slotOptions) provision(ctx context.Context, stateDir string, factory slot.Info) error {
	if o.Backend == "dir" {
		_, err := slot.ProvisionDir(filepath.Join(stateDir, "slots"), factory)
		return err
	}
	cfg, err := o.ubootConfig()
	if err != nil {
		return err
	}
	_, err = slot.ProvisionUBoot(ctx, cfg, factory)
	return err
}

// reboot starts the trial of a slot just set: the dir backend by running
// the boot sequence again in this process (reports true), the uboot backend
// by rebooting the phone with --reboot-command.
func (o *slotOptions) reboot(ctx context.Context) (inProcess bool, err error) {
	if o.Backend == "dir" {
		return true, nil
	}
	if o.Reboot == "" {
		return false, fmt.Errorf("the new slot boots at the next reboot (no --reboot-command given)")
	}
	args := strings.Fields(o.Reboot)
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("reboot command %q: %w: %s", o.Reboot, err, strings.TrimSpace(string(out)))
	}
	return false, nil
}
