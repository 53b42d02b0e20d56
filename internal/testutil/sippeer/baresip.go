package sippeer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// Baresip event types (the "type" of a ctrl_tcp event) worth waiting for.
const (
	EventRegisterOK      = "REGISTER_OK"
	EventRegisterFail    = "REGISTER_FAIL"
	EventCallIncoming    = "CALL_INCOMING"
	EventCallRinging     = "CALL_RINGING"
	EventCallProgress    = "CALL_PROGRESS"
	EventCallEstablished = "CALL_ESTABLISHED"
	EventCallClosed      = "CALL_CLOSED"
)

// maxNetstring bounds one ctrl_tcp message from baresip.
const maxNetstring = 64 << 10

// BaresipOptions configures StartBaresip.
type BaresipOptions struct {
	// Proxy is the registrar and outbound proxy (Kamailio's TLSAddr); all
	// SIP goes there over TLS.
	Proxy netip.AddrPort
	// Domain, User and Password make the account sip:User@Domain with
	// digest password Password. Domain is DefaultDomain if empty.
	Domain, User, Password string
	// CAFile is given to baresip as sip_cafile. Note: baresip 1.0.0 with
	// libre 1.1.0 does not fail a TLS handshake on an untrusted server
	// certificate, so this does not make it verify the proxy.
	CAFile string
	// MediaEnc is the account's mediaenc: "srtp-mand" (the default: SDES
	// SRTP, plain RTP refused), "srtp" (optional) or "none".
	MediaEnc string
	// AutoAnswer answers incoming calls at once (answermode=auto).
	AutoAnswer bool
	// PlayWAV is sent as the call's audio (aufile): 8000 Hz, mono, 16-bit
	// PCM (see WriteWAV). Silence if empty.
	PlayWAV string
	// Record dumps received audio to a WAV file per call (sndfile); see
	// ReceivedWAV.
	Record bool
	// Codecs is the account's audio_codecs; "pcmu,pcma" if empty.
	Codecs string
	// NoRegister leaves the account unregistered (regint=0): it can still
	// make calls through Proxy.
	NoRegister bool
}

// Baresip is a running baresip user agent driven over its ctrl_tcp
// interface.
type Baresip struct {
	// URI is the account's address of record, "sip:user@domain".
	URI string
	// Dir is baresip's configuration directory (and where recordings go).
	Dir string

	t       testing.TB
	account string // the accounts line
	proc    *proc
	logs    testutil.SyncBuffer
	conn    net.Conn

	wmu   sync.Mutex // serialises commands
	mu    sync.Mutex
	token int
	resps map[string]chan BaresipResponse
	evs   []BaresipEvent
	used  []bool        // evs[i] was returned by WaitEvent
	evc   chan struct{} // closed and replaced when an event arrives
	rerr  error         // why the ctrl_tcp reader stopped
}

// BaresipEvent is an event baresip reported over ctrl_tcp.
type BaresipEvent struct {
	Class      string `json:"class"`
	Type       string `json:"type"`
	Param      string `json:"param"`
	AccountAOR string `json:"accountaor"`
	Direction  string `json:"direction"`
	PeerURI    string `json:"peeruri"`
	ID         string `json:"id"`
}

// BaresipResponse is baresip's answer to a command.
type BaresipResponse struct {
	OK    bool   `json:"ok"`
	Data  string `json:"data"`
	Token string `json:"token"`
}

// ErrCommandFailed is returned when baresip answers a command with ok=false.
var ErrCommandFailed = errors.New("baresip command failed")

