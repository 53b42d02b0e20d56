package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-dev/dialtone/agent/sipcred"
	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/agent/update"
	"github.com/dialtone-dev/dialtone/agent/voip"
	"github.com/dialtone-dev/dialtone/agent/voip/media"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// The daemon's SIP line (dialtone-agent --sip, issue 7 item 4): the stack
// starts only on a verified, committed image, with the profile the TUF
// repository holds for this device (or its group) and the password the
// server releases over mTLS to a trusted device, kept sealed to the TPM.
// Its registration and call state ride in the retained state; each call's
// quality figures go out as telemetry when it ends.

// sipReporter is what the line needs of the MQTT client (report.Client).
type sipReporter interface {
	SetSIP(ctx context.Context, s *wire.SIPState) error
	PublishTelemetry(ctx context.Context, t wire.Telemetry) error
	Event(ctx context.Context, e wire.Event) (wire.Event, error)
}

// Timings of the line.
const (
	// sipSlotPoll is how often a running line checks that the booted image
	// is still the committed one (the dir backend reboots in-process).
	sipSlotPoll = 5 * time.Second
	// sipMinRetry is the first pause after a failed start; it doubles up
	// to the profile check interval.
	sipMinRetry = 2 * time.Second
)

// sipLine runs the SIP stack of the daemon.
type sipLine struct {
	o      *runOptions
	log    *slog.Logger
	device string
	slots  slot.Backend
	src    update.ConfigSource
	creds  *sipcred.Store
	rep    sipReporter
	paths  []string // profile target paths, in order of preference
	// cert serves the TPM-backed device certificate to the proxy's TLS.
	cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)

	wake    chan struct{} // a check command: look at the profile now
	done    chan struct{} // closed when run returned
	started atomic.Bool

	mu      sync.Mutex
	ctx     context.Context // run's, for the reports of the phone's callbacks
	phone   *voip.Phone
	profile string // target path in use
	sha     string // its digest (first 16 hex digits)
	calls   int    // answered so far, for recording names
	pending *wire.SIPState
	notify  chan struct{}
}

// newSIPLine checks what --sip needs and builds the line. hc is the
// server's HTTP client (nil: the system's roots); cert serves the device
// certificate for mTLS.
func newSIPLine(o *runOptions, device string, slots slot.Backend, hc *http.Client,
	cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error), sh sipcred.TPM, rep sipReporter, log *slog.Logger) (*sipLine, error) {
	paths := []string{}
	p, err := wire.ConfigPath(o.Tenant, wire.ConfigDevices, device, wire.ConfigSIPProfile)
	if err != nil {
		return nil, fmt.Errorf("--sip: %w", err)
	}
	paths = append(paths, p)
	if o.SIPGroup != "" {
		g, err := wire.ConfigPath(o.Tenant, wire.ConfigGroups, o.SIPGroup, wire.ConfigSIPProfile)
		if err != nil {
			return nil, fmt.Errorf("--sip-group: %w", err)
		}
		paths = append(paths, g)
	}
	tlsConf, err := o.serverTLS()
	if err != nil {
		return nil, err
	}
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsConf.GetClientCertificate = cert
	mtls := &http.Client{Transport: update.NewTransport(tlsConf), Timeout: time.Minute}
	creds, err := sipcred.New(sipcred.Config{HTTP: mtls, Server: o.Server, Device: device, TPM: sh,
		Dir: filepath.Join(o.StateDir, "sip"), Logger: log})
	if err != nil {
		return nil, err
	}
	return &sipLine{o: o, log: log, device: device, slots: slots, creds: creds, rep: rep, paths: paths, cert: cert,
		src:  update.ConfigSource{Server: o.Server, StateDir: o.StateDir, HTTP: hc},
		wake: make(chan struct{}, 1), done: make(chan struct{}), notify: make(chan struct{}, 1)}, nil
}

// poke makes the line look at its profile now (a check command).
func (l *sipLine) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// inCall reports a call in progress: no slot switch then.
func (l *sipLine) inCall() bool {
	l.mu.Lock()
	ph := l.phone
	l.mu.Unlock()
	return ph != nil && ph.State().Call.Status != voip.CallIdle
}

