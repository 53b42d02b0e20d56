package e2e

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// TestOnlineFollowsTheConnection: a phone running as a daemon shows online;
// SIGKILLed, it shows offline — the broker publishes its last will, which
// is older than its last state, and the server must still apply it —;
// started again, online. On the embedded broker (mochi publishes wills
// past its publish hook) and on Mosquitto (the will reaches the server
// through its subscription), the phone authenticated by its certificate.
func TestOnlineFollowsTheConnection(t *testing.T) {
	buildBinaries(t)
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, device string) (srv *devServer, broker string, agentArgs []string)
	}{
		{"embedded-broker", func(t *testing.T, _ string) (*devServer, string, []string) {
			s := startDevServer(t, bins.Server)
			return s, "mqtt://" + s.mqtt, nil
		}},
		{"mosquitto", func(t *testing.T, device string) (*devServer, string, []string) {
			m := startMosquittoSetup(t, "")
			cert, key, _ := m.m.PKI.Issue(t, device, false)
			return m.s, m.Broker(), []string{"--broker-ca", m.m.PKI.CAFile, "--broker-cert", cert, "--broker-key", key}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "phone-online"
			s, broker, extra := tc.start(t, id)
			stateDir := filepath.Join(t.TempDir(), id)
			systest.MustRun(t, nil, bins.Agent, "provision", "--root", filepath.Join(s.dataDir, "tuf", "metadata", "1.root.json"),
				"--state-dir", stateDir, "--model", model, "--factory-version", "1.0.0", "--device-id", id)
			args := append([]string{"--server", s.URL(), "--server-ca", s.CA(), "--broker", broker, "--state-dir", stateDir,
				"--model", model, "--hardware", hw}, extra...)
			if r := systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, append([]string{"--once"}, args...)...); r.Code != 10 {
				t.Fatalf("first check exited %d, want 10", r.Code)
			}
			db, err := sql.Open("sqlite", "file:"+s.DBPath()+"?mode=ro&_query_only=1&_busy_timeout=10000")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			online := func(want bool) func() (bool, string) {
				return func() (bool, string) {
					var got bool
					if err := db.QueryRow(`SELECT online FROM devices WHERE id = ?`, id).Scan(&got); err != nil {
						return false, err.Error()
					}
					return got == want, fmt.Sprintf("online = %v", got)
				}
			}
			systest.Eventually(t, "after --once (a clean disconnect) the phone shows offline", online(false))

			start := func() *exec.Cmd {
				var logs testutil.SyncBuffer
				cmd := exec.Command(bins.Agent, append(args, "--interval", "1h")...)
				cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
				cmd.Stdout, cmd.Stderr = &logs, &logs
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
					if t.Failed() {
						t.Logf("agent log:\n%s", logs.String())
					}
				})
				return cmd
			}
			cmd := start()
			systest.Eventually(t, "the daemon shows online", online(true))
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			systest.Eventually(t, "the SIGKILLed daemon shows offline (its last will)", online(false))
			start()
			systest.Eventually(t, "the restarted daemon shows online", online(true))
		})
	}
}