// StartBaresip writes a configuration and account for o to a temporary
// directory, starts baresip headless, connects to its ctrl_tcp port and
// adds the account, which starts registering unless NoRegister. It does not
// wait for the registration: use WaitEvent(ctx, EventRegisterOK).
// baresip is killed in t.Cleanup and its log goes to the test log if the
// test failed.
func StartBaresip(t testing.TB, o BaresipOptions) *Baresip {
	t.Helper()
	bin := testutil.RequireBinary(t, "baresip", Hint)
	if !o.Proxy.IsValid() || o.User == "" {
		t.Fatal("sippeer: BaresipOptions needs Proxy and User")
	}
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if o.MediaEnc == "" {
		o.MediaEnc = "srtp-mand"
	}
	if o.Codecs == "" {
		o.Codecs = "pcmu,pcma"
	}
	for _, s := range []string{o.User, o.Password, o.Domain, o.Codecs, o.MediaEnc, o.PlayWAV, o.CAFile} {
		if strings.ContainsAny(s, ";<>\"\n\r @") {
			t.Fatalf("sippeer: %q cannot go into a baresip configuration", s)
		}
	}
	b := &Baresip{
		URI:   "sip:" + o.User + "@" + o.Domain,
		Dir:   t.TempDir(),
		t:     t,
		resps: map[string]chan BaresipResponse{},
		evc:   make(chan struct{}),
	}
	ctrl := loopback(freeTCPPort(t))
	if err := b.writeConfig(o, ctrl); err != nil {
		t.Fatalf("sippeer: writing baresip config: %v", err)
	}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("baresip %s log:\n%s", b.URI, tail(b.logs.String(), 16000))
		}
	})
	cmd := exec.Command(bin, "-f", b.Dir)
	cmd.Dir = b.Dir
	// Without a terminal the stdio module is not loaded; stdin stays empty.
	p, err := startProc(cmd, &b.logs)
	if err != nil {
		t.Fatalf("sippeer: %v", err)
	}
	b.proc = p
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", ctrl.String(), 200*time.Millisecond)
		if err == nil {
			b.conn = c
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("sippeer: baresip exited at start: %s\n%s", cmd.ProcessState, b.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sippeer: baresip ctrl_tcp not listening on %s after %s\n%s", ctrl, readyTimeout, b.logs.String())
		}
	}
	go b.read()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if _, err := b.Command(ctx, "uanew", b.account); err != nil {
		t.Fatalf("sippeer: adding the baresip account: %v\n%s", err, b.logs.String())
	}
	return b
}