// start runs the line in the background until ctx ends.
func (l *sipLine) start(ctx context.Context) {
	l.started.Store(true)
	go l.run(ctx)
}

// wait returns once a started line has stopped (the phone unregistered).
func (l *sipLine) wait() {
	if l.started.Load() {
		<-l.done
	}
}

// run keeps the line up until ctx ends.
func (l *sipLine) run(ctx context.Context) {
	defer close(l.done)
	l.mu.Lock()
	l.ctx = ctx
	l.mu.Unlock()
	stopPub, pubDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pubDone)
		l.publisher(ctx, stopPub)
	}()

	retry := sipMinRetry
	pause := func(reason string) {
		l.waiting(reason)
		select {
		case <-ctx.Done():
		case <-l.wake:
		case <-time.After(retry):
		}
		retry = min(2*retry, max(l.o.SIPCheck, sipMinRetry))
	}
	refreshed := false
	for ctx.Err() == nil {
		if reason, ok := l.imageReady(); !ok {
			pause(reason)
			continue
		}
		cf, prof, err := l.fetchProfile(ctx)
		if err != nil {
			pause("no verified sip profile: " + err.Error())
			continue
		}
		cred, err := l.creds.Get(ctx)
		if err != nil {
			pause("no sip password: " + err.Error())
			continue
		}
		err = l.session(ctx, cf, prof, cred)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, voip.ErrAuth) && !refreshed:
			// The password may have changed on the server: fetch it once
			// before telling anyone.
			l.log.Warn("the registrar refused the sip password: fetching it again", "err", err)
			refreshed = true
			if _, err := l.creds.Refresh(ctx); err != nil {
				pause("no sip password: " + err.Error())
			}
		case err != nil:
			refreshed = false
			pause(err.Error())
		default:
			// A restart asked for (new profile, image no longer committed).
			refreshed = false
			retry = sipMinRetry
		}
	}
	l.setPhone(nil, "", "")
	l.setState(&wire.SIPState{Status: wire.SIPWaiting, Reason: "agent stopping"})
	close(stopPub)
	<-pubDone
}

// imageReady reports whether the booted image is verified and committed:
// never SIP on a trial boot, whose image has not passed its checks yet.
func (l *sipLine) imageReady() (string, bool) {
	st, err := l.slots.Status()
	if err != nil {
		return "slot state unreadable: " + err.Error(), false
	}
	if st.Trial {
		return "slot " + st.Active + " is on a trial boot: sip waits for the commit", false
	}
	if st.Active != st.Committed {
		return "slot " + st.Active + " is not the committed slot", false
	}
	return "", true
}

// fetchProfile fetches and parses the device's profile through TUF.
func (l *sipLine) fetchProfile(ctx context.Context) (update.ConfigFile, voip.Profile, error) {
	cf, err := update.FetchConfig(ctx, l.src, voip.MaxProfileSize, l.paths...)
	if err != nil {
		return update.ConfigFile{}, voip.Profile{}, err
	}
	prof, err := voip.ParseProfile(cf.Data)
	if err != nil {
		return update.ConfigFile{}, voip.Profile{}, fmt.Errorf("%s: %w", cf.Path, err)
	}
	return cf, prof, nil
}

