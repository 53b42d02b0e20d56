package cli

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/spf13/cobra"
)

type serverOptions struct {
	DataDir string
	HTTP    string
	MQTT    string
	Dev     bool
	Targets string
	Store   string
	// External broker (instead of the embedded one).
	Broker       string
	BrokerCA     string
	BrokerCert   string
	BrokerKey    string
	BrokerShared bool
	MosquittoLog string
	// Alerts.
	AlertWebhook           string
	AlertWebhookSecretFile string
	// Single sign-on (server_oidc.go).
	OIDC serverOIDCOptions
	// TLS of the API.
	TLSCert      string
	TLSKey       string
	InsecureHTTP bool
	EKCAs        []string
	AttestPeriod time.Duration
	AttestMin    map[string]string
}

// alertWebhookSecret reads --alert-webhook-secret-file ("" without one).
func (o *serverOptions) alertWebhookSecret() (string, error) {
	if o.AlertWebhookSecretFile == "" {
		return "", nil
	}
	if o.AlertWebhook == "" {
		return "", errors.New("--alert-webhook-secret-file needs --alert-webhook")
	}
	b, err := os.ReadFile(o.AlertWebhookSecretFile)
	if err != nil {
		return "", fmt.Errorf("reading the alert webhook secret: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if len(secret) < 16 {
		return "", fmt.Errorf("alert webhook secret in %s: want at least 16 characters", o.AlertWebhookSecretFile)
	}
	return secret, nil
}

func (o *serverOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.DataDir, "data-dir", "dialtone-data", "data directory: keys, TUF repository, database")
	cmd.Flags().StringVar(&o.HTTP, "http", "127.0.0.1:7080", "API (HTTPS) listen address (port 0 picks a free port; see DATA/server.json)")
	cmd.Flags().StringVar(&o.TLSCert, "tls-cert", "", "the API's TLS certificate chain (PEM); required outside --dev unless --insecure-http")
	cmd.Flags().StringVar(&o.TLSKey, "tls-key", "", "the key of --tls-cert (PEM)")
	cmd.Flags().BoolVar(&o.InsecureHTTP, "insecure-http", false, "serve the API in plain HTTP without a certificate. NOT for production: tokens and passwords cross the network in clear")
	cmd.Flags().StringVar(&o.MQTT, "mqtt", "127.0.0.1:7883", "embedded MQTT broker listen address (port 0 picks a free port)")
	cmd.Flags().StringVar(&o.Targets, "targets-bucket", "", "where target files (bundles, signatures) are stored and served from: a gocloud.dev blob URL, e.g. s3://BUCKET?region=eu-west-1 or, for an S3-compatible server, s3://BUCKET?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1&disable_https=true (credentials from the AWS_* environment); empty keeps them in DATA/tuf/targets")
	cmd.Flags().StringVar(&o.Store, "store", "", "fleet store: a PostgreSQL DSN (postgres://USER@HOST:5432/DB?sslmode=…); empty keeps SQLite in the data directory")
	cmd.Flags().StringVar(&o.Broker, "broker", "", "external MQTT broker mqtts://HOST:PORT to ingest from instead of running the embedded one (configure Mosquitto with `dialtone broker mosquitto-config`)")
	cmd.Flags().StringVar(&o.BrokerCA, "broker-ca", "", "external broker: PEM CA bundle that issued the broker's certificate")
	cmd.Flags().StringVar(&o.BrokerCert, "broker-cert", "", "external broker: the server's client certificate (PEM; its CN is a server identity of the broker's ACL)")
	cmd.Flags().StringVar(&o.BrokerKey, "broker-key", "", "external broker: the key of --broker-cert (PEM)")
	cmd.Flags().BoolVar(&o.BrokerShared, "broker-shared", false, "external broker: subscribe with a shared subscription ($share/dialtone/…) so that several server replicas split the reports")
	cmd.Flags().StringVar(&o.MosquittoLog, "mosquitto-log", "", "external broker: Mosquitto's log file, followed to raise its ACL denials as alerts")
	cmd.Flags().StringVar(&o.AlertWebhook, "alert-webhook", "", "URL (http or https) every security alert is POSTed to as JSON")
	o.OIDC.AddFlags(cmd)
	cmd.Flags().StringVar(&o.AlertWebhookSecretFile, "alert-webhook-secret-file", "", "file holding the secret that signs alert webhook bodies (header X-Dialtone-Signature: sha256=<hex HMAC-SHA256>)")
	cmd.Flags().StringSliceVar(&o.EKCAs, "ek-ca", nil, "PEM file of a TPM manufacturer's CA (roots and intermediates); devices whose EK certificate chains to one may enroll with a grant (repeatable). Without any, only operator-approved EKs enroll")
	cmd.Flags().StringToStringVar(&o.AttestMin, "attest-min-version", nil, "MODEL=VERSION: the lowest version of a model that attests trusted, though older images are still targets (repeatable, or comma-separated)")
	cmd.Flags().DurationVar(&o.AttestPeriod, "attest-period", attest.DefaultPeriod, "how long a trusted attestation lasts: a device that does not attest again within it shows stale")
	cmd.Flags().BoolVar(&o.Dev, "dev", false, "development mode: generate all keys and, without --tls-cert, a development CA (DATA/tls/ca.pem) on first start, and let devices in by name. NEVER in production")
}

const devBanner = `
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! DEVELOPMENT MODE. NOT FOR PRODUCTION.
!! Every TUF key, the offline root, targets and publisher keys included,
!! is generated into %[1]s/keys and lives on this server.
!! Devices join the broker by name alone.
!! Without --tls-cert, the API's certificate comes from a development CA
!! in %[1]s/tls/ca.pem: clients trust it with --ca / --server-ca.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
`

const insecureBanner = `
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! --insecure-http: THE API IS PLAIN HTTP. NOT FOR PRODUCTION.
!! API tokens, passwords and sessions cross the network in clear.
!! Give --tls-cert and --tls-key instead.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
`

func serverCmd(g *globalOptions) *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the update, attestation and fleet server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.Dev {
				fmt.Fprintf(g.stderr, devBanner, o.DataDir)
			}
			if o.InsecureHTTP {
				fmt.Fprint(g.stderr, insecureBanner)
			}
			secret, err := o.alertWebhookSecret()
			if err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			sso, err := o.OIDC.daemonOptions()
			if err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			err = daemon.Run(ctx, daemon.Options{
				DataDir: o.DataDir, HTTPAddr: o.HTTP, MQTTAddr: o.MQTT, Dev: o.Dev, TargetsBucket: o.Targets, Store: o.Store, Logger: g.logger(),
				External: daemon.ExternalBroker{URL: o.Broker, CAFile: o.BrokerCA, CertFile: o.BrokerCert, KeyFile: o.BrokerKey,
					Shared: o.BrokerShared, MosquittoLog: o.MosquittoLog},
				AlertWebhook: o.AlertWebhook, AlertWebhookSecret: secret, OIDC: sso,
				TLSCert: o.TLSCert, TLSKey: o.TLSKey, InsecureHTTP: o.InsecureHTTP, EKCAs: o.EKCAs, AttestPeriod: o.AttestPeriod, AttestMinimum: o.AttestMin,
			})
			if errors.Is(err, daemon.ErrNoCertificate) {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return err
		},
	}
	o.AddFlags(cmd)
	return cmd
}
