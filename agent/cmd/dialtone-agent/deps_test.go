package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyBudget keeps the phone's binary free of what it must never
// carry: server code (agent/ and server/ never import each other), cloud
// SDKs, the SQL store, the broker, and cgo-only key backends.
func TestDependencyBudget(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/dialtone-dev/dialtone/server/",
		"github.com/dialtone-dev/dialtone/keys",
		"github.com/aws/", "cloud.google.com/", "github.com/Azure/", "github.com/hashicorp/vault",
		"gocloud.dev/", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/mochi-mqtt/",
		"github.com/miekg/pkcs11",
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("dialtone-agent depends on %s", d)
			}
		}
	}
	if len(deps) > 400 {
		t.Errorf("dialtone-agent has %d packages in its build, budget 400", len(deps))
	}
}
