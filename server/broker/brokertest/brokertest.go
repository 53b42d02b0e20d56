// Package brokertest starts real Mosquitto brokers configured the way
// `dialtone broker mosquitto-config` configures them — TLS identities,
// use_identity_as_username, pattern ACLs — for the tests of the broker
// configuration, of server/mqttingest and of the server on an external
// broker.
package brokertest

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/server/broker"
)

// Mosquitto is a real Mosquitto configured by broker.MosquittoConfig. It
// keeps testutil's plain listener (Addr), which lets nobody in: there is no
// password file and anonymous access is off.
type Mosquitto struct {
	*testutil.Mosquitto
	PKI     *testutil.PKI
	TLSAddr string // "127.0.0.1:PORT" of the TLS listener
	Opts    broker.MosquittoOptions
}

// Start starts Mosquitto with the generated configuration on a free port,
// after adjust (which may be nil) changed the options. The broker's log
// file is written to the test's log when the test fails.
func Start(t testing.TB, adjust func(*broker.MosquittoOptions)) *Mosquitto {
	t.Helper()
	dir := t.TempDir()
	p := testutil.NewPKI(t, dir, "dialtone-test-ca")
	certFile, keyFile, _ := p.Issue(t, "mosquitto", true)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	opts := broker.MosquittoOptions{
		Port:           n,
		Bind:           "127.0.0.1",
		CAFile:         p.CAFile,
		CertFile:       certFile,
		KeyFile:        keyFile,
		ACLFile:        filepath.Join(dir, "acl"),
		PersistenceDir: filepath.Join(dir, "db"),
		LogFile:        filepath.Join(dir, "mosquitto.log"),
		LogDenials:     true,
	}
	if err := os.Mkdir(opts.PersistenceDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(&opts)
	}
	conf, acl, err := broker.MosquittoConfig(opts)
	if err != nil {
		t.Fatalf("MosquittoConfig: %v", err)
	}
	if err := os.WriteFile(opts.ACLFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	m := testutil.NewMosquitto(t, conf)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(opts.LogFile)
			t.Logf("mosquitto log file:\n%s", b)
		}
	})
	return &Mosquitto{Mosquitto: m, PKI: p, TLSAddr: addr, Opts: opts}
}

// Connect connects a client with a certificate for cn (clientID as given:
// Mosquitto replaces it with the CN); it is disconnected in t.Cleanup.
func (m *Mosquitto) Connect(t testing.TB, cn, clientID string, configure func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	c, err := m.TryConnect(m.PKI.ClientTLS(t, cn), clientID, configure)
	if err != nil {
		t.Fatalf("connecting as %s: %v", cn, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// TryConnect connects a client with cfg to the TLS listener.
func (m *Mosquitto) TryConnect(cfg *tls.Config, clientID string, configure func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	return testutil.TryConnectMQTT(m.TLSAddr, clientID, func(o *mqtt.ClientOptions) {
		o.Servers = nil
		o.AddBroker("ssl://" + m.TLSAddr)
		o.SetTLSConfig(cfg)
		if configure != nil {
			configure(o)
		}
	})
}
