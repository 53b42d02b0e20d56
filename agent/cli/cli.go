// Package cli owns the `dialtone-agent` command line: provisioning a phone's
// state directory as a factory would, and running the agent (once, or as a
// daemon). It wires the update, slot and report packages together.
package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dialtone-dev/dialtone/agent/floor"
	"github.com/dialtone-dev/dialtone/agent/report"
	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/agent/update"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/cliconfig"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/spf13/cobra"
)

// Exit codes of `dialtone-agent --once`.
const (
	ExitInstalled  = 0  // a new image was installed and committed
	ExitError      = 1  // an error that is not a security refusal
	ExitUsage      = 2  // bad flags or configuration
	ExitNoUpdate   = 10 // nothing newer for this device
	ExitDeferred   = 11 // installed; activation waits for the maintenance window or the call to end
	ExitRefused    = 20 // verification failed: nothing installed
	ExitRolledBack = 21 // the new image failed its health checks
)

var outcomeExit = map[update.Outcome]int{
	update.Installed: ExitInstalled, update.NoUpdate: ExitNoUpdate, update.Refused: ExitRefused,
	update.Failed: ExitError, update.RolledBack: ExitRolledBack, update.Deferred: ExitDeferred,
}

// ExitCodeError carries an exit code out of a command.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string { return e.Err.Error() }
func (e *ExitCodeError) Unwrap() error { return e.Err }

type runOptions struct {
	Config   string
	Server   string
	ServerCA string
	Broker   string
	BrokerCA string
	// BrokerCert and BrokerKey are the device's client certificate for
	// mqtts (until attestation issues one from the TPM).
	BrokerCert, BrokerKey string
	StateDir              string
	Tenant                string
	DeviceID              string
	Model                 string
	Hardware              string
	Channel               string
	Slots                 slotOptions
	Once                  bool
	Interval              time.Duration
	// Download
	IdleTimeout time.Duration
	Attempts    int
	LogLevel    string
	// TPM and care for the user
	TPM        string
	FloorIndex uint32
	// Attestation (with a TPM)
	EnrollToken    string
	AttestInterval time.Duration
	Window         string
	Progress       string
	// SIP line (sip.go)
	SIP          bool
	SIPGroup     string
	SIPCheck     time.Duration
	SIPAnswer    bool
	SIPTone      float64
	SIPWAVIn     string
	SIPRecordDir string
}

