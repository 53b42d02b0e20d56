package e2e

import (
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/broker/brokertest"
)

// The no-loss run against Mosquitto: the server is a client of a real
// Mosquitto configured by `dialtone broker mosquitto-config` (TLS client
// certificates, identity ACLs, persistence), as in production at scale.
func init() {
	nolossSetups = append(nolossSetups,
		struct {
			name  string
			start func(t *testing.T) nolossServer
		}{"mosquitto+sqlite", func(t *testing.T) nolossServer { return startMosquittoSetup(t, "") }},
		struct {
			name  string
			start func(t *testing.T) nolossServer
		}{"mosquitto+postgres", func(t *testing.T) nolossServer { return startMosquittoSetup(t, postgresDatabase(t)) }},
	)
}

// mosquittoSetup is `dialtone server --broker mqtts://…` ingesting from a
// Mosquitto process; restarting the broker restarts Mosquitto only.
type mosquittoSetup struct {
	m   *brokertest.Mosquitto
	s   *devServer
	dsn string // PostgreSQL store, or "" for SQLite
}

func startMosquittoSetup(t *testing.T, dsn string) *mosquittoSetup {
	t.Helper()
	m := brokertest.Start(t, nil)
	cert, key, _ := m.PKI.Issue(t, "dialtone-server", false)
	args := []string{"--broker", "mqtts://" + m.TLSAddr, "--broker-ca", m.PKI.CAFile, "--broker-cert", cert, "--broker-key", key,
		"--mosquitto-log", m.Opts.LogFile}
	if dsn != "" {
		args = append(args, "--store", dsn)
	}
	return &mosquittoSetup{m: m, s: startDevServerOn(t, bins.Server, m.TLSAddr, args...), dsn: dsn}
}

func (e *mosquittoSetup) Broker() string { return "mqtts://" + e.m.TLSAddr }

func (e *mosquittoSetup) RestartBroker(t *testing.T) {
	e.m.Stop()
	e.m.Start()
}

func (e *mosquittoSetup) KillServer(t *testing.T, down time.Duration) {
	embeddedSetup{e.s}.KillServer(t, down)
}

func (e *mosquittoSetup) Events(t *testing.T, tenant string) []storedEvent {
	if e.dsn != "" {
		return embeddedPGSetup{dsn: e.dsn}.Events(t, tenant)
	}
	return readSQLiteEvents(t, e.s.DBPath(), tenant)
}

func (e *mosquittoSetup) Log() string { return e.s.log.String() }

func (e *mosquittoSetup) DeviceArgs(t *testing.T, device string) []string {
	cert, key, _ := e.m.PKI.Issue(t, device, false)
	return []string{"--tls-ca", e.m.PKI.CAFile, "--tls-cert", cert, "--tls-key", key}
}