// session runs one phone until ctx ends, the image stops being the
// committed one or a new profile is published (nil), or the phone stops
// on its own (its error: voip.ErrAuth when the credentials were refused).
func (l *sipLine) session(ctx context.Context, cf update.ConfigFile, prof voip.Profile, cred sipcred.Credential) error {
	if cred.AuthUser != "" {
		prof.AuthUser = cred.AuthUser
	}
	cfg := voip.Config{Profile: prof, Password: cred.Password, Logger: l.log, Events: sipEvents{l}, ClientCertificate: l.cert}
	if l.o.SIPAnswer {
		cfg.Incoming = l.incoming
	}
	ph, err := voip.New(cfg)
	if err != nil {
		return fmt.Errorf("sip stack: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	l.setPhone(ph, cf.Path, cf.SHA256)
	defer l.setPhone(nil, "", "")
	go func() { runErr <- ph.Run(sctx) }()
	l.log.Info("sip stack started", "profile", cf.Path, "sha256", short(cf.SHA256), "proxy", prof.Proxy)
	l.publishPhone(ph.State())

	slotTick := time.NewTicker(sipSlotPoll)
	defer slotTick.Stop()
	check := time.NewTicker(max(l.o.SIPCheck, time.Second))
	defer check.Stop()
	stop := func(why string) error {
		l.log.Info("stopping the sip stack", "why", why)
		cancel()
		return <-runErr
	}
	for {
		select {
		case err := <-runErr:
			if err == nil && ctx.Err() == nil {
				err = errors.New("sip stack stopped")
			}
			return err
		case <-ctx.Done():
			return stop("agent stopping")
		case <-slotTick.C:
			if reason, ok := l.imageReady(); !ok {
				_ = stop(reason)
				return nil
			}
		case <-l.wake:
			if l.profileChanged(ctx, cf) {
				_ = stop("new sip profile")
				return nil
			}
		case <-check.C:
			if l.profileChanged(ctx, cf) {
				_ = stop("new sip profile")
				return nil
			}
		}
	}
}

// profileChanged reports whether the repository now has another profile
// for the device than cf. A failed check keeps the running one.
func (l *sipLine) profileChanged(ctx context.Context, cf update.ConfigFile) bool {
	next, err := update.FetchConfig(ctx, l.src, voip.MaxProfileSize, l.paths...)
	if err != nil {
		l.log.Warn("checking the sip profile", "err", err)
		return false
	}
	if next.Path == cf.Path && next.SHA256 == cf.SHA256 {
		return false
	}
	l.log.Info("new sip profile", "profile", next.Path, "sha256", short(next.SHA256))
	return true
}

func (l *sipLine) setPhone(ph *voip.Phone, profile, sha string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phone, l.profile, l.sha = ph, profile, short(sha)
}

// incoming answers a call with the audio the flags name.
func (l *sipLine) incoming(_ context.Context, c *voip.Call) (media.Source, media.Sink, error) {
	l.mu.Lock()
	l.calls++
	n := l.calls
	l.mu.Unlock()
	so := sipOptions{Tone: l.o.SIPTone, WAVIn: l.o.SIPWAVIn}
	src, closeSrc, err := so.source(0)
	if err != nil {
		return nil, nil, err
	}
	var rec string
	if l.o.SIPRecordDir != "" {
		rec = filepath.Join(l.o.SIPRecordDir, "call-"+strconv.Itoa(n)+".wav")
	}
	snk, closeSink, err := sink(rec)
	if err != nil {
		closeSrc()
		return nil, nil, err
	}
	l.log.Info("answering a sip call", "peer", c.Peer(), "n", n)
	go func() {
		<-c.Done()
		closeSrc()
		if err := closeSink(); err != nil {
			l.log.Warn("closing the call recording", "err", err)
		}
	}()
	return src, snk, nil
}

// waiting reports the line as not running, for reason.
func (l *sipLine) waiting(reason string) {
	l.log.Info("sip waiting", "reason", reason)
	l.setState(&wire.SIPState{Status: wire.SIPWaiting, Reason: clip(reason, 256)})
}

// publishPhone reports the running phone's state.
func (l *sipLine) publishPhone(s voip.State) {
	l.mu.Lock()
	profile, sha := l.profile, l.sha
	l.mu.Unlock()
	if profile == "" {
		return // a callback of a phone that is stopping
	}
	l.setState(&wire.SIPState{
		Status: wire.SIPRunning, Profile: profile, ProfileSHA256: sha,
		Registration: s.Registration.Status, Proxy: clip(s.Registration.Proxy, 256), Expires: s.Registration.Expires.UTC(),
		Error: clip(s.Registration.Error, 256),
		Call:  s.Call.Status, Peer: clip(s.Call.Peer, 256), Direction: s.Call.Direction, Suite: s.Call.Suite,
	})
}

// setState hands s to the publisher; only the latest state waiting is
// sent, so a burst of changes costs one message.
func (l *sipLine) setState(s *wire.SIPState) {
	l.mu.Lock()
	l.pending = s
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// publisher sends the states setState hands it until stop is closed and
// the last one is out. The report client drops a state equal to the one
// before.
func (l *sipLine) publisher(ctx context.Context, stop <-chan struct{}) {
	for {
		stopping := false
		select {
		case <-l.notify:
		case <-stop:
			stopping = true
		}
		l.mu.Lock()
		s := l.pending
		l.pending = nil
		l.mu.Unlock()
		if s != nil {
			// The last state goes out though ctx has ended: the report
			// client closes after the line.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := l.rep.SetSIP(pctx, s); err != nil {
				l.log.Warn("publishing the sip state", "err", err)
			}
			cancel()
		}
		if stopping {
			return
		}
	}
}

// callQuality converts a call report into telemetry figures, within the
// ranges wire accepts.
func callQuality(r voip.CallReport) *wire.CallQuality {
	fin := func(v, hi float64) float64 {
		if math.IsNaN(v) || v < 0 {
			return 0
		}
		return min(v, hi)
	}
	ms := func(d time.Duration) float64 { return fin(float64(d)/float64(time.Millisecond), math.MaxFloat64) }
	return &wire.CallQuality{
		CallID: clip(r.CallID, 256), Peer: clip(r.Peer, 256), Direction: r.Direction, Suite: r.Suite, Codec: r.Codec,
		Start: r.Start.UTC(), DurationMS: max(r.Duration.Milliseconds(), 0),
		PacketsSent: r.PacketsSent, PacketsReceived: r.PacketsReceived, PacketsLost: r.PacketsLost,
		LossPercent: fin(r.LossPercent, 100), JitterMS: ms(r.Jitter), RTTMS: ms(r.RTT), MOS: fin(r.MOS, 5),
		EndReason: clip(r.EndReason, 256),
	}
}

// sipEvents forwards the phone's reports to MQTT; the phone calls them on
// its own goroutines, so each returns at once.
type sipEvents struct{ l *sipLine }

func (e sipEvents) State(s voip.State) { e.l.publishPhone(s) }

func (e sipEvents) CallEnded(r voip.CallReport) {
	ctx := e.l.runCtx()
	go func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		t := wire.Telemetry{Type: wire.TelemetryCallQuality, Device: e.l.device, Call: callQuality(r)}
		if err := e.l.rep.PublishTelemetry(pctx, t); err != nil {
			e.l.log.Warn("publishing call quality", "err", err)
		}
	}()
}

func (e sipEvents) Security(s voip.SecurityEvent) {
	ctx := e.l.runCtx()
	go func() {
		ev := wire.Event{Type: wire.EventSecurity, Message: fmt.Sprintf("%s ×%d", s.Kind, s.Count),
			Fields: map[string]string{"kind": s.Kind, "count": strconv.FormatUint(s.Count, 10), "last": clip(s.Last, 256)}}
		if _, err := e.l.rep.Event(context.WithoutCancel(ctx), ev); err != nil {
			e.l.log.Warn("recording a sip security event", "err", err)
		}
	}()
}

func (l *sipLine) runCtx() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil {
		return context.Background()
	}
	return l.ctx
}

