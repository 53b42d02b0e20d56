package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoAgentCode: the server never imports the phone's packages.
func TestNoAgentCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, "github.com/dialtone-dev/dialtone/agent/") {
			t.Errorf("dialtone depends on %s", d)
		}
	}
}