func (o *runOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Config, "config", "", "YAML config file (default /etc/dialtone/agent.yaml when it exists)")
	f.StringVar(&o.Server, "server", "", "Dialtone server URL: https://HOST:PORT (http:// and plain-HTTP mirrors work too, TUF verifies what they serve, but the server should be HTTPS)")
	f.StringVar(&o.ServerCA, "server-ca", "", "PEM CA bundle trusted for the server's certificate (TUF metadata, targets) instead of the system's roots, like curl --cacert (default: the system's roots); a --dev server's is DATA/tls/ca.pem")
	f.StringVar(&o.Broker, "broker", "", "MQTT broker: mqtt://HOST:PORT or mqtts://HOST:PORT")
	f.StringVar(&o.BrokerCA, "broker-ca", "", "PEM CA bundle that signs the broker's certificate, for mqtts (default: the system's roots)")
	f.StringVar(&o.BrokerCert, "broker-cert", "", "PEM client certificate for mqtts (its CN is the device ID: brokers configured by `dialtone broker mosquitto-config` take the identity from it)")
	f.StringVar(&o.BrokerKey, "broker-key", "", "PEM key of --broker-cert")
	f.StringVar(&o.StateDir, "state-dir", "/var/lib/dialtone", "state directory (trusted root, slots, outbox)")
	f.StringVar(&o.Tenant, "tenant", "default", "tenant the phone belongs to")
	f.StringVar(&o.DeviceID, "device-id", "", "device ID (default: the one generated at provisioning)")
	f.StringVar(&o.Model, "model", "", "phone model")
	f.StringVar(&o.Hardware, "hardware", "", "hardware revision")
	f.StringVar(&o.Channel, "channel", "stable", "release channel")
	f.BoolVar(&o.Once, "once", false, "run one check-install-report cycle and exit with a status that says what happened (0 installed, 10 no update, 20 refused, 21 rolled back, 1 error)")
	f.DurationVar(&o.Interval, "interval", time.Hour, "time between update checks (jittered ±10%)")
	f.DurationVar(&o.IdleTimeout, "download-idle-timeout", time.Minute, "give up a download attempt after this long without data")
	f.IntVar(&o.Attempts, "download-attempts", 3, "download attempts per check, each resuming the last")
	f.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	o.Slots.AddFlags(cmd)
	f.StringVar(&o.TPM, "tpm", "", "the phone's TPM: device:/dev/tpmrm0, swtpm:HOST:PORT, or sim (the in-process simulator of a cgo build, for tests). It holds the anti-rollback floor, measures what boots and installs, enrolls, attests, and keeps the device key of the broker certificate. None: no attestation, and the floor lives in the state dir (the phone reports insecure-floor)")
	f.StringVar(&o.EnrollToken, "enroll-token", "", "one-time enrollment token (dialtone devices enroll-token); not needed when the device is allowlisted (dialtone devices allow) or its EK approved (dialtone devices approve)")
	f.DurationVar(&o.AttestInterval, "attest-interval", 20*time.Minute, "time between periodic attestations (jittered ±10%); keep it under the server's --attest-period")
	f.Uint32Var(&o.FloorIndex, "floor-nv-index", floor.DefaultIndex, "TPM NV index of the anti-rollback floor")
	f.StringVar(&o.Window, "maintenance-window", "", "activate new images only between HH:MM-HH:MM local time (default: any time)")
	f.StringVar(&o.Progress, "progress", "auto", "download progress bar on stderr: auto (when a terminal), always, never")
	f.BoolVar(&o.SIP, "sip", false, "run the phone's SIP line: once the booted image is committed, register with the SIP profile the TUF repository holds for this device (config/TENANT/devices/DEVICE/sip.json, else --sip-group's) and the password the server releases to the attested device (sealed to the TPM in STATE/sip); needs --tpm and enrollment")
	f.StringVar(&o.SIPGroup, "sip-group", "", "group whose SIP profile (config/TENANT/groups/GROUP/sip.json) applies when the device has none of its own")
	f.DurationVar(&o.SIPCheck, "sip-check-interval", 5*time.Minute, "time between checks for a new SIP profile (a check command checks at once); a new one restarts the SIP stack")
	f.BoolVar(&o.SIPAnswer, "sip-answer", false, "answer inbound calls at once with --sip-tone, --sip-wav-in or silence (until the phone's audio device is wired in; without it inbound calls are refused)")
	f.Float64Var(&o.SIPTone, "sip-tone", 0, "with --sip-answer: send a sine tone of this frequency in Hz")
	f.StringVar(&o.SIPWAVIn, "sip-wav-in", "", "with --sip-answer: send this 8 kHz 16-bit mono WAV file")
	f.StringVar(&o.SIPRecordDir, "sip-record-dir", "", "with --sip-answer: record what callers send to DIR/call-N.wav (tests)")
}