func (b *Baresip) writeConfig(o BaresipOptions, ctrl netip.AddrPort) error {
	var c strings.Builder
	fmt.Fprintf(&c, "poll_method\tepoll\nsip_listen\t127.0.0.1:%d\n", testutil.FreePorts(b.t, 2)) // baresip listens for TLS on the next port
	if o.CAFile != "" {
		fmt.Fprintf(&c, "sip_cafile\t%s\n", o.CAFile)
	}
	// Media on loopback, where captures look.
	c.WriteString("net_interface\t127.0.0.1\n")
	play := o.PlayWAV
	if play == "" {
		// ausine works at 48 kHz only; aufile needs the codec's 8 kHz.
		play = filepath.Join(b.Dir, "silence.wav")
		if err := WriteWAV(play, 8000, make([]int16, 8000*60)); err != nil {
			return err
		}
	}
	// No sound card: received audio goes to an aubridge device nobody
	// reads (and to a file with Record).
	fmt.Fprintf(&c, "audio_source\taufile,%s\naudio_player\taubridge,sink\naudio_alert\taubridge,sink\n", play)
	c.WriteString("audio_buffer\t20-160\nrtp_ports\t20000-59999\nrtp_timeout\t0\ncall_local_timeout\t30\ncall_max_calls\t4\n")
	c.WriteString("module_path\t/usr/lib/baresip/modules\n")
	for _, m := range []string{"g711", "aufile", "aubridge", "srtp"} {
		fmt.Fprintf(&c, "module\t%s.so\n", m)
	}
	if o.Record {
		fmt.Fprintf(&c, "module\tsndfile.so\nsnd_path\t%s\n", b.Dir)
	}
	c.WriteString("module_app\taccount.so\nmodule_app\tmenu.so\nmodule_app\tctrl_tcp.so\n")
	fmt.Fprintf(&c, "ctrl_tcp_listen\t%s\n", ctrl)
	if err := os.WriteFile(filepath.Join(b.Dir, "config"), []byte(c.String()), 0o600); err != nil {
		return err
	}
	// No transport in the AOR: baresip would append it to every dialled
	// URI; the outbound proxy URI alone makes all SIP go over TLS.
	acct := fmt.Sprintf("<%s>;auth_pass=%s;outbound=\"sip:%s;transport=tls\";mediaenc=%s;audio_codecs=%s;medianat=;regint=%d",
		b.URI, o.Password, o.Proxy, o.MediaEnc, o.Codecs, map[bool]int{false: 300, true: 0}[o.NoRegister])
	if o.AutoAnswer {
		acct += ";answermode=auto"
	}
	b.account = acct
	// The account is added over ctrl_tcp (uanew) once connected: events
	// sent before a control client connects are lost.
	for _, f := range []string{"accounts", "contacts"} {
		if err := os.WriteFile(filepath.Join(b.Dir, f), nil, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (b *Baresip) stop() {
	if b.conn != nil {
		_ = b.conn.Close()
	}
	if b.proc != nil {
		b.proc.stop()
	}
}

// Logs returns what baresip printed so far.
func (b *Baresip) Logs() string { return b.logs.String() }

// read dispatches ctrl_tcp messages: responses to their command, events to
// the event list.
func (b *Baresip) read() {
	r := bufio.NewReader(b.conn)
	var err error
	for {
		var msg []byte
		if msg, err = ReadNetstring(r, maxNetstring); err != nil {
			break
		}
		var m struct {
			Response bool `json:"response"`
			Event    bool `json:"event"`
			BaresipResponse
			BaresipEvent
		}
		if err = json.Unmarshal(msg, &m); err != nil {
			err = fmt.Errorf("decoding ctrl_tcp message %q: %w", msg, err)
			break
		}
		b.mu.Lock()
		switch {
		case m.Response:
			if ch, ok := b.resps[m.Token]; ok {
				ch <- m.BaresipResponse
				delete(b.resps, m.Token)
			}
		case m.Event:
			b.evs = append(b.evs, m.BaresipEvent)
			b.used = append(b.used, false)
			close(b.evc)
			b.evc = make(chan struct{})
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.rerr = err
	close(b.evc)
	b.evc = nil
	b.mu.Unlock()
}

// Command sends a long command (as typed after "/" in baresip's menu, e.g.
// "dial", "hangup", "accept", "reginfo") and returns baresip's answer.
func (b *Baresip) Command(ctx context.Context, command, params string) (BaresipResponse, error) {
	b.mu.Lock()
	if b.evc == nil {
		err := b.rerr
		b.mu.Unlock()
		return BaresipResponse{}, fmt.Errorf("baresip control connection closed: %w", err)
	}
	b.token++
	tok := strconv.Itoa(b.token)
	ch := make(chan BaresipResponse, 1)
	b.resps[tok] = ch
	b.mu.Unlock()
	msg, err := json.Marshal(map[string]string{"command": command, "params": params, "token": tok})
	if err != nil {
		return BaresipResponse{}, err
	}
	b.wmu.Lock()
	if d, ok := ctx.Deadline(); ok {
		_ = b.conn.SetWriteDeadline(d)
	}
	_, err = fmt.Fprintf(b.conn, "%d:%s,", len(msg), msg)
	b.wmu.Unlock()
	if err != nil {
		return BaresipResponse{}, fmt.Errorf("sending %s to baresip: %w", command, err)
	}
	select {
	case r := <-ch:
		if !r.OK {
			return r, fmt.Errorf("%w: %s %s: %s", ErrCommandFailed, command, params, r.Data)
		}
		return r, nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.resps, tok)
		b.mu.Unlock()
		return BaresipResponse{}, fmt.Errorf("waiting for baresip to answer %s: %w", command, ctx.Err())
	}
}

// Dial calls uri (e.g. "sip:bob@dialtone.test").
func (b *Baresip) Dial(ctx context.Context, uri string) error {
	_, err := b.Command(ctx, "dial", uri)
	return err
}

// Hangup ends the current call.
func (b *Baresip) Hangup(ctx context.Context) error {
	_, err := b.Command(ctx, "hangup", "")
	return err
}

// Accept answers the current incoming call (without AutoAnswer).
func (b *Baresip) Accept(ctx context.Context) error {
	_, err := b.Command(ctx, "accept", "")
	return err
}

// Events returns the events received so far.
func (b *Baresip) Events() []BaresipEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BaresipEvent(nil), b.evs...)
}

// failureOf maps an event to the one that means it will not come.
var failureOf = map[string]string{
	EventRegisterOK:      EventRegisterFail,
	EventCallEstablished: EventCallClosed,
}

// ErrEventFailed is returned by WaitEvent when the awaited event will not
// come: registration failed, or the call closed before it was established.
var ErrEventFailed = errors.New("baresip event failed")

// WaitEvent returns the oldest event of type typ (e.g.
// EventCallEstablished) that no earlier WaitEvent returned, waiting for one
// if needed. Waiting for EventRegisterOK fails on an EventRegisterFail, and
// for EventCallEstablished on an EventCallClosed, with ErrEventFailed.
func (b *Baresip) WaitEvent(ctx context.Context, typ string) (BaresipEvent, error) {
	seen := 0
	b.mu.Lock()
	for {
		for i := seen; i < len(b.evs); i++ {
			e := b.evs[i]
			if e.Type == typ && !b.used[i] {
				b.used[i] = true
				b.mu.Unlock()
				return e, nil
			}
			if e.Type == failureOf[typ] && failureOf[typ] != "" && !b.used[i] {
				b.used[i] = true
				b.mu.Unlock()
				return e, fmt.Errorf("%w: baresip %s waiting for %s: %s %s", ErrEventFailed, b.URI, typ, e.Type, e.Param)
			}
		}
		seen = len(b.evs)
		ch, rerr := b.evc, b.rerr
		b.mu.Unlock()
		if ch == nil {
			return BaresipEvent{}, fmt.Errorf("waiting for %s: baresip control connection closed: %w", typ, rerr)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return BaresipEvent{}, fmt.Errorf("waiting for baresip %s event %s: %w", b.URI, typ, ctx.Err())
		}
		b.mu.Lock()
	}
}

// ReceivedWAV returns the WAV file of audio received in the most recent
// call (Record must be set); baresip closes it when the call ends.
func (b *Baresip) ReceivedWAV() (string, error) {
	m, err := filepath.Glob(filepath.Join(b.Dir, "dump-*-dec.wav"))
	if err != nil {
		return "", err
	}
	if len(m) == 0 {
		return "", errors.New("baresip recorded no call")
	}
	// Names embed a sortable timestamp.
	slices.Sort(m)
	return m[len(m)-1], nil
}

// ReadNetstring reads one netstring ("LEN:DATA,") of at most max bytes of
// data, as baresip's ctrl_tcp frames its JSON.
func ReadNetstring(r *bufio.Reader, max int) ([]byte, error) {
	n := 0
	for digits := 0; ; digits++ {
		c, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if c == ':' && digits > 0 {
			break
		}
		if c < '0' || c > '9' || digits >= 9 {
			return nil, fmt.Errorf("netstring: bad length byte %q", c)
		}
		n = n*10 + int(c-'0')
	}
	if n > max {
		return nil, fmt.Errorf("netstring: %d bytes exceeds %d", n, max)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("netstring: %w", err)
	}
	if buf[n] != ',' {
		return nil, errors.New("netstring: missing trailing comma")
	}
	return buf[:n], nil
}
