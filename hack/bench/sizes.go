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
		limitMiB   float64 // 0: reported only
	}{
		{"dialtone-agent linux/arm64", cfg.agentArm64, elf.EM_AARCH64, 20}, // issue 4: < 20 MiB stripped
		{"dialtone-agent linux/arm (GOARM=7)", cfg.agentArm, elf.EM_ARM, 0},
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
			r.failNote = "not stripped"
		}
		if a.limitMiB > 0 {
			r.ref, r.refName, r.ratio, r.max = a.limitMiB, "limit", r.value/a.limitMiB, 1
			r.target = fmt.Sprintf("< %.0f MiB", a.limitMiB)
		}
		logf("   %s: %d bytes, stripped: %v", a.path, fi.Size(), stripped)
		rows = append(rows, r)
	}
	return rows, nil
}