func (o *runOptions) Validate() error {
	var missing []string
	for name, v := range map[string]string{"server": o.Server, "broker": o.Broker, "model": o.Model, "hardware": o.Hardware} {
		if v == "" {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("required: %s (flags, DIALTONE_* variables or the config file)", strings.Join(missing, ", "))
	}
	if err := o.Slots.Validate(); err != nil {
		return err
	}
	if !strings.HasPrefix(o.Broker, "mqtt://") && !strings.HasPrefix(o.Broker, "mqtts://") {
		return fmt.Errorf("--broker %q: want mqtt://HOST:PORT or mqtts://HOST:PORT", o.Broker)
	}
	if o.Interval < time.Second {
		return errors.New("--interval must be at least 1s")
	}
	if o.AttestInterval < time.Second {
		return errors.New("--attest-interval must be at least 1s")
	}
	if o.Attempts < 1 || o.IdleTimeout < time.Second {
		return errors.New("--download-attempts must be at least 1 and --download-idle-timeout at least 1s")
	}
	if o.Window != "" {
		if _, err := update.ParseWindow(o.Window); err != nil {
			return fmt.Errorf("--maintenance-window: %w", err)
		}
	}
	switch o.Progress {
	case "auto", "always", "never":
	default:
		return fmt.Errorf("--progress %q: want auto, always or never", o.Progress)
	}
	return o.validateSIP()
}

func (o *runOptions) logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

func applyConfig(cmd *cobra.Command, path string) error {
	explicit := path != ""
	if !explicit {
		path = os.Getenv("DIALTONE_CONFIG")
		explicit = path != ""
	}
	if path == "" {
		path = "/etc/dialtone/agent.yaml"
	}
	file, err := cliconfig.Load(path, explicit)
	if err != nil {
		return &ExitCodeError{Code: ExitUsage, Err: err}
	}
	if err := cliconfig.Apply(cmd, "DIALTONE", file); err != nil {
		return &ExitCodeError{Code: ExitUsage, Err: err}
	}
	return nil
}

// New returns the root command.
func New(stdout, stderr io.Writer) *cobra.Command {
	o := &runOptions{}
	root := &cobra.Command{
		Use:           "dialtone-agent",
		Short:         "The Dialtone agent: verified firmware updates and fleet reports for one phone",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd, o.Config); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return Run(ctx, o, o.logger(stderr))
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	o.AddFlags(root)
	root.AddCommand(provisionCmd(stdout))
	root.AddCommand(callCmd(stdout, stderr), answerCmd(stdout, stderr))
	return root
}

// Execute runs the command line and returns the exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := New(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ec *ExitCodeError
	if errors.As(err, &ec) {
		if ec.Err != nil {
			fmt.Fprintln(stderr, "dialtone-agent:", ec.Err)
		}
		return ec.Code
	}
	if err != nil {
		fmt.Fprintln(stderr, "dialtone-agent:", err)
		return ExitError
	}
	return 0
}

type provisionOptions struct {
	Root           string
	StateDir       string
	Model          string
	FactoryVersion string
	// FactoryBundle is the factory image's published bundle: its SHA-256
	// is what the agent measures at boot, so a phone fresh from the
	// factory can attest as trusted.
	FactoryBundle string
	DeviceID      string
	Slots         slotOptions
}

func provisionCmd(stdout io.Writer) *cobra.Command {
	o := &provisionOptions{}
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Install the trusted TUF root and the factory image's slot state, as a factory would",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root, err := os.ReadFile(o.Root)
			if err != nil {
				return fmt.Errorf("reading root: %w", err)
			}
			if len(root) > 512<<10 {
				return fmt.Errorf("%s is larger than a root metadata file may be", o.Root)
			}
			if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
				return err
			}
			if err := update.Provision(o.StateDir, root); err != nil {
				return err
			}
			if err := o.Slots.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			info := slot.Info{Model: o.Model, Version: o.FactoryVersion}
			if o.FactoryBundle != "" {
				sum, err := fileSHA256(o.FactoryBundle)
				if err != nil {
					return err
				}
				info.SHA256 = sum
			}
			if err := o.Slots.provision(cmd.Context(), o.StateDir, info); err != nil {
				return err
			}
			id := o.DeviceID
			if id == "" {
				b := make([]byte, 8)
				if _, err := rand.Read(b); err != nil {
					return err
				}
				id = "dev-" + hex.EncodeToString(b)
			}
			if !wire.ValidID(id) {
				return &ExitCodeError{Code: ExitUsage, Err: fmt.Errorf("bad device id %q", id)}
			}
			if err := atomicfile.WriteFile(filepath.Join(o.StateDir, "device-id"), []byte(id+"\n"), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "provisioned %s as %s (factory image %s)\n", o.StateDir, id, o.FactoryVersion)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Root, "root", "", "trusted TUF root metadata (1.root.json from the server's repository)")
	cmd.Flags().StringVar(&o.StateDir, "state-dir", "/var/lib/dialtone", "state directory to create")
	cmd.Flags().StringVar(&o.Model, "model", "", "phone model of the factory image")
	cmd.Flags().StringVar(&o.FactoryVersion, "factory-version", "0.0.0", "version of the factory image in slot A")
	cmd.Flags().StringVar(&o.DeviceID, "device-id", "", "device ID (default: random)")
	cmd.Flags().StringVar(&o.FactoryBundle, "factory-bundle", "", "the factory image's published bundle, whose SHA-256 the phone measures at boot (without it the factory image cannot attest as trusted)")
	o.Slots.AddFlags(cmd)
	_ = cmd.MarkFlagRequired("root")
	return cmd
}

