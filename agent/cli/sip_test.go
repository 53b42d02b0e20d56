package cli

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/agent/update"
	"github.com/dialtone-dev/dialtone/agent/voip"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// TestSIPFlags: --sip without a TPM, with --once, or its companions
// without --sip are usage errors that say why.
func TestSIPFlags(t *testing.T) {
	base := []string{"--server", "https://127.0.0.1:1", "--broker", "mqtt://127.0.0.1:1", "--model", "dt100", "--hardware", "rev-b",
		"--state-dir", t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sip"}, "--sip needs --tpm"},
		{[]string{"--sip", "--tpm", "swtpm:127.0.0.1:1", "--once"}, "not --once"},
		{[]string{"--sip-group", "lobby"}, "need --sip"},
		{[]string{"--sip-answer"}, "need --sip"},
		{[]string{"--sip", "--tpm", "swtpm:127.0.0.1:1", "--sip-group", "a/b"}, "not a valid group"},
		{[]string{"--sip", "--tpm", "swtpm:127.0.0.1:1", "--sip-answer", "--sip-tone", "440", "--sip-wav-in", "x.wav"}, "exclude each other"},
		{[]string{"--sip", "--tpm", "swtpm:127.0.0.1:1", "--sip-record-dir", "/nonexistent/dir"}, "not a directory"},
	} {
		var out, errb bytes.Buffer
		code := Execute(t.Context(), append(append([]string{}, base...), tc.args...), &out, &errb)
		if code != ExitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", tc.args, code, errb.String(), ExitUsage, tc.want)
		}
	}
}

// TestCallQuality: a call report becomes telemetry that wire accepts,
// whatever figures the media path produced.
func TestCallQuality(t *testing.T) {
	start := time.Now()
	for _, r := range []voip.CallReport{
		{CallID: "c1", Direction: "in", Start: start, Duration: 3 * time.Second, PacketsSent: 150, PacketsReceived: 149, PacketsLost: 1,
			LossPercent: 0.67, Jitter: 1500 * time.Microsecond, RTT: 2 * time.Millisecond, MOS: 4.4, Suite: voip.SuiteAEADAES128GCM, Codec: "PCMU"},
		{CallID: "c2", Direction: "out", MOS: math.NaN(), LossPercent: 180, Jitter: -time.Second, Duration: -time.Second},
		{CallID: strings.Repeat("x", 1000), Direction: "in", Peer: strings.Repeat("p", 1000), MOS: 9, EndReason: strings.Repeat("r", 1000)},
	} {
		tel := wire.Telemetry{Schema: wire.SchemaVersion, ID: "t1", Device: "phone-1", Time: start, Type: wire.TelemetryCallQuality, Call: callQuality(r)}
		if _, err := wire.EncodeTelemetry(tel); err != nil {
			t.Errorf("call %.8s: %v", r.CallID, err)
		}
	}
	q := callQuality(voip.CallReport{Jitter: 1500 * time.Microsecond, RTT: 20 * time.Millisecond, Duration: 2500 * time.Millisecond})
	if q.JitterMS != 1.5 || q.RTTMS != 20 || q.DurationMS != 2500 {
		t.Errorf("figures = %+v", q)
	}
}

// recordingReporter keeps the SIP lines the line publishes.
type recordingReporter struct {
	mu    sync.Mutex
	lines []wire.SIPState
}

func (r *recordingReporter) SetSIP(_ context.Context, s *wire.SIPState) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, *s)
	return nil
}

func (r *recordingReporter) PublishTelemetry(context.Context, wire.Telemetry) error { return nil }

func (r *recordingReporter) Event(_ context.Context, e wire.Event) (wire.Event, error) { return e, nil }

func (r *recordingReporter) last() (wire.SIPState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) == 0 {
		return wire.SIPState{}, false
	}
	return r.lines[len(r.lines)-1], true
}

// TestSIPWaitsForCommittedImage: on a trial boot the line reports that it
// waits for the commit and asks the server for nothing; once the slot is
// committed the image is ready.
func TestSIPWaitsForCommittedImage(t *testing.T) {
	ctx := context.Background()
	d, err := slot.ProvisionDir(filepath.Join(t.TempDir(), "slots"), slot.Info{Model: "m", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := d.BeginInstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Finish(ctx, slot.Info{Model: "m", Version: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetTrial(ctx, in.Slot()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		http.NotFound(w, nil)
	}))
	t.Cleanup(srv.Close)
	rep := &recordingReporter{}
	l := &sipLine{o: &runOptions{SIPCheck: time.Second}, log: slog.New(slog.DiscardHandler), slots: d,
		src: update.ConfigSource{Server: srv.URL, StateDir: t.TempDir()}, rep: rep,
		wake: make(chan struct{}, 1), done: make(chan struct{}), notify: make(chan struct{}, 1)}
	rctx, cancel := context.WithCancel(ctx)
	l.start(rctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, ok := rep.last(); ok && s.Status == wire.SIPWaiting && strings.Contains(s.Reason, "trial boot") {
			break
		}
		if time.Now().After(deadline) {
			s, _ := rep.last()
			t.Fatalf("no waiting state naming the trial boot; last: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	l.wait()
	if s, _ := rep.last(); s.Status != wire.SIPWaiting || s.Reason != "agent stopping" {
		t.Errorf("last state = %+v, want waiting: agent stopping", s)
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("the line asked the server %d times on a trial boot", n)
	}
	if err := d.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if reason, ok := l.imageReady(); !ok {
		t.Fatalf("committed image not ready: %s", reason)
	}
}
