package cli_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/rollout"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

const fleetToken = "cli-fleet-token-0123456789"

// tsRepo is a TUF repository whose timestamp is at version 10; the fleet
// views read nothing else of it.
type tsRepo struct{}

func (tsRepo) Handler() http.Handler                      { return http.NotFoundHandler() }
func (tsRepo) Delegation(string) (string, []byte, error)  { return "", nil, errors.New("no repository") }
func (tsRepo) Revocations() ([]tufrepo.Revocation, error) { return nil, nil }
func (tsRepo) Status() []tufrepo.RoleStatus {
	return []tufrepo.RoleStatus{{Role: "root", Version: 1}, {Role: "timestamp", Version: 10}}
}
func (tsRepo) Publish(context.Context, tufrepo.PublishRequest) (*tufrepo.PublishResult, error) {
	return nil, errors.New("no repository")
}
func (tsRepo) Push(context.Context, tufrepo.PushRequest) (*tufrepo.PushResult, error) {
	return nil, errors.New("no repository")
}

// commandLog is the broker as rollout sees it: it keeps the commands.
type commandLog struct {
	mu   sync.Mutex
	cmds []string // topic name
}

func (c *commandLog) Publish(topic string, payload []byte, retain bool, qos byte) error {
	cmd, err := wire.DecodeCommand(payload)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cmds = append(c.cmds, fmt.Sprintf("%s %s retain=%v qos=%d", topic, cmd.Name, retain, qos))
	return nil
}

type fleetEnv struct {
	st   *store.SQLite
	cmds *commandLog
	now  time.Time
}

