package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dialtone-dev/dialtone/agent/voip"
	"github.com/dialtone-dev/dialtone/agent/voip/media"
	"github.com/spf13/cobra"
)

// sipOptions are the flags `call` and `answer` share: the SIP profile, the
// password and the audio to play and record.
type sipOptions struct {
	Profile      string
	PasswordFile string
	Tone         float64
	WAVIn        string
	WAVOut       string
	LogLevel     string
	// TLSCert and TLSKey are a client certificate for the proxy's TLS
	// (the daemon uses its TPM-backed device certificate instead).
	TLSCert, TLSKey string
}

func (o *sipOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Profile, "profile", "", "SIP profile (JSON, as delivered by the server)")
	f.StringVar(&o.PasswordFile, "password-file", "", "file holding the SIP password (one line)")
	f.Float64Var(&o.Tone, "tone", 0, "send a sine tone of this frequency in Hz (default: silence)")
	f.StringVar(&o.WAVIn, "wav-in", "", "send this 8 kHz 16-bit mono WAV file")
	f.StringVar(&o.WAVOut, "wav-out", "", "record what the other party sends to this WAV file")
	f.StringVar(&o.LogLevel, "log-level", "warn", "log level: debug, info, warn, error")
	f.StringVar(&o.TLSCert, "tls-cert", "", "client certificate (PEM) to present to a proxy that requires one")
	f.StringVar(&o.TLSKey, "tls-key", "", "the client certificate's key (PEM)")
	_ = cmd.MarkFlagRequired("profile")
	_ = cmd.MarkFlagRequired("password-file")
}

func (o *sipOptions) Validate() error {
	if o.Tone != 0 && o.WAVIn != "" {
		return errors.New("--tone and --wav-in exclude each other")
	}
	if o.Tone < 0 || o.Tone > 3999 {
		return errors.New("--tone: want 1-3999 Hz (8 kHz sampling)")
	}
	return nil
}

// phone reads the profile and password and builds the phone.
func (o *sipOptions) phone(stderr io.Writer, cfg voip.Config) (*voip.Phone, error) {
	b, err := readBounded(o.Profile, voip.MaxProfileSize)
	if err != nil {
		return nil, fmt.Errorf("reading profile: %w", err)
	}
	prof, err := voip.ParseProfile(b)
	if err != nil {
		return nil, &ExitCodeError{Code: ExitUsage, Err: err}
	}
	pw, err := readBounded(o.PasswordFile, 4096)
	if err != nil {
		return nil, fmt.Errorf("reading password: %w", err)
	}
	cfg.Profile = prof
	cfg.Password = strings.TrimRight(string(pw), "\r\n")
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, &ExitCodeError{Code: ExitUsage, Err: errors.New("--tls-cert and --tls-key go together")}
	}
	if o.TLSCert != "" {
		c, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		cfg.ClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		lvl = slog.LevelWarn
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return voip.New(cfg)
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// source is what to send for d (0: as long as the call lasts).
func (o *sipOptions) source(d time.Duration) (media.Source, func(), error) {
	switch {
	case o.WAVIn != "":
		r, err := media.OpenWAV(o.WAVIn)
		if err != nil {
			return nil, nil, err
		}
		return r, func() { _ = r.Close() }, nil
	case o.Tone > 0:
		if d == 0 {
			d = 24 * time.Hour
		}
		return media.NewTone(o.Tone, 8000, d), func() {}, nil
	}
	return media.Silence{}, func() {}, nil
}

// sink records to path ("" discards).
func sink(path string) (media.Sink, func() error, error) {
	if path == "" {
		return media.Discard{}, func() error { return nil }, nil
	}
	w, err := media.CreateWAV(path)
	if err != nil {
		return nil, nil, err
	}
	return w, w.Close, nil
}

// printer writes call progress to stdout.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *printer) Security(e voip.SecurityEvent) {
	p.printf("security: %s ×%d (%s)", e.Kind, e.Count, e.Last)
}

func (p *printer) CallEnded(r voip.CallReport) {
	p.printf("call ended (%s) after %s: sent %d, received %d, lost %d (%.1f%%), jitter %s, rtt %s, MOS %.2f",
		r.EndReason, r.Duration.Round(time.Millisecond), r.PacketsSent, r.PacketsReceived, r.PacketsLost,
		r.LossPercent, r.Jitter.Round(time.Microsecond), r.RTT.Round(time.Microsecond), r.MOS)
}

