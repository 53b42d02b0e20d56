// Package daemon owns the server process: it bootstraps a data directory,
// opens the TUF repository, the fleet store and the embedded MQTT broker,
// wires report ingestion, serves the HTTP API, and shuts all of it down in
// order. `dialtone server` is a thin shell around Run.
package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/alert"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/devca"
	"github.com/dialtone-dev/dialtone/server/fleet"
	"github.com/dialtone-dev/dialtone/server/rollout"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
	"github.com/sigstore/sigstore/pkg/signature"
)

// ErrNotInitialized means the data directory lacks keys or a repository.
var ErrNotInitialized = errors.New("data directory not initialised")

// Files in the data directory.
const (
	KeysDir        = "keys"
	RepoDir        = "tuf"
	AdminTokenFile = "admin.token"
	AddrFile       = "server.json"
	DBFile         = "dialtone.db"
)

// Options of a server run.
type Options struct {
	DataDir  string
	HTTPAddr string // e.g. 127.0.0.1:8080; port 0 picks a free one
	MQTTAddr string
	// TargetsBucket, when set, is a gocloud.dev blob URL (file:// or s3://,
	// see tufrepo.OpenTargetsBucket) where the repository stores and
	// serves target files; by default they stay in DataDir/tuf/targets.
	TargetsBucket string
	// External, when its URL is set, makes the server a client of an
	// external MQTT broker instead of running the embedded one (MQTTAddr
	// is then unused).
	External ExternalBroker
	// Store, when set, is a PostgreSQL DSN (postgres://…) for the fleet
	// store; by default it is SQLite in DataDir.
	Store string
	// Dev bootstraps missing keys and repository with development keys and
	// lets devices onto the broker by name alone. Never for production.
	Dev    bool
	Logger *slog.Logger
	// Ready, when set, is called once the server listens.
	Ready func(Addrs)
	// AlertWebhook, when set, is an http(s) URL every security alert is
	// POSTed to (server/alert); AlertWebhookSecret, when set, signs the
	// bodies (X-Dialtone-Signature: sha256=<hex HMAC>).
	AlertWebhook       string
	AlertWebhookSecret string
	// OIDC configures single sign-on (oidc.go); off without an issuer.
	OIDC OIDCOptions
	// TLSCert and TLSKey are the API's certificate and key (PEM files).
	// Without them a --dev server makes a development CA in DataDir/tls
	// (EnsureDevCA) and any other refuses to start (ErrNoCertificate)
	// unless InsecureHTTP is set: then the API is plain HTTP.
	TLSCert, TLSKey string
	InsecureHTTP    bool
	// EKCAs are PEM files of the TPM manufacturers' CAs whose EK
	// certificates let a TPM enroll; none: only approved EKs enroll.
	EKCAs []string
	// AttestPeriod is how long a trusted verdict lasts
	// (attest.DefaultPeriod when 0); AttestPCR the PCR agents measure
	// firmware into (14 when 0).
	AttestPeriod time.Duration
	AttestPCR    uint8
	// AttestMinimum is the lowest version per model that attests trusted
	// (attest.Options.Minimum).
	AttestMinimum map[string]string
	// DeviceCertTTL is the lifetime of device certificates (24 h when 0).
	DeviceCertTTL time.Duration
}

// fleetStore is the fleet store with its API tokens: SQLite or PostgreSQL.
type fleetStore interface {
	store.Store
	store.Tokens
	store.Audit
	store.Users
	store.Attestations
	store.SIPCredentials
}

func openStore(ctx context.Context, o Options) (fleetStore, error) {
	if o.Store == "" {
		return store.OpenSQLite(ctx, filepath.Join(o.DataDir, DBFile))
	}
	if !strings.HasPrefix(o.Store, "postgres://") && !strings.HasPrefix(o.Store, "postgresql://") {
		return nil, fmt.Errorf("--store %q: want a postgres:// DSN (or nothing for SQLite in the data directory)", redactDSN(o.Store))
	}
	return store.OpenPostgres(ctx, o.Store)
}

// redactDSN keeps a password out of an error message.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// Addrs are the addresses a running server listens on; also written to
// DataDir/server.json so that scripts can find a server started on port 0.
type Addrs struct {
	HTTP string `json:"http"`
	MQTT string `json:"mqtt"`
	// URL is the API's base URL: https://HOST:PORT, or http:// with
	// InsecureHTTP.
	URL string `json:"url"`
	// CA is the development CA's certificate (PEM) that clients trust
	// the server by (dialtone --ca, dialtone-agent --server-ca); empty
	// unless the server made it (--dev without --tls-cert).
	CA string `json:"ca,omitempty"`
}