// fleetServer serves the real API over a real SQLite store holding acme's
// p1..p4 and beta's b1, b2, and points the CLI at it through the
// environment. p4 was seen now, the others two hours ago; p2 and b2 trust
// old TUF timestamps; p1 and p2 are trusted, b2 untrusted.
func fleetServer(t *testing.T) *fleetEnv {
	t.Helper()
	ctx := t.Context()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	env := &fleetEnv{st: st, cmds: &commandLog{}, now: time.Now().UTC().Truncate(time.Second)}
	for _, d := range []struct {
		tenant, id, model, version string
		online                     bool
		ts                         int64
		ago                        time.Duration
		attestation                string
	}{
		{"acme", "p1", "dt100", "1.0.0", true, 10, 2 * time.Hour, "trusted"},
		{"acme", "p2", "dt100", "1.0.0", false, 5, 2 * time.Hour, "trusted"},
		{"acme", "p3", "dt200", "1.1.0", true, 9, 2 * time.Hour, ""},
		{"acme", "p4", "dt100", "1.1.0", true, 10, 0, ""},
		{"beta", "b1", "dt100", "1.1.0", false, 10, 2 * time.Hour, ""},
		{"beta", "b2", "dt200", "1.0.0", true, 8, 2 * time.Hour, "untrusted"},
	} {
		seen := env.now.Add(-d.ago)
		s := wire.State{Schema: wire.SchemaVersion, Tenant: d.tenant, Device: d.id, Model: d.model, Hardware: "r1",
			Version: d.version, Slot: "a", UpdateState: wire.UpdateIdle, Online: d.online,
			TUF: wire.TUFVersions{Root: 1, Timestamp: d.ts, Snapshot: d.ts, Targets: 1}, Time: seen}
		if err := st.UpsertState(ctx, d.tenant, s, seen); err != nil {
			t.Fatal(err)
		}
		if d.attestation != "" {
			if err := st.SetAttestation(ctx, d.id, d.attestation, seen); err != nil {
				t.Fatal(err)
			}
		}
	}
	h, err := api.New(api.Options{Repo: tsRepo{}, Devices: st, Tokens: st, Rollouts: rollout.New(st, env.cmds, nil), AdminToken: fleetToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIALTONE_CONFIG", conf)
	t.Setenv("DIALTONE_SERVER", srv.URL)
	t.Setenv("DIALTONE_TOKEN", fleetToken)
	return env
}

func (e *fleetEnv) addEvents(t *testing.T, device string, from, to int) {
	t.Helper()
	var evs []wire.Event
	for i := from; i < to; i++ {
		evs = append(evs, wire.Event{Schema: wire.SchemaVersion, ID: fmt.Sprintf("ev%03d", i), Device: device, Seq: uint64(i),
			Time: e.now, Type: wire.EventCheck, Message: fmt.Sprintf("check %d", i)})
	}
	// In one transaction: a reader sees all of them or none.
	if _, err := e.st.AddEvents(t.Context(), "acme", evs, e.now); err != nil {
		t.Fatal(err)
	}
}

func listIDs(t *testing.T, stdout string) []string {
	t.Helper()
	var ds []api.Device
	if err := json.Unmarshal([]byte(stdout), &ds); err != nil {
		t.Fatalf("devices list -o json: %v\n%s", err, stdout)
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func TestDevicesList(t *testing.T) {
	env := fleetServer(t)
	since := env.now.Add(-time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		args []string
		want []string
		more bool
	}{
		{nil, []string{"p1", "p2", "p3", "p4", "b1", "b2"}, false},
		{[]string{"--tenant", "acme", "--model", "dt100"}, []string{"p1", "p2", "p4"}, false},
		{[]string{"--version", "1.1.0", "--online"}, []string{"p3", "p4"}, false},
		{[]string{"--offline"}, []string{"p2", "b1"}, false},
		{[]string{"--attestation", "untrusted"}, []string{"b2"}, false},
		{[]string{"--seen-since", "1h"}, []string{"p4"}, false},
		{[]string{"--seen-since", since}, []string{"p4"}, false},
		{[]string{"--seen-before", "90m", "--tenant", "beta"}, []string{"b1", "b2"}, false},
		{[]string{"--seen-before", "1d"}, []string{}, false},
		{[]string{"--sort", "last_seen", "--desc", "--limit", "1"}, []string{"p4"}, true},
		{[]string{"--sort", "model"}, []string{"p1", "p2", "p4", "b1", "p3", "b2"}, false},
		{[]string{"--tuf-behind"}, []string{"p2", "b2"}, false},
		{[]string{"--limit", "4"}, []string{"p1", "p2", "p3", "p4"}, true},
		{[]string{"--limit", "2", "--all"}, []string{"p1", "p2", "p3", "p4", "b1", "b2"}, false},
		{[]string{"--limit", "1", "--all", "--sort", "version", "--desc"}, []string{"b1", "p4", "p3", "b2", "p2", "p1"}, false},
	} {
		code, stdout, stderr := run(t, append([]string{"devices", "list", "-o", "json"}, tc.args...)...)
		if code != cli.ExitOK {
			t.Errorf("devices list %v: exit %d: %s", tc.args, code, stderr)
			continue
		}
		if got := listIDs(t, stdout); !slices.Equal(got, tc.want) {
			t.Errorf("devices list %v = %v, want %v", tc.args, got, tc.want)
		}
		if more := strings.Contains(stderr, "more devices"); more != tc.more {
			t.Errorf("devices list %v: stderr %q, want a next page %v", tc.args, stderr, tc.more)
		}
	}

	// The cursor on stderr continues the listing.
	_, _, stderr := run(t, "devices", "list", "--limit", "4", "-o", "json")
	_, cursor, _ := strings.Cut(stderr, "--cursor ")
	cursor, _, _ = strings.Cut(cursor, " ")
	code, stdout, stderr := run(t, "devices", "list", "--limit", "4", "-o", "json", "--cursor", cursor)
	if got := listIDs(t, stdout); code != cli.ExitOK || !slices.Equal(got, []string{"b1", "b2"}) || stderr != "" {
		t.Errorf("second page: exit %d, %v, %q", code, got, stderr)
	}

	// The table has a row per device with its attestation.
	code, stdout, stderr = run(t, "devices", "list", "--tenant", "beta")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != cli.ExitOK || len(lines) != 3 || !strings.Contains(lines[0], "ATTESTATION") || !strings.HasPrefix(lines[2], "b2") ||
		!strings.HasSuffix(lines[2], "untrusted") || !strings.HasSuffix(lines[1], "-") {
		t.Errorf("table: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestDevicesListUsageErrors(t *testing.T) {
	fleetServer(t)
	for _, tc := range []struct {
		args  []string
		wants string
	}{
		{[]string{"--online", "--offline"}, "not both"},
		{[]string{"--sort", "name"}, "--sort"},
		{[]string{"--limit", "0"}, "--limit"},
		{[]string{"--limit", "10001"}, "--limit"},
		{[]string{"--seen-since", "yesterday"}, "--seen-since"},
		{[]string{"--seen-before", "-1h"}, "negative"},
		{[]string{"--seen-since", "1h", "--seen-before", "2h"}, "before"},
		{[]string{"--tenant", "a/b"}, "--tenant"},
		{[]string{"-o", "yaml"}, "output format"},
	} {
		code, _, stderr := run(t, append([]string{"devices", "list"}, tc.args...)...)
		if code != cli.ExitUsage || !strings.Contains(stderr, tc.wants) {
			t.Errorf("devices list %v: exit %d, %q; want %d mentioning %q", tc.args, code, stderr, cli.ExitUsage, tc.wants)
		}
	}
	// The server's refusal is an error too.
	t.Setenv("DIALTONE_TOKEN", "wrong-token-0123456789")
	if code, _, stderr := run(t, "devices", "list"); code != cli.ExitError || !strings.Contains(stderr, "401") {
		t.Errorf("devices list with a bad token: exit %d, %q", code, stderr)
	}
}

func TestDevicesShow(t *testing.T) {
	env := fleetServer(t)
	env.addEvents(t, "p2", 0, 25)
	if _, err := env.st.SetDesired(t.Context(), "p2", "1.1.0", env.now); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, "devices", "show", "p2")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"TENANT       acme", "1.0.0 (slot a)", "DESIRED      1.1.0 (set ", "ATTESTATION  trusted",
		"timestamp 5", "behind the repository", "LAST 20 EVENTS", "check 24"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("devices show lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "check 4\n") {
		t.Errorf("devices show has more than the last 20 events:\n%s", stdout)
	}

	code, stdout, _ = run(t, "devices", "show", "p1", "-o", "json")
	var d api.DeviceDetail
	if err := json.Unmarshal([]byte(stdout), &d); code != cli.ExitOK || err != nil || d.ID != "p1" || d.TUFBehind || d.Events == nil {
		t.Errorf("devices show -o json: exit %d, %v, %+v", code, err, d)
	}

	for _, tc := range []struct {
		args  []string
		code  int
		wants string
	}{
		{[]string{"nope"}, cli.ExitError, "404"},
		{[]string{"a/b"}, cli.ExitUsage, "bad device id"},
		{[]string{}, cli.ExitError, "accepts 1 arg"},
	} {
		if code, _, stderr := run(t, append([]string{"devices", "show"}, tc.args...)...); code != tc.code || !strings.Contains(stderr, tc.wants) {
			t.Errorf("devices show %v: exit %d, %q; want %d mentioning %q", tc.args, code, stderr, tc.code, tc.wants)
		}
	}
}

// syncBuffer is a bytes.Buffer for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until out holds want.
func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDevicesEventsFollow(t *testing.T) {
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			env := fleetServer(t)
			env.addEvents(t, "p1", 0, 3)
			ctx, cancel := context.WithCancel(t.Context())
			var out, errb syncBuffer
			done := make(chan int)
			go func() {
				done <- cli.Execute(ctx, []string{"devices", "events", "p1", "--follow", "--interval", "10ms", "--limit", "5", "-o", format}, &out, &errb)
			}()
			shown := func(i int) string {
				if format == "json" {
					return fmt.Sprintf(`"check %d"`, i)
				}
				return fmt.Sprintf("check %d\n", i)
			}
			waitFor(t, &out, shown(2))
			// More than --limit at once: the first of them are never
			// shown, the rest once each.
			env.addEvents(t, "p1", 3, 10)
			waitFor(t, &out, shown(9))
			env.addEvents(t, "p1", 10, 11)
			waitFor(t, &out, shown(10))
			time.Sleep(50 * time.Millisecond) // a few more polls, which print nothing
			cancel()
			if code := <-done; code != cli.ExitOK {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var got []string
			for line := range strings.Lines(out.String()) {
				if format == "json" {
					var e api.Event
					if err := json.Unmarshal([]byte(line), &e); err != nil {
						t.Fatalf("line %q: %v", line, err)
					}
					got = append(got, e.ID)
				} else if f := strings.Fields(line); f[0] != "SEQ" {
					got = append(got, "ev"+fmt.Sprintf("%03s", f[0]))
				}
			}
			want := []string{"ev000", "ev001", "ev002", "ev005", "ev006", "ev007", "ev008", "ev009", "ev010"}
			if !slices.Equal(got, want) {
				t.Errorf("printed %v, want %v\n%s", got, want, out.String())
			}
			if n := strings.Count(errb.String(), "were not shown"); n != 1 {
				t.Errorf("%d warnings of events not shown, want 1: %q", n, errb.String())
			}
		})
	}
	fleetServer(t)
	if code, _, stderr := run(t, "devices", "events", "nope", "--follow"); code != cli.ExitError || !strings.Contains(stderr, "404") {
		t.Errorf("following an unknown device: exit %d, %q", code, stderr)
	}
	if code, _, stderr := run(t, "devices", "events", "p1", "--follow", "--interval", "1ms"); code != cli.ExitUsage || !strings.Contains(stderr, "--interval") {
		t.Errorf("--interval 1ms: exit %d, %q", code, stderr)
	}
}

func TestDevicesCmd(t *testing.T) {
	env := fleetServer(t)
	for _, tc := range []struct {
		args  []string
		code  int
		wants string
	}{
		{[]string{"p1", "check"}, cli.ExitOK, "check"},
		{[]string{"b2", "reboot", "-o", "json"}, cli.ExitOK, `"name": "reboot"`},
		{[]string{"p3", "attest"}, cli.ExitOK, "attest"},
		{[]string{"nope", "check"}, cli.ExitError, "404"},
		{[]string{"p1", "desired"}, cli.ExitUsage, "devices desire"},
		{[]string{"p1", "format"}, cli.ExitUsage, "want check, attest, reboot or config"},
		{[]string{"p1"}, cli.ExitError, "accepts 2 arg"},
	} {
		code, stdout, stderr := run(t, append([]string{"devices", "cmd"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.wants) {
			t.Errorf("devices cmd %v: exit %d, %q %q; want %d mentioning %q", tc.args, code, stdout, stderr, tc.code, tc.wants)
		}
	}
	want := []string{
		"dialtone/v1/acme/p1/cmd check retain=false qos=1",
		"dialtone/v1/beta/b2/cmd reboot retain=false qos=1",
		"dialtone/v1/acme/p3/cmd attest retain=false qos=1",
	}
	env.cmds.mu.Lock()
	defer env.cmds.mu.Unlock()
	if !slices.Equal(env.cmds.cmds, want) {
		t.Errorf("published %v, want %v", env.cmds.cmds, want)
	}
}

func TestFleetSummary(t *testing.T) {
	fleetServer(t)
	code, stdout, stderr := run(t, "fleet", "summary")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 9 || !strings.HasPrefix(lines[0], "TENANT") || !strings.Contains(lines[1], "acme") ||
		lines[8] != "6 devices: 4 online, 2 offline, 1 untrusted, 3 not attested, 2 behind on TUF (repository timestamp v10)" {
		t.Errorf("table:\n%s", stdout)
	}

	code, stdout, _ = run(t, "fleet", "summary", "-o", "json", "--tenant", "beta")
	var s api.FleetSummary
	if err := json.Unmarshal([]byte(stdout), &s); code != cli.ExitOK || err != nil || len(s.Rows) != 2 || s.Totals.TUFBehind != 1 || s.TUFTimestamp != 10 {
		t.Errorf("json: exit %d, %v, %+v", code, err, s)
	}

	code, stdout, _ = run(t, "fleet", "summary", "-o", "csv")
	recs, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	if code != cli.ExitOK || err != nil || len(recs) != 7 ||
		!slices.Equal(recs[0], []string{"tenant", "model", "version", "update_state", "attestation", "online", "devices", "tuf_behind"}) ||
		!slices.Equal(recs[1], []string{"acme", "dt100", "1.0.0", "idle", "trusted", "false", "1", "1"}) {
		t.Errorf("csv: exit %d, %v:\n%s", code, err, stdout)
	}

	for _, tc := range []struct {
		args  []string
		wants string
	}{
		{[]string{"-o", "yaml"}, "want table, json or csv"},
		{[]string{"--tenant", "a b"}, "--tenant"},
	} {
		if code, _, stderr := run(t, append([]string{"fleet", "summary"}, tc.args...)...); code != cli.ExitUsage || !strings.Contains(stderr, tc.wants) {
			t.Errorf("fleet summary %v: exit %d, %q", tc.args, code, stderr)
		}
	}
}

func TestFleetWatch(t *testing.T) {
	fleetServer(t)
	code, stdout, stderr := run(t, "fleet", "watch", "--iterations", "3", "--interval", "10ms", "--clear", "always")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := strings.Count(stdout, "\x1b[H\x1b[2J"); n != 3 {
		t.Errorf("%d screens cleared, want 3", n)
	}
	if n := strings.Count(stdout, "DEVICES 6   ONLINE 4   OFFLINE 2   UNTRUSTED 1   NOT ATTESTED 3   TUF BEHIND 2"); n != 3 {
		t.Errorf("%d frames with the counts, want 3:\n%s", n, stdout)
	}
	// Not a terminal: no escape codes.
	code, stdout, _ = run(t, "fleet", "watch", "--iterations", "1", "--tenant", "beta")
	if code != cli.ExitOK || strings.Contains(stdout, "\x1b") || !strings.Contains(stdout, "DEVICES 2 ") {
		t.Errorf("watch to a buffer: exit %d:\n%q", code, stdout)
	}
	for _, tc := range []struct {
		args  []string
		wants string
	}{
		{[]string{"--interval", "0s"}, "--interval"},
		{[]string{"--iterations", "-1"}, "--iterations"},
		{[]string{"--clear", "sometimes"}, "--clear"},
	} {
		if code, _, stderr := run(t, append([]string{"fleet", "watch"}, tc.args...)...); code != cli.ExitUsage || !strings.Contains(stderr, tc.wants) {
			t.Errorf("fleet watch %v: exit %d, %q", tc.args, code, stderr)
		}
	}
	// A server that cannot be reached fails the first refresh.
	t.Setenv("DIALTONE_SERVER", "http://127.0.0.1:1")
	if code, _, stderr := run(t, "fleet", "watch", "--iterations", "1"); code != cli.ExitError || !strings.Contains(stderr, "contacting server") {
		t.Errorf("watch without a server: exit %d, %q", code, stderr)
	}
}

func TestDeviceCompletion(t *testing.T) {
	fleetServer(t)
	code, stdout, stderr := run(t, "__complete", "devices", "show", "p")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, id := range []string{"p1\tacme dt100 1.0.0", "p4\t"} {
		if !strings.Contains(stdout, id) {
			t.Errorf("completion lacks %q:\n%s", id, stdout)
		}
	}
	if strings.Contains(stdout, "b1") {
		t.Errorf("completion of p offers b1:\n%s", stdout)
	}
	if _, stdout, _ := run(t, "__complete", "devices", "cmd", "p1", ""); !strings.Contains(stdout, "reboot") {
		t.Errorf("completion of the command:\n%s", stdout)
	}
}