func (p *printer) State(voip.State) {}

// startPhone runs ph in the background and waits for its registration;
// profile names the profile file in messages.
func startPhone(ctx context.Context, ph *voip.Phone, out *printer, profile string) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ph.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := ph.WaitRegistered(rctx); err != nil {
		stop()
		return nil, fmt.Errorf("registering (profile %s): %w", profile, err)
	}
	out.printf("registered with %s (profile %s)", ph.State().Registration.Proxy, profile)
	return stop, nil
}

type callOptions struct {
	sipOptions
	Duration time.Duration
}

func callCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &callOptions{}
	cmd := &cobra.Command{
		Use:   "call sip:USER@DOMAIN",
		Short: "Register with a SIP profile, place one encrypted call, print its progress and quality figures",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			if o.Duration <= 0 {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("--duration must be positive")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runCall(ctx, o, args[0], stdout, stderr)
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "hang up after this long")
	return cmd
}

func runCall(ctx context.Context, o *callOptions, uri string, stdout, stderr io.Writer) error {
	out := &printer{w: stdout}
	ph, err := o.phone(stderr, voip.Config{Events: out})
	if err != nil {
		return err
	}
	stopPhone, err := startPhone(ctx, ph, out, o.Profile)
	if err != nil {
		return err
	}
	defer stopPhone()
	src, closeSrc, err := o.source(o.Duration)
	if err != nil {
		return err
	}
	defer closeSrc()
	snk, closeSink, err := sink(o.WAVOut)
	if err != nil {
		return err
	}
	out.printf("calling %s", uri)
	c, err := ph.Call(ctx, uri, src, snk)
	if err != nil {
		_ = closeSink()
		return err
	}
	neg := c.Negotiated()
	out.printf("answered: %s, %s, %d ms packets", neg.Suite, neg.Codec.Name, neg.Ptime)
	select {
	case <-time.After(o.Duration):
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = c.Hangup(hctx)
		cancel()
	case <-c.Done():
	case <-ctx.Done():
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = c.Hangup(hctx)
		cancel()
	}
	<-c.Done()
	return errors.Join(err, closeSink())
}

type answerOptions struct {
	sipOptions
	Count int
}

func answerCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &answerOptions{}
	cmd := &cobra.Command{
		Use:   "answer",
		Short: "Register with a SIP profile and answer encrypted calls, printing their progress and quality figures",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if err := o.Validate(); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			if o.Count < 1 {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("--count must be at least 1")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runAnswer(ctx, o, stdout, stderr)
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().IntVar(&o.Count, "count", 1, "exit after this many calls have ended")
	return cmd
}

// wavName is the recording of call n: path itself for a single call,
// NAME-n.wav when there are several.
func wavName(path string, n, count int) string {
	if path == "" || count == 1 {
		return path
	}
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + strconv.Itoa(n) + ext
}

func runAnswer(ctx context.Context, o *answerOptions, stdout, stderr io.Writer) error {
	out := &printer{w: stdout}
	var (
		mu      sync.Mutex
		n       int
		closers []func() error
		errs    []error
	)
	ended := make(chan struct{}, o.Count)
	incoming := func(_ context.Context, c *voip.Call) (media.Source, media.Sink, error) {
		mu.Lock()
		defer mu.Unlock()
		if n >= o.Count {
			return nil, nil, errors.New("enough calls")
		}
		n++
		out.printf("incoming call %d from %s: answering", n, c.Peer())
		src, closeSrc, err := o.source(0)
		if err != nil {
			return nil, nil, err
		}
		snk, closeSink, err := sink(wavName(o.WAVOut, n, o.Count))
		if err != nil {
			closeSrc()
			return nil, nil, err
		}
		closers = append(closers, func() error { closeSrc(); return closeSink() })
		go func() {
			<-c.Done()
			ended <- struct{}{}
		}()
		return src, snk, nil
	}
	ph, err := o.phone(stderr, voip.Config{Events: out, Incoming: incoming})
	if err != nil {
		return err
	}
	stopPhone, err := startPhone(ctx, ph, out, o.Profile)
	if err != nil {
		return err
	}
	out.printf("waiting for %d call(s)", o.Count)
	for i := 0; i < o.Count; i++ {
		select {
		case <-ended:
		case <-ctx.Done():
			i = o.Count
		}
	}
	stopPhone()
	mu.Lock()
	defer mu.Unlock()
	for _, c := range closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
