package voip

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/voip/media"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/testutil/sippeer"
)

// recorder is an Events sink that keeps everything.
type recorder struct {
	mu       sync.Mutex
	security []SecurityEvent
	reports  []CallReport
	states   []State
	changed  chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) Security(e SecurityEvent) {
	r.mu.Lock()
	r.security = append(r.security, e)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) CallEnded(c CallReport) {
	r.mu.Lock()
	r.reports = append(r.reports, c)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) State(s State) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
	r.poke()
}

// waitFor polls cond (under the recorder's lock) until it holds.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

func (r *recorder) securityCount(kind string) uint64 {
	var n uint64
	for _, e := range r.security {
		if e.Kind == kind {
			n += e.Count
		}
	}
	return n
}

type lab struct {
	k     *sippeer.Kamailio
	pki   *testutil.PKI
	caPEM string
}

var labUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

func startLab(t *testing.T) *lab {
	t.Helper()
	pki := testutil.NewPKI(t, t.TempDir(), "sip-ca")
	cert, key, _ := pki.Issue(t, "127.0.0.1", true)
	k := sippeer.StartKamailio(t, sippeer.KamailioOptions{Users: labUsers, CertFile: cert, KeyFile: key})
	b, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	return &lab{k: k, pki: pki, caPEM: string(b)}
}

func (l *lab) profile(user string) Profile {
	return Profile{Proxy: l.k.TLSAddr.String(), Domain: l.k.Domain, User: user, CAPEM: l.caPEM}
}

// startPhone runs a phone until the test ends; done yields Run's error.
func startPhone(t *testing.T, cfg Config) (p *Phone, done <-chan error) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t).With("phone", cfg.Profile.User)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		ch <- p.Run(ctx)
		close(stopped)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			t.Error("phone did not stop within 15s")
		}
	})
	return p, ch
}

func waitRegistered(t *testing.T, p *Phone) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.WaitRegistered(ctx); err != nil {
		t.Fatalf("registering: %v", err)
	}
}

func TestRegister(t *testing.T) {
	l := startLab(t)
	tests := []struct {
		name     string
		user, pw string
		wantErr  error
	}{
		{"right password", "alice", "alice-pw", nil},
		{"wrong password", "bob", "not-bobs", ErrAuth},
		{"unknown user", "mallory", "x", ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			p, done := startPhone(t, Config{Profile: l.profile(tt.user), Password: tt.pw, Events: rec})
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err := p.WaitRegistered(ctx)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if err := l.k.WaitRegistered(ctx, tt.user); err != nil {
					t.Fatal(err)
				}
				cs, _ := l.k.Contacts(ctx, tt.user)
				if len(cs) != 1 || !strings.Contains(cs[0], "transport=tls") {
					t.Errorf("kamailio contacts %v: want one tls contact", cs)
				}
				if st := p.State(); st.Registration.Status != Registered || st.Registration.Expires.IsZero() {
					t.Errorf("state %+v", st)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("WaitRegistered = %v; want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "403") {
				t.Errorf("error does not say what the proxy answered: %v", err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, ErrAuth) {
					t.Errorf("Run = %v; want ErrAuth", err)
				}
			case <-ctx.Done():
				t.Fatal("Run kept retrying refused credentials")
			}
			if st := p.State(); st.Registration.Status == Registered {
				t.Errorf("state %+v after refusal", st)
			}
		})
	}
}

