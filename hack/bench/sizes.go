package main

import (
	"debug/elf"
	"fmt"
	"os"
)

// agentSizes reports the size of the cross-built agents, which `make
// build` links with -s -w. A binary that still has a symbol table is
// reported as such, since its size would mean little.
func agentSizes(cfg config) ([]row, error) {
	logf("== sizes: dialtone-agent as `make build` links it (-trimpath -ldflags '-s -w')")
	var rows []row
	for _, a := range []struct {
		name, path string
		machine    elf.Machine
	}{
		{"dialtone-agent linux/arm64", cfg.agentArm64, elf.EM_AARCH64},
		{"dialtone-agent linux/arm (GOARM=7)", cfg.agentArm, elf.EM_ARM},
	} {
		fi, err := os.Stat(a.path)
		if err != nil {
			return rows, err
		}
		f, err := elf.Open(a.path)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", a.path, err)
		}
		stripped := f.Section(".symtab") == nil
		machine := f.Machine
		f.Close()
		if machine != a.machine {
			return rows, fmt.Errorf("%s is for %s, want %s", a.path, machine, a.machine)
		}
		r := row{name: a.name, value: float64(fi.Size()) / (1 << 20), ref: -1, unit: "MiB", ratio: -1}
		if !stripped {
			r.name += " (NOT stripped)"
		}
		logf("   %s: %d bytes, stripped: %v", a.path, fi.Size(), stripped)
		rows = append(rows, r)
	}
	return rows, nil
}