// InitOptions create a repository in a data directory.
type InitOptions struct {
	DataDir          string
	RootKeys         []string // key URIs; offline
	RootThreshold    int
	TargetsKeys      []string // key URIs; offline
	TargetsThreshold int
	PublisherRole    string
	PublisherPaths   []string
	PublisherKeys    []string // key URIs (private: they sign the role's first metadata)
	// ConfigKeys sign devices' configuration (SIP profiles) as the
	// config role (ConfigRole, default tufrepo.ConfigRole, over
	// ConfigPaths, default tufrepo.ConfigPaths); none: no config role,
	// which `dialtone tuf push` can add later (tufrepo.ConfigRoleHint).
	ConfigRole  string
	ConfigPaths []string
	ConfigKeys  []string // key URIs (private: they sign the role's first metadata)
}

func loadSigners(ctx context.Context, uris []string) ([]signature.Signer, error) {
	var out []signature.Signer
	for _, u := range uris {
		s, err := keys.LoadSigner(ctx, u)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// InitRepository creates the online keys (snapshot, timestamp) under
// DataDir/keys when missing, the TUF repository signed with the given
// offline keys, and an admin token.
func InitRepository(ctx context.Context, o InitOptions) error {
	kdir := filepath.Join(o.DataDir, KeysDir)
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	online := map[string]signature.Signer{}
	for _, role := range []string{"snapshot", "timestamp"} {
		p := filepath.Join(kdir, role+".key")
		if err := keys.Generate(p); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("init: generating %s key: %w", role, err)
		}
		s, err := keys.LoadSigner(ctx, p)
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		online[role] = s
	}
	root, err := loadSigners(ctx, o.RootKeys)
	if err != nil {
		return fmt.Errorf("init: root keys: %w", err)
	}
	targets, err := loadSigners(ctx, o.TargetsKeys)
	if err != nil {
		return fmt.Errorf("init: targets keys: %w", err)
	}
	pubs, err := loadSigners(ctx, o.PublisherKeys)
	if err != nil {
		return fmt.Errorf("init: publisher keys: %w", err)
	}
	d, err := delegation(o.PublisherRole, o.PublisherPaths, pubs)
	if err != nil {
		return err
	}
	delegations := []tufrepo.Delegation{d}
	if len(o.ConfigKeys) > 0 {
		cfg, err := loadSigners(ctx, o.ConfigKeys)
		if err != nil {
			return fmt.Errorf("init: config keys: %w", err)
		}
		role, paths := o.ConfigRole, o.ConfigPaths
		if role == "" {
			role = tufrepo.ConfigRole
		}
		if len(paths) == 0 {
			paths = tufrepo.ConfigPaths
		}
		if role == o.PublisherRole {
			return fmt.Errorf("init: the config role and the publisher role are both %q: firmware and configuration are signed by different keys", role)
		}
		d, err := delegation(role, paths, cfg)
		if err != nil {
			return err
		}
		delegations = append(delegations, d)
	}
	err = tufrepo.Init(ctx, tufrepo.InitOptions{
		Dir: filepath.Join(o.DataDir, RepoDir), RootSigners: root, RootThreshold: o.RootThreshold,
		TargetsSigners: targets, TargetsThreshold: o.TargetsThreshold,
		Snapshot: online["snapshot"], Timestamp: online["timestamp"], Delegations: delegations,
	})
	if err != nil {
		return err
	}
	return ensureAdminToken(o.DataDir)
}

// delegation is a delegated role of threshold 1 over paths, for the keys
// of signers, which sign its first, empty metadata.
func delegation(role string, paths []string, signers []signature.Signer) (tufrepo.Delegation, error) {
	d := tufrepo.Delegation{Role: role, Paths: paths, Threshold: 1, Signers: signers}
	for _, s := range signers {
		pk, err := s.PublicKey()
		if err != nil {
			return d, fmt.Errorf("init: %w", err)
		}
		d.Keys = append(d.Keys, pk)
	}
	return d, nil
}

func ensureAdminToken(dataDir string) error {
	p := filepath.Join(dataDir, AdminTokenFile)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, []byte("dt_"+hex.EncodeToString(b)+"\n"), 0o600)
}