func TestRegisterRefresh(t *testing.T) {
	l := startLab(t)
	prof := l.profile("alice")
	prof.RegisterExpires = 10 // Kamailio's min_expires
	rec := newRecorder()
	p, _ := startPhone(t, Config{Profile: prof, Password: "alice-pw", Events: rec})
	waitRegistered(t, p)
	first := p.State().Registration.Expires
	// The refresh comes at about half the granted 10 s.
	rec.waitFor(t, 12*time.Second, "a refreshed registration", func(r *recorder) bool {
		for _, s := range r.states {
			if s.Registration.Status == Registered && s.Registration.Expires.Sub(first) > 2*time.Second {
				return true
			}
		}
		return false
	})
	// Past the first binding's expiry the phone is still registered.
	time.Sleep(time.Until(first.Add(time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, err := l.k.Registered(ctx, "alice"); !ok || err != nil {
		t.Fatalf("kamailio: registered = %v, %v after the first expiry", ok, err)
	}
}

func TestUntrustedProxyCertificate(t *testing.T) {
	l := startLab(t)
	other := testutil.NewPKI(t, t.TempDir(), "other-ca")
	b, err := os.ReadFile(other.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	prof := l.profile("alice")
	prof.CAPEM = string(b)
	rec := newRecorder()
	p, _ := startPhone(t, Config{Profile: prof, Password: "alice-pw", Events: rec, SecurityReportInterval: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	err = p.WaitRegistered(ctx)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("WaitRegistered = %v; want a certificate error", err)
	}
	rec.waitFor(t, 5*time.Second, "a TLS security event", func(r *recorder) bool { return r.securityCount(SecurityTLS) > 0 })
	if ok, _ := l.k.Registered(context.Background(), "alice"); ok {
		t.Fatal("registered through a proxy whose certificate did not verify")
	}
}

// TestUnsolicitedDropped registers over UDP (the only transport where the
// phone has a socket others can reach) and sends it requests from an
// address that is not the proxy.
func TestUnsolicitedDropped(t *testing.T) {
	l := startLab(t)
	prof := Profile{Proxy: l.k.UDPAddr.String(), Transport: TransportUDP, AllowInsecureTransport: true, Domain: l.k.Domain, User: "alice"}
	rec := newRecorder()
	p, _ := startPhone(t, Config{Profile: prof, Password: "alice-pw", Events: rec, SecurityReportInterval: time.Millisecond})
	waitRegistered(t, p)
	contact := p.contact.Load()
	if contact == nil {
		t.Fatal("no contact address")
	}
	scanner, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer scanner.Close()
	msgs := []string{
		"OPTIONS sip:100@" + contact.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + scanner.LocalAddr().String() + ";branch=z9hG4bK-scan1\r\nFrom: <sip:scan@evil>;tag=1\r\nTo: <sip:100@x>\r\nCall-ID: scan-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:alice@" + contact.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + scanner.LocalAddr().String() + ";branch=z9hG4bK-scan2\r\nFrom: <sip:scan@evil>;tag=2\r\nTo: <sip:alice@x>\r\nCall-ID: scan-2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"this is not SIP\r\n\r\n",
	}
	before := p.Counters()
	for _, m := range msgs {
		if _, err := scanner.WriteToUDP([]byte(m), net.UDPAddrFromAddrPort(*contact)); err != nil {
			t.Fatal(err)
		}
	}
	_ = scanner.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	buf := make([]byte, 2048)
	if n, _, err := scanner.ReadFromUDP(buf); err == nil {
		t.Fatalf("the phone answered a non-proxy source: %q", buf[:n])
	}
	after := p.Counters()
	if got := after.Unsolicited - before.Unsolicited; got != uint64(len(msgs)) {
		t.Errorf("unsolicited counter went up by %d; want %d", got, len(msgs))
	}
	if after.Accepted != before.Accepted {
		t.Errorf("accepted went from %d to %d", before.Accepted, after.Accepted)
	}
	rec.waitFor(t, 5*time.Second, "unsolicited security events", func(r *recorder) bool {
		return r.securityCount(SecurityUnsolicited) >= uint64(len(msgs))
	})
	// The phone still works: it stays registered and answers the proxy.
	if st := p.State(); st.Registration.Status != Registered {
		t.Fatalf("state %+v", st)
	}
}

func TestPlainRTPOfferRefused(t *testing.T) {
	l := startLab(t)
	rec := newRecorder()
	answered := make(chan struct{}, 1)
	p, _ := startPhone(t, Config{Profile: l.profile("alice"), Password: "alice-pw", Events: rec, SecurityReportInterval: time.Millisecond,
		Incoming: func(context.Context, *Call) (media.Source, media.Sink, error) {
			answered <- struct{}{}
			return nil, nil, nil
		}})
	waitRegistered(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := sippeer.RunSipp(ctx, t, sippeer.SippOptions{
		Scenario: sippeer.ScenarioInviteRTP, Target: l.k.UDPAddr.String(), Service: "alice",
		Keys: map[string]string{"domain": l.k.Domain}, Timeout: 15 * time.Second,
	})
	if err != nil || res.Successful != 1 {
		t.Fatalf("sipp (success only on 488) = %+v, %v", res, err)
	}
	select {
	case <-answered:
		t.Fatal("a plain RTP offer reached the answering handler")
	default:
	}
	rec.waitFor(t, 5*time.Second, "a downgrade security event", func(r *recorder) bool { return r.securityCount(SecurityDowngrade) > 0 })
	if s := p.State().Call.Status; s != CallIdle {
		t.Errorf("call state %q after the refusal", s)
	}
}

// TestCallBetweenPhones: alice calls bob through Kamailio over TLS, each
// suite once; bob puts the call on hold and resumes; alice hangs up. Then
// a ringing call is cancelled.
func TestCallBetweenPhones(t *testing.T) {
	l := startLab(t)
	bobRec := newRecorder()
	var mu sync.Mutex
	var bobCalls []*Call
	ring := make(chan struct{}, 4)
	holdRing := false
	bob, _ := startPhone(t, Config{Profile: l.profile("bob"), Password: "bob-pw", Events: bobRec,
		Incoming: func(ctx context.Context, c *Call) (media.Source, media.Sink, error) {
			mu.Lock()
			bobCalls = append(bobCalls, c)
			wait := holdRing
			mu.Unlock()
			ring <- struct{}{}
			if wait {
				<-ctx.Done()
				return nil, nil, ctx.Err()
			}
			return media.NewTone(440, 8000, 30*time.Second), nil, nil
		}})
	waitRegistered(t, bob)

	for _, suite := range []string{SuiteAESCM128SHA180, SuiteAESCM128SHA132, SuiteAEADAES128GCM} {
		t.Run(suite, func(t *testing.T) {
			// Alice offers only this suite; bob takes what is offered.
			prof := l.profile("alice")
			prof.Suites = []string{suite}
			aliceRec := newRecorder()
			alice, _ := startPhone(t, Config{Profile: prof, Password: "alice-pw", Events: aliceRec})
			waitRegistered(t, alice)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := alice.Call(ctx, l.k.URI("bob"), media.NewTone(1000, 8000, 30*time.Second), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(c.Negotiated().Suite); got != suite {
				t.Errorf("negotiated %s", got)
			}
			if st := alice.State().Call; st.Status != CallActive || st.Suite != suite || st.Direction != "out" {
				t.Errorf("alice call state %+v", st)
			}
			waitPackets(t, c, 20)
			mu.Lock()
			bc := bobCalls[len(bobCalls)-1]
			mu.Unlock()
			waitPackets(t, bc, 20)
			if suite == SuiteAESCM128SHA180 {
				// Bob holds: alice must stop sending, then resume.
				if err := bc.Hold(ctx); err != nil {
					t.Fatalf("hold: %v", err)
				}
				if st := alice.State().Call.Status; st != CallHeld {
					t.Errorf("alice state %q while held", st)
				}
				sent := c.Stats().PacketsSent
				time.Sleep(500 * time.Millisecond)
				if d := c.Stats().PacketsSent - sent; d > 2 {
					t.Errorf("alice sent %d packets while held", d)
				}
				if err := bc.Resume(ctx); err != nil {
					t.Fatalf("resume: %v", err)
				}
				sent = c.Stats().PacketsSent
				time.Sleep(500 * time.Millisecond)
				if d := c.Stats().PacketsSent - sent; d < 10 {
					t.Errorf("alice sent only %d packets after resume", d)
				}
				if st := alice.State().Call.Status; st != CallActive {
					t.Errorf("alice state %q after resume", st)
				}
			}
			if err := c.Hangup(ctx); err != nil {
				t.Fatalf("hangup: %v", err)
			}
			select {
			case <-bc.Done():
			case <-ctx.Done():
				t.Fatal("bob's side did not end")
			}
			r := c.Report()
			if r.PacketsReceived < 20 || r.Suite != suite || r.MOS < 3.5 {
				t.Errorf("alice's report %+v", r)
			}
			aliceRec.waitFor(t, 5*time.Second, "a call report", func(r *recorder) bool { return len(r.reports) == 1 })
		})
	}
	alice, _ := startPhone(t, Config{Profile: l.profile("alice"), Password: "alice-pw"})
	waitRegistered(t, alice)

	t.Run("cancel while ringing", func(t *testing.T) {
		mu.Lock()
		holdRing = true
		mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := alice.Call(ctx, "bob", nil, nil)
			errc <- err
		}()
		select {
		case <-ring:
		case <-time.After(10 * time.Second):
			t.Fatal("bob never rang")
		}
		for len(ring) > 0 {
			<-ring
		}
		time.Sleep(200 * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Call = %v; want context.Canceled", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("cancelled call did not return")
		}
		mu.Lock()
		bc := bobCalls[len(bobCalls)-1]
		mu.Unlock()
		select {
		case <-bc.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("bob's ringing call did not end on CANCEL")
		}
		if s := bob.State().Call.Status; s != CallIdle {
			t.Errorf("bob state %q after cancel", s)
		}
	})
}

func waitPackets(t *testing.T, c *Call, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().PacketsReceived < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s call: only %d packets received", c.Direction(), c.Stats().PacketsReceived)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
