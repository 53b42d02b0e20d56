package e2e

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

// bins are the binaries under test, built once per test binary run.
var bins systest.Binaries

func TestMain(m *testing.M) {
	code := m.Run()
	systest.Cleanup()
	os.Exit(code)
}

func buildBinaries(t *testing.T) { bins = systest.Build(t) }

type deviceRow struct {
	ID          string `json:"id"`
	Model       string `json:"model"`
	Version     string `json:"version"`
	Slot        string `json:"slot"`
	UpdateState string `json:"update_state"`
}

// devices runs `dialtone devices list -o json`.
func devices(t *testing.T, s *systest.Server) map[string]deviceRow {
	t.Helper()
	r := systest.MustRun(t, s.ClientEnv(), bins.Server, "devices", "list", "-o", "json")
	var rows []deviceRow
	if err := json.Unmarshal([]byte(r.Stdout), &rows); err != nil {
		t.Fatalf("devices list output: %v\n%s", err, r.Stdout)
	}
	out := map[string]deviceRow{}
	for _, d := range rows {
		out[d.ID] = d
	}
	return out
}