func short(sha string) string { return sha[:min(16, len(sha))] }

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// validateSIP checks the --sip flags.
func (o *runOptions) validateSIP() error {
	if !o.SIP {
		if o.SIPGroup != "" || o.SIPAnswer || o.SIPRecordDir != "" || o.SIPWAVIn != "" || o.SIPTone != 0 {
			return errors.New("--sip-group, --sip-answer, --sip-tone, --sip-wav-in and --sip-record-dir need --sip")
		}
		return nil
	}
	if o.TPM == "" {
		return errors.New("--sip needs --tpm: the SIP password is released only to an attested device and kept sealed to its TPM")
	}
	if o.Once {
		return errors.New("--sip runs with the daemon, not --once")
	}
	if o.SIPGroup != "" && !wire.ValidID(o.SIPGroup) {
		return fmt.Errorf("--sip-group %q is not a valid group name", o.SIPGroup)
	}
	if o.SIPCheck < time.Second {
		return errors.New("--sip-check-interval must be at least 1s")
	}
	so := sipOptions{Tone: o.SIPTone, WAVIn: o.SIPWAVIn}
	if err := so.Validate(); err != nil {
		return fmt.Errorf("--sip-tone/--sip-wav-in: %w", err)
	}
	if o.SIPRecordDir != "" {
		if fi, err := os.Stat(o.SIPRecordDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("--sip-record-dir %s is not a directory", o.SIPRecordDir)
		}
	}
	return nil
}