func readDeviceID(stateDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "device-id"))
	if err != nil {
		return "", fmt.Errorf("reading device id (provision the device first): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Run runs the agent until ctx ends, or one cycle with o.Once.
func Run(ctx context.Context, o *runOptions, log *slog.Logger) error {
	id := o.DeviceID
	if id == "" {
		var err error
		if id, err = readDeviceID(o.StateDir); err != nil {
			return err
		}
	}
	slots, err := o.Slots.open(ctx, o.StateDir)
	if err != nil {
		return err
	}
	hc, err := o.serverHTTPClient()
	if err != nil {
		return err
	}
	// One TPM connection for the floor and attestation (swtpm serves one
	// at a time).
	var (
		shared *tpm.Shared
		att    *phoneAttestation
	)
	if o.TPM != "" {
		t, err := tpm.Open(ctx, o.TPM)
		if err != nil {
			return err
		}
		shared = tpm.NewShared(t)
		defer shared.Close()
		if att, err = newPhoneAttestation(ctx, o, shared, hc, id, slots, log.With("component", "attest")); err != nil {
			return err
		}
		// Boot: measure what booted, then enroll and attest, so that the
		// device certificate the broker may ask for is there first.
		att.measureBooted(ctx)
		att.attest(ctx, "boot")
		if _, ok := att.cl.Enrolled(); o.SIP && !ok {
			return errors.New("--sip: the device is not enrolled, so the server will not release its SIP password (the log says why enrollment failed; an --enroll-token, or dialtone devices allow/approve, lets it enroll)")
		}
	}
	ropts := report.Options{
		Broker: o.Broker, Tenant: o.Tenant, Device: id, OutboxDir: filepath.Join(o.StateDir, "outbox"),
		Logger: log,
	}
	if ropts.TLS, err = o.brokerTLS(); err != nil {
		return err
	}
	if att != nil && o.BrokerCert == "" && strings.HasPrefix(o.Broker, "mqtts://") {
		if ropts.TLS == nil {
			ropts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		ropts.TLS.GetClientCertificate = att.clientCertificate
	}
	rep, err := report.New(ropts)
	if err != nil {
		return err
	}
	var line *sipLine
	if o.SIP {
		if att == nil {
			return errors.New("--sip needs --tpm")
		}
		if line, err = newSIPLine(o, id, slots, hc, att.clientCertificate, shared, rep, log.With("component", "sip")); err != nil {
			return err
		}
	}
	st, err := slots.Status()
	if err != nil {
		return err
	}
	rep.SetWill(wire.State{Schema: wire.SchemaVersion, Tenant: o.Tenant, Device: id, Model: o.Model, Hardware: o.Hardware,
		Version: st.Slots[st.Active].Version, Slot: st.Active, UpdateState: wire.UpdateIdle})
	if err := rep.Connect(ctx); err != nil {
		// Events wait in the outbox; the health check of a trial boot is what
		// insists on the broker.
		log.Warn("broker not reached yet", "err", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := rep.Close(cctx); err != nil {
			log.Warn("closing report client", "err", err)
		}
	}()
	if line != nil {
		// Deferred after the report client's Close: runs first, so that
		// the phone unregisters and its last state goes out before.
		defer line.wait()
	}
	fl, err := openFloor(o, shared, log)
	if err != nil {
		return err
	}
	desired, err := openDesired(filepath.Join(o.StateDir, "desired.json"))
	if err != nil {
		return err
	}
	cfg := update.Config{
		HTTPClient: hc,
		Server:     o.Server, StateDir: o.StateDir, Tenant: o.Tenant, Device: id, Model: o.Model,
		Hardware: o.Hardware, Channel: o.Channel, Logger: log.With("component", "update"),
		DownloadIdleTimeout: o.IdleTimeout, DownloadAttempts: o.Attempts,
		Floor: fl, Desired: desired.Version,
		Health: func(ctx context.Context) error {
			// The broker must have taken every event so far.
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := rep.Flush(hctx); err != nil {
				return fmt.Errorf("broker not reached: %w", err)
			}
			// On the dir backend the image's own self-test runs here; on a
			// phone the booted image runs its own.
			d, ok := slots.(*slot.Dir)
			if !ok {
				return nil
			}
			st, err := d.Status()
			if err != nil {
				return err
			}
			return selfTest(ctx, d.Path(st.Active), log)
		},
		Crash: crashHook(),
	}
	if line != nil {
		cfg.InCall = line.inCall
	}
	if o.Window != "" {
		cfg.Window, _ = update.ParseWindow(o.Window) // checked by Validate
	}
	if bar := newProgressBar(o.Progress); bar != nil {
		cfg.Progress = bar.update
		defer bar.finish()
	}
	ag, err := update.New(cfg, slots, rep)
	if err != nil {
		return err
	}
	// Commands arrive while a cycle runs: a new desired version cancels a
	// download of the old one.
	var (
		cycleMu     sync.Mutex
		cancelCycle context.CancelFunc
	)
	wake := make(chan struct{}, 1)
	go func() {
		for cmd := range rep.Commands() {
			log.Info("command", "name", cmd.Name, "version", cmd.Version)
			switch cmd.Name {
			case wire.CmdDesired:
				changed, err := desired.Set(cmd.Version, cmd.Time)
				if err != nil {
					log.Error("recording desired version", "err", err)
					continue
				}
				if !changed {
					continue
				}
				cycleMu.Lock()
				if cancelCycle != nil {
					cancelCycle()
				}
				cycleMu.Unlock()
			case wire.CmdCheck:
				if line != nil {
					line.poke()
				}
			case wire.CmdConfig:
				if line == nil {
					log.Warn("config command, but the agent runs no SIP line (--sip)")
				} else {
					line.poke()
				}
				continue
			case wire.CmdAttest:
				if att == nil {
					log.Warn("attest command, but the agent has no TPM (--tpm)")
					continue
				}
				go att.attest(ctx, "command")
				continue
			default:
				continue
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	if o.Once {
		// A rollout's desired version is a retained command that follows
		// the subscription's acknowledgement: the cycle reads it only once
		// that has had time to arrive (the TUF refresh before it usually
		// takes longer).
		settled := make(chan struct{})
		desired.settled = settled
		go func() {
			defer close(settled)
			select {
			case <-rep.Subscribed():
				time.Sleep(100 * time.Millisecond)
			case <-time.After(5 * time.Second):
				log.Warn("no command subscription: using the last known desired version")
			case <-ctx.Done():
			}
		}()
	}
	// Every start is a boot: a trial slot is committed or rolled back here.
	if out, err := ag.Start(ctx); err != nil {
		log.Error("boot checks", "outcome", out, "err", err)
		if errors.Is(err, update.ErrRebootPending) {
			if _, rerr := o.Slots.reboot(ctx); rerr != nil {
				log.Error("rebooting into the trial slot", "err", rerr)
			}
		}
		if o.Once {
			return &ExitCodeError{Code: outcomeExit[out], Err: err}
		}
	}
	cycle := func() (update.Outcome, error) {
		cctx, cancel := context.WithCancel(ctx)
		cycleMu.Lock()
		cancelCycle = cancel
		cycleMu.Unlock()
		defer func() {
			cycleMu.Lock()
			cancelCycle = nil
			cycleMu.Unlock()
			cancel()
		}()
		out, info, err := ag.Check(cctx)
		if att != nil && info != nil && (out == update.Installed || out == update.Deferred) {
			if st, err := slots.Status(); err == nil {
				att.measure(ctx, cel.KindInstalled, slot.Other(st.Active), *info)
			}
			att.attest(ctx, "install")
		}
		if out == update.Installed {
			log.Info("rebooting into the new slot")
			inProcess, rerr := o.Slots.reboot(ctx)
			switch {
			case rerr != nil:
				return update.Failed, rerr
			case inProcess:
				// The dir backend reboots by running the boot sequence again.
				if att != nil {
					att.measureBooted(ctx)
				}
				out, err = ag.Start(ctx)
				if att != nil {
					att.attest(ctx, "boot")
				}
			}
		}
		return out, err
	}
	if att != nil && !o.Once {
		go att.run(ctx, o.AttestInterval)
	}
	if line != nil {
		// After the boot checks: a trial slot has been committed or rolled
		// back by now.
		line.start(ctx)
	}
	if o.Once {
		out, err := cycle()
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if ferr := rep.Flush(fctx); ferr != nil {
			log.Warn("events still queued in the outbox", "err", ferr)
		}
		log.Info("cycle done", "outcome", out)
		if err != nil || out != update.Installed {
			return &ExitCodeError{Code: outcomeExit[out], Err: err}
		}
		return nil
	}
	for {
		out, err := cycle()
		if err != nil {
			log.Warn("update cycle", "outcome", out, "err", err)
		}
		next := jitter(o.Interval)
		if out == update.Deferred {
			// Look again soon: the call ends or the window opens.
			next = min(next, time.Minute)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(next):
		}
	}
}

func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/5)+1))
	if err != nil {
		return d
	}
	return d - d/10 + time.Duration(n.Int64())
}

// serverHTTPClient is the client of the server and its mirrors: it
// trusts the CA bundle of --server-ca instead of the system's roots, as
// curl --cacert does (a bundle may hold both); nil (update's default:
// the system's roots) without it. Not the system's roots as well: loading
// them costs the idle agent some 3 MiB of its 15.
func (o *runOptions) serverHTTPClient() (*http.Client, error) {
	cfg, err := o.serverTLS()
	if cfg == nil || err != nil {
		return nil, err
	}
	return &http.Client{Transport: update.NewTransport(cfg)}, nil
}

// serverTLS is the TLS configuration for the server that --server-ca
// asks for: nil (the system's roots) without it.
func (o *runOptions) serverTLS() (*tls.Config, error) {
	if o.ServerCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(o.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("reading server CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("server CA %s holds no PEM certificate", o.ServerCA)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// brokerTLS is the mqtts configuration the flags ask for: nil (the system's
// roots, no client certificate) when none of them is set.
func (o *runOptions) brokerTLS() (*tls.Config, error) {
	if o.BrokerCA == "" && o.BrokerCert == "" && o.BrokerKey == "" {
		return nil, nil
	}
	if (o.BrokerCert == "") != (o.BrokerKey == "") {
		return nil, errors.New("--broker-cert and --broker-key go together")
	}
	if !strings.HasPrefix(o.Broker, "mqtts://") {
		return nil, fmt.Errorf("--broker-ca, --broker-cert and --broker-key need an mqtts:// broker, not %q", o.Broker)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.BrokerCA != "" {
		pem, err := os.ReadFile(o.BrokerCA)
		if err != nil {
			return nil, fmt.Errorf("reading broker CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker CA %s holds no PEM certificate", o.BrokerCA)
		}
	}
	if o.BrokerCert != "" {
		cert, err := tls.LoadX509KeyPair(o.BrokerCert, o.BrokerKey)
		if err != nil {
			return nil, fmt.Errorf("loading the broker client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// fileSHA256 is the hex SHA-256 of a file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