// BootstrapDev creates development keys and a repository in dataDir when it
// has none. It reports whether it created anything.
func BootstrapDev(ctx context.Context, dataDir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dataDir, RepoDir, "metadata", "timestamp.json")); err == nil {
		return false, ensureAdminToken(dataDir)
	}
	kdir := filepath.Join(dataDir, KeysDir)
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		return false, fmt.Errorf("bootstrap: %w", err)
	}
	for _, role := range []string{"root", "targets", "publisher", "config"} {
		if err := keys.Generate(filepath.Join(kdir, role+".key")); err != nil && !errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("bootstrap: %w", err)
		}
	}
	err := InitRepository(ctx, InitOptions{
		DataDir:  dataDir,
		RootKeys: []string{filepath.Join(kdir, "root.key")}, RootThreshold: 1,
		TargetsKeys: []string{filepath.Join(kdir, "targets.key")}, TargetsThreshold: 1,
		PublisherRole: "publisher", PublisherPaths: []string{"firmware/*/*"},
		PublisherKeys: []string{filepath.Join(kdir, "publisher.key")},
		ConfigKeys:    []string{filepath.Join(kdir, "config.key")},
	})
	return err == nil, err
}

// ReadAdminToken reads the admin token of a data directory.
func ReadAdminToken(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, AdminTokenFile))
	if err != nil {
		return "", fmt.Errorf("reading admin token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Run runs the server until ctx ends.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Dev {
		if _, err := BootstrapDev(ctx, o.DataDir); err != nil {
			return err
		}
	}
	tlsc, err := serverTLS(o)
	if err != nil {
		return err
	}
	if tlsc.cfg == nil {
		log.Warn("!!! THE API IS SERVED IN PLAIN HTTP (--insecure-http): tokens, passwords and sessions cross the network in clear. Give --tls-cert and --tls-key in production !!!")
	}
	kdir := filepath.Join(o.DataDir, KeysDir)
	for _, f := range []string{filepath.Join(kdir, "snapshot.key"), filepath.Join(kdir, "timestamp.key"), filepath.Join(o.DataDir, RepoDir, "metadata", "timestamp.json"), filepath.Join(o.DataDir, AdminTokenFile)} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w: %s is missing: create the repository with `dialtone tuf init --data-dir %s …` (offline root, targets and publisher keys), or run `dialtone server --dev` for a development setup", ErrNotInitialized, f, o.DataDir)
		}
	}
	snap, err := keys.LoadSigner(ctx, filepath.Join(kdir, "snapshot.key"))
	if err != nil {
		return err
	}
	ts, err := keys.LoadSigner(ctx, filepath.Join(kdir, "timestamp.key"))
	if err != nil {
		return err
	}
	ropts := []tufrepo.Option{tufrepo.WithLogger(log.With("component", "tuf"))}
	if o.TargetsBucket != "" {
		bucket, err := tufrepo.OpenTargetsBucket(ctx, o.TargetsBucket)
		if err != nil {
			return err
		}
		defer bucket.Close()
		ropts = append(ropts, tufrepo.WithTargetsBucket(bucket))
	}
	repo, err := tufrepo.Open(ctx, filepath.Join(o.DataDir, RepoDir), snap, ts, ropts...)
	if err != nil {
		return err
	}
	defer repo.Close()
	token, err := ReadAdminToken(o.DataDir)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer st.Close()

	// The device CA: certificates for TPM-resident device keys, which the
	// embedded broker (outside --dev) and the device routes of the API
	// accept devices by.
	dca, err := devca.Open(filepath.Join(o.DataDir, DevCADir))
	if err != nil {
		return err
	}

	// Security alerts (server/alert). The service is made, with the broker
	// as its publisher, before the broker takes clients; nothing raises
	// one before then.
	var wg sync.WaitGroup
	var alerts *alert.Service
	actx, stopAlerts := context.WithCancel(ctx) // stopped before wg.Wait
	var disconnect func(device, reason string)  // set once the embedded broker runs
	raise := func(a alert.Alert) {
		if alerts != nil {
			_ = alerts.Raise(context.WithoutCancel(ctx), a) // logged by the service
		}
	}
	startAlerts := func(pub alert.Publisher) error {
		aopts := []alert.Option{alert.WithPublisher(pub), alert.WithLogger(log)}
		if o.AlertWebhook != "" {
			aopts = append(aopts, alert.WithWebhook(o.AlertWebhook, []byte(o.AlertWebhookSecret)))
		}
		s, err := alert.New(st, aopts...)
		if err != nil {
			return err
		}
		alerts = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Run(actx)
		}()
		return nil
	}

	// Concurrent reports share store transactions (group commit). The
	// ingester outlives ctx until the broker has stopped handing it
	// reports: its Close is deferred after br.Close runs, before st.Close.
	ing := fleet.New(context.WithoutCancel(ctx), st, fleet.Options{Logger: log.With("component", "fleet"),
		OnReject: func(topic string, err error) { raise(alert.FromIngestError(topic, err)) },
		OnEvent: func(tenant string, e wire.Event) {
			if a, ok := alert.FromEvent(tenant, e); ok {
				raise(a)
			}
		},
	})
	defer ing.Close()
	// A report is stored before the broker acknowledges it, so an
	// acknowledged event is never only in memory.
	ingest := func(ctx context.Context, topic string, payload []byte) error {
		if err := ing.Handle(ctx, topic, payload); fleet.Retryable(err) {
			return err
		}
		return nil // stored, or rejected for good (counted by the ingester)
	}
	// denied receives the brokers' ACL refusals.
	denied := func(d broker.Denial) {
		log.Warn("broker refused a client", "client", d.Client, "kind", d.Kind, "topic", d.Topic)
		raise(alert.FromDenial(alert.SourceMosquitto, d))
	}

	defer wg.Wait()
	defer stopAlerts()
	var (
		ro       *rollout.Service
		mqttAddr string
	)
	if o.External.URL != "" {
		ext, err := newExternal(o.External, ingest, func() {
			// The broker may have lost retained desired versions (a
			// Mosquitto killed before its autosave): deliver them again.
			if err := ro.Restore(ctx); err != nil && ctx.Err() == nil {
				log.Warn("restoring desired versions", "err", err)
			}
		}, log.With("component", "mqttingest"))
		if err != nil {
			return err
		}
		if err := startAlerts(ext.client); err != nil {
			return err
		}
		ro = rollout.New(st, ext.client, log.With("component", "rollout"))
		ictx, stopIngest := context.WithCancel(ctx)
		defer stopIngest()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = ext.client.Run(ictx)
		}()
		if o.External.MosquittoLog != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				watchMosquitto(ictx, o.External.MosquittoLog, denied, log.With("component", "mosquitto-log"))
			}()
		}
		mqttAddr = ext.addr
	} else {
		bopts := broker.Options{Addr: o.MQTTAddr, Dev: o.Dev, Logger: log,
			// An untrusted device stays off the broker until it attests
			// good again (over the API, which does not need the broker).
			Admit: func(ctx context.Context, device string) error {
				d, err := st.Device(ctx, device)
				if err == nil && d.Attestation == attest.Untrusted {
					return errors.New("attestation untrusted")
				}
				return nil
			},
			// Pipelined: a device's next reports are read while the last is
			// stored, so the store writes many at once; each is still
			// acknowledged only once stored.
			IngestAsync: func(ctx context.Context, topic string, payload []byte, done func(error)) {
				ing.HandleAsync(ctx, topic, payload, func(err error) {
					if fleet.Retryable(err) {
						done(err)
						return
					}
					done(nil) // stored, or rejected for good (counted by the ingester)
				})
			},
			OnDenial: func(d broker.Denial) { raise(alert.FromDenial(alert.SourceEmbeddedBroker, d)) },
			OnAuthFailures: func(client, remote string, n int) {
				raise(alert.FromAuthFailures(alert.SourceEmbeddedBroker, client, remote, n))
			},
		}
		switch {
		case o.Dev:
			// Devices by name, as the demo's phones without TPMs.
		case tlsc.cfg != nil:
			// Devices only by their attestation-issued certificates.
			mt := tlsc.cfg.Clone()
			mt.ClientAuth = tls.RequireAndVerifyClientCert
			mt.ClientCAs = dca.Pool()
			mt.NextProtos = nil
			bopts.TLS = mt
			bopts.PeerAuth = func(_ context.Context, username string, chain []*x509.Certificate) error {
				id, err := dca.Verify(chain)
				if err != nil {
					return err
				}
				if id.DeviceID != username {
					return fmt.Errorf("certificate of %s used as %s", id.DeviceID, username)
				}
				return nil
			}
		default:
			bopts.Auth = noDeviceAuth{log: log}
		}
		br, err := broker.New(bopts)
		if err != nil {
			return err
		}
		if err := startAlerts(br); err != nil {
			return err
		}
		if err := br.Start(ctx); err != nil {
			return err
		}
		defer br.Close()
		disconnect = func(device, reason string) { br.Disconnect(device, reason) }
		ro = rollout.New(st, br, log.With("component", "rollout"))
		if err := ro.Restore(ctx); err != nil {
			return err
		}
		mqttAddr = br.Addr().String()
	}
	pcr := o.AttestPCR
	if pcr == 0 {
		pcr = 14 // agent/tpm.DefaultPCR
	}
	o.AttestPCR = pcr
	att, err := newAttestation(o, st, repo, dca, raise, &disconnect, log.With("component", "attest"))
	if err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		att.Run(actx)
	}()
	accounts, err := auth.New(st, auth.WithLogger(log.With("component", "auth")))
	if err != nil {
		return err
	}
	sso, err := oidcHandler(ctx, o, accounts, log.With("component", "oidc"))
	if err != nil {
		return err
	}
	// Devices' SIP passwords are kept encrypted under a key of the data
	// directory (created on first start): the database alone gives none
	// away.
	sipBox, err := sipsecret.OpenKeyFile(filepath.Join(kdir, sipsecret.KeyFile))
	if err != nil {
		return err
	}
	h, err := api.New(api.Options{Repo: repo, Devices: st, Tokens: st, Rollouts: ro, Alerts: st, Audit: st, AdminToken: token,
		Sessions: accounts, Accounts: accounts, OIDC: sso, Attest: att, Enrollment: st, DeviceCA: dca,
		Config: repo, SIPCredentials: st, SIPBox: sipBox, Logger: log.With("component", "api")})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.HTTPAddr, err)
	}
	// No ReadTimeout or WriteTimeout here: one server carries small JSON
	// calls, 512 MiB firmware uploads and firmware downloads to slow phones,
	// so the API sets each request's read and write deadlines itself
	// (api.JSONReadTimeout, api.JSONWriteTimeout, api.TransferTimeout for
	// publish and /tuf/) with http.ResponseController.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	addrs := Addrs{HTTP: ln.Addr().String(), MQTT: mqttAddr, URL: "http://" + ln.Addr().String()}
	if tlsc.cfg != nil {
		srv.Handler = hsts(h)
		// Devices present their attestation-issued certificates on the
		// device routes (the SIP credentials); operators present none.
		apiTLS := tlsc.cfg.Clone()
		apiTLS.ClientAuth = tls.VerifyClientCertIfGiven
		apiTLS.ClientCAs = dca.Pool()
		srv.TLSConfig = apiTLS
		addrs.URL = "https://" + ln.Addr().String()
		if tlsc.caFile != "" {
			if addrs.CA, err = filepath.Abs(tlsc.caFile); err != nil {
				ln.Close()
				return err
			}
		}
	}
	b, _ := json.Marshal(addrs)
	if err := atomicfile.WriteFile(filepath.Join(o.DataDir, AddrFile), b, 0o644); err != nil {
		ln.Close()
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		repo.Run(ctx, time.Minute)
	}()
	errc := make(chan error, 1)
	go func() {
		if tlsc.cfg != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	log.Info("server listening", "url", addrs.URL, "mqtt", addrs.MQTT, "data", o.DataDir)
	if addrs.CA != "" {
		log.Info("development CA: clients trust the server with it (dialtone --ca or DIALTONE_CA, dialtone-agent --server-ca)", "ca", addrs.CA)
	}
	if o.Ready != nil {
		o.Ready(addrs)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	}
	ist := ing.Stats()
	log.Info("ingestion totals", "stored", ist.Stored, "duplicates", ist.Duplicates, "telemetry", ist.Telemetry,
		"rejected", ist.Rejected, "failed", ist.Failed)
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	wg.Wait()
	log.Info("server stopped")
	return err
}

// noDeviceAuth refuses every device on a broker without TLS (an
// --insecure-http server): a production broker must not let a phone in by
// its name alone (threat A1), and device certificates need TLS.
type noDeviceAuth struct{ log *slog.Logger }

func (n noDeviceAuth) Authenticate(_ context.Context, username string, _ []byte) bool {
	n.log.Warn("device refused: devices connect with attestation-issued certificates, which need the broker on TLS (--tls-cert, not --insecure-http)", "device", username)
	return false
}
