package systest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/server/api"
)

// OnceWith runs one agent cycle against s with extra environment variables
// and flags.
func (p *Phone) OnceWith(t testing.TB, s *Server, model, hw string, env []string, args ...string) Result {
	t.Helper()
	full := append([]string{"--once", "--server", s.URL(), "--server-ca", s.CA, "--broker", s.Broker(),
		"--state-dir", p.StateDir, "--model", model, "--hardware", hw, "--log-level", "debug"}, args...)
	return Run(t, append([]string{"DIALTONE_CONFIG=/dev/null"}, env...), p.bins.Agent, full...)
}

// Journal reads the agent's update journal (zero when there is none).
func (p *Phone) Journal(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.StateDir, "journal.json"))
	if os.IsNotExist(err) {
		return map[string]any{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("journal: %v", err)
	}
	return m
}

// Events returns the events the server stored for device, oldest first,
// through `dialtone devices events -o json`.
func Events(t testing.TB, s *Server, device string) []api.Event {
	t.Helper()
	r := MustRun(t, s.ClientEnv(), s.Bins.Server, "devices", "events", device, "--limit", "0", "-o", "json")
	var evs []api.Event
	if err := json.Unmarshal([]byte(r.Stdout), &evs); err != nil {
		t.Fatalf("devices events output: %v\n%s", err, r.Stdout)
	}
	return evs
}

// HasEvent reports whether evs holds an event of type typ whose version is
// version ("" matches any) and whose message contains msg.
func HasEvent(evs []api.Event, typ, version, msg string) bool {
	for _, e := range evs {
		if e.Type == typ && (version == "" || e.Version == version) && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}
