package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/mqttingest"
)

// ExternalBroker configures the server as a client of an external MQTT
// broker (Mosquitto configured by `dialtone broker mosquitto-config`, or a
// cluster) instead of running the embedded one.
type ExternalBroker struct {
	// URL is the broker's TLS listener, mqtts://HOST:PORT.
	URL string
	// CAFile is the PEM CA bundle that issued the broker's certificate;
	// CertFile and KeyFile the server's client certificate, whose CN is one
	// of the broker ACL's server identities (dialtone-server by default).
	CAFile, CertFile, KeyFile string
	// Shared subscribes through $share/dialtone/..., so that several
	// replicas split the reports.
	Shared bool
	// Workers store reports concurrently (each device's in order); 0
	// means 4.
	Workers int
	// MosquittoLog, when set, is Mosquitto's log file: its ACL denials are
	// raised as alerts.
	MosquittoLog string
}

func (e ExternalBroker) tlsConfig() (*tls.Config, error) {
	if e.CAFile == "" || e.CertFile == "" || e.KeyFile == "" {
		return nil, fmt.Errorf("external broker %s: the broker CA, the server's client certificate and its key are all required (--broker-ca, --broker-cert, --broker-key)", e.URL)
	}
	pem, err := os.ReadFile(e.CAFile)
	if err != nil {
		return nil, fmt.Errorf("external broker: reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("external broker: %s holds no PEM certificate", e.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("external broker: loading the server's client certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

// external is the server's connection to an external broker.
type external struct {
	client *mqttingest.Client
	addr   string
}

// newExternal builds the ingesting client; onConnect runs (on its own
// goroutine) after every connection, to deliver what the broker may have
// lost (desired versions).
func newExternal(e ExternalBroker, ingest func(context.Context, string, []byte) error, onConnect func(), log *slog.Logger) (*external, error) {
	if !strings.HasPrefix(e.URL, "mqtts://") {
		return nil, fmt.Errorf("external broker %q: want mqtts://HOST:PORT (devices and server authenticate by certificate)", e.URL)
	}
	cfg, err := e.tlsConfig()
	if err != nil {
		return nil, err
	}
	workers := e.Workers
	if workers == 0 {
		workers = 4
	}
	c, err := mqttingest.New(mqttingest.HandlerFunc(ingest), mqttingest.Options{
		Broker: e.URL, TLS: cfg, Shared: e.Shared, Workers: workers, Logger: log,
		OnConnect: func(bool) { go onConnect() },
	})
	if err != nil {
		return nil, err
	}
	return &external{client: c, addr: strings.TrimPrefix(e.URL, "mqtts://")}, nil
}

// watchMosquitto follows Mosquitto's log until ctx ends, passing denials to
// onDenial; a watcher that fails is logged, not fatal: ingestion goes on.
func watchMosquitto(ctx context.Context, path string, onDenial func(broker.Denial), log *slog.Logger) {
	err := broker.WatchMosquittoLog(ctx, broker.MosquittoLogOptions{Path: path, OnDenial: onDenial, Logger: log})
	if err != nil {
		log.Error("watching the Mosquitto log stopped: ACL denials are no longer raised", "path", path, "err", err)
	}
}
