package voip

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/dialtone-dev/dialtone/agent/voip/media"
)

// IncomingFunc decides about an inbound call while it rings (after the
// 180): it returns the audio to answer with, or an error to refuse the
// call (486 Busy Here). ctx ends when the caller cancels. It may keep c to
// hang up or hold later.
type IncomingFunc func(ctx context.Context, c *Call) (media.Source, media.Sink, error)

// Config configures a Phone.
type Config struct {
	Profile Profile
	// Password is the digest password; it comes sealed from the TPM, never
	// from the profile.
	Password string
	Logger   *slog.Logger
	// Events receives security events, call reports and state changes
	// (default: discarded).
	Events Events
	// Incoming answers inbound calls; nil refuses them (480).
	Incoming IncomingFunc
	// MaxCalls is how many calls may be up at once (default 1); more are
	// refused with 486 Busy Here.
	MaxCalls int
	// UserAgent is the User-Agent header (default "dialtone-agent").
	UserAgent string
	// SecurityReportInterval is the least time between two security
	// reports of one kind (default 30s).
	SecurityReportInterval time.Duration
	// Rand is the source of SRTP keys (default crypto/rand).
	Rand io.Reader
	// ClientCertificate, when set, serves the phone's client certificate
	// to the proxy's TLS handshake: the device certificate from the
	// server's device CA (DESIGN.md §2), whose key stays in the TPM, so
	// that a registrar can require it on top of the digest password.
	ClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

// Phone is one SIP line: it registers with the profile's proxy, places
// and answers calls, and enforces the inbound policy.
type Phone struct {
	profile  Profile
	password string
	log      *slog.Logger
	events   Events
	incoming IncomingFunc
	maxCalls int
	rand     io.Reader

	tlsConf *tls.Config
	ua      *sipgo.UserAgent
	client  *sipgo.Client
	server  *sipgo.Server

	proxies atomic.Pointer[proxySet]
	dest    atomic.Pointer[string]     // resolved proxy address requests are sent to
	localIP atomic.Pointer[netip.Addr] // our address on the route to the proxy
	contact atomic.Pointer[netip.AddrPort]

	count    counters
	security *reporter
	limiter  *inboundLimiter // new inbound requests
	replies  *rate.Limiter   // 503s sent for them

	reregister chan struct{}
	started    atomic.Bool

	mu        sync.Mutex
	calls     map[*Call]struct{}
	dialogs   map[string]*Call // by sipgo dialog ID
	current   *Call
	reg       RegistrationState
	regWait   chan struct{} // closed and replaced on every registration state change
	runErr    error
	runDone   chan struct{}
	regCallID string
	regCSeq   uint32
	fromTag   string
}

// New checks cfg and builds the phone's SIP stack; nothing is sent until
// Run.
func New(cfg Config) (*Phone, error) {
	prof := cfg.Profile
	if err := prof.normalize(); err != nil {
		return nil, err
	}
	if cfg.Password == "" {
		return nil, errors.New("sip password required")
	}
	p := &Phone{
		profile: prof, password: cfg.Password, log: cfg.Logger, events: cfg.Events,
		incoming: cfg.Incoming, maxCalls: cfg.MaxCalls, rand: cfg.Rand,
		reregister: make(chan struct{}, 1),
		calls:      map[*Call]struct{}{}, dialogs: map[string]*Call{},
		regWait: make(chan struct{}), runDone: make(chan struct{}),
		regCallID: uuid.NewString(), fromTag: sip.GenerateTagN(16),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.events == nil {
		p.events = nopEvents{}
	}
	if p.maxCalls <= 0 {
		p.maxCalls = 1
	}
	if p.rand == nil {
		p.rand = rand.Reader
	}
	interval := cfg.SecurityReportInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	p.security = newReporter(p.events, interval)
	p.limiter = newInboundLimiter(prof.InboundRate)
	// Answering every refused request would let a flood through the proxy
	// turn the phone into an amplifier: 503s get their own, equal budget.
	p.replies = rate.NewLimiter(rate.Limit(prof.InboundRate.PerSecond), prof.InboundRate.Burst)
	p.reg = RegistrationState{Status: Unregistered, Proxy: prof.Proxy}

	if prof.CAPEM != "" {
		pool, err := prof.certPool()
		if err != nil {
			return nil, err
		}
		p.tlsConf = &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    pool,
			// Set explicitly so sipgo never puts a resolved IP in its place.
			ServerName:           prof.proxyHost(),
			GetClientCertificate: cfg.ClientCertificate,
		}
	} else {
		// Never used (the profile is not tls), but sipgo must not get its
		// zero config, which would trust the system's roots.
		p.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool(), ServerName: prof.proxyHost()}
	}

	ua := cfg.UserAgent
	if ua == "" {
		ua = "dialtone-agent"
	}
	sipLog := slog.New(&sipLogHandler{next: p.log.Handler(), phone: p}).With("component", "sipgo")
	var err error
	p.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent(ua),
		sipgo.WithUserAgentHostname(prof.Domain),
		sipgo.WithUserAgenTLSConfig(p.tlsConf),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(sipLog),
			sip.WithTransportLayerReadFilter(p.readFilter),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sipLog),
			sip.WithTransactionLayerTerminateOnConnClose(),
			sip.WithTransactionLayerUnhandledResponseHandler(func(*sip.Response) {}),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	p.client, err = sipgo.NewClient(p.ua, sipgo.WithClientLogger(sipLog))
	if err != nil {
		return nil, fmt.Errorf("sip client: %w", err)
	}
	p.client.TxRequester = proxyRequester{p}
	p.server, err = sipgo.NewServer(p.ua, sipgo.WithServerLogger(sipLog))
	if err != nil {
		return nil, fmt.Errorf("sip server: %w", err)
	}
	p.server.OnInvite(p.guard(p.onInvite))
	p.server.OnAck(p.guard(p.onAck))
	p.server.OnBye(p.guard(p.onBye))
	p.server.OnCancel(p.guard(func(req *sip.Request, tx sip.ServerTransaction) {
		// A CANCEL matching a ringing call is handled by the transaction
		// layer; one that reaches here matches nothing.
		p.respond(tx, sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
	}))
	p.server.OnOptions(p.guard(p.onOptions))
	p.server.OnNoRoute(p.guard(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil)
		res.AppendHeader(sip.NewHeader("Allow", allowed))
		p.respond(tx, res)
	}))
	return p, nil
}

const allowed = "INVITE, ACK, CANCEL, BYE, OPTIONS"

// Counters returns the inbound-traffic counters.
func (p *Phone) Counters() Counters {
	return Counters{
		Accepted: p.count.accepted.Load(), Unsolicited: p.count.unsolicited.Load(),
		Malformed: p.count.malformed.Load(), RateLimited: p.count.rateLimited.Load(),
	}
}

// State returns the registration and current-call state.
func (p *Phone) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stateLocked()
}

func (p *Phone) stateLocked() State {
	s := State{Registration: p.reg, Call: CallState{Status: CallIdle}}
	if p.current != nil {
		s.Call = p.current.callState()
	}
	return s
}

// publishState sends the current state to Events; called after changes.
func (p *Phone) publishState() {
	p.events.State(p.State())
}

func (p *Phone) setReg(r RegistrationState) {
	p.mu.Lock()
	r.Proxy = p.profile.Proxy
	p.reg = r
	close(p.regWait)
	p.regWait = make(chan struct{})
	p.mu.Unlock()
	p.publishState()
}

// WaitRegistered waits until the phone is registered. It returns the
// error Run ended with if it ends first, and ctx's error joined with the
// last registration failure when ctx ends first.
func (p *Phone) WaitRegistered(ctx context.Context) error {
	for {
		p.mu.Lock()
		reg, ch := p.reg, p.regWait
		p.mu.Unlock()
		if reg.Status == Registered {
			return nil
		}
		select {
		case <-ch:
		case <-p.runDone:
			p.mu.Lock()
			err := p.runErr
			p.mu.Unlock()
			return errors.Join(ErrNotRegistered, err)
		case <-ctx.Done():
			if reg.Error != "" {
				return fmt.Errorf("%w: last attempt: %s", ctx.Err(), reg.Error)
			}
			return ctx.Err()
		}
	}
}

// Run registers and keeps the registration fresh until ctx ends, then
// hangs up, unregisters and closes the stack. It returns early with an
// error wrapping ErrAuth when the proxy refuses the credentials: retrying
// would not fix them.
func (p *Phone) Run(ctx context.Context) (err error) {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("phone already ran")
	}
	defer func() {
		p.mu.Lock()
		p.runErr = err
		p.mu.Unlock()
		close(p.runDone)
	}()
	defer p.ua.Close()
	bg, stop := context.WithCancel(ctx)
	defer stop()
	go p.flushSecurity(bg)
	if p.profile.KeepAlive > 0 {
		go p.keepAlive(bg)
	}

	expires := p.profile.RegisterExpires
	backoff := time.Second
	for ctx.Err() == nil {
		granted, err := p.register(ctx, expires)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var tooBrief *intervalTooBriefError
			if errors.As(err, &tooBrief) && tooBrief.min > expires {
				expires = tooBrief.min
				continue
			}
			p.log.Warn("sip registration failed", "proxy", p.profile.Proxy, "err", err)
			p.setReg(RegistrationState{Status: RegFailed, Error: err.Error()})
			if errors.Is(err, ErrAuth) {
				p.shutdown(ctx)
				return err
			}
			if !sleep(ctx, jitter(backoff)) {
				break
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		p.setReg(RegistrationState{Status: Registered, Expires: time.Now().Add(granted)})
		p.log.Info("sip registered", "proxy", p.profile.Proxy, "expires", granted)
		// Refresh at about half the granted time: room for a failed
		// attempt and its retries before the binding lapses.
		select {
		case <-ctx.Done():
		case <-time.After(jitter(granted / 2)):
		case <-p.reregister:
			p.log.Info("sip keep-alive failed: registering again")
		}
	}
	p.shutdown(ctx)
	return nil
}

// shutdown hangs up every call and removes the binding, with a few
// seconds for each though ctx has ended.
func (p *Phone) shutdown(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	p.mu.Lock()
	calls := make([]*Call, 0, len(p.calls))
	for c := range p.calls {
		calls = append(calls, c)
	}
	reg := p.reg.Status
	p.mu.Unlock()
	for _, c := range calls {
		if err := c.Hangup(sctx); err != nil {
			p.log.Debug("hanging up at shutdown", "err", err)
		}
	}
	if reg == Registered {
		if _, err := p.register(sctx, 0); err != nil {
			p.log.Warn("sip unregister", "err", err)
		}
	}
	p.setReg(RegistrationState{Status: Unregistered})
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter returns d minus up to 10%, so a fleet does not refresh in step.
func jitter(d time.Duration) time.Duration {
	if d < 10 {
		return d
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/10)))
	if err != nil {
		return d
	}
	return d - time.Duration(n.Int64())
}

// resolve looks the proxy up and finds our address on the route to it.
func (p *Phone) resolve(ctx context.Context) error {
	host, port, _ := net.SplitHostPort(p.profile.Proxy)
	n, _ := strconv.Atoi(port)
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ips, err = net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		if err != nil {
			return fmt.Errorf("resolving proxy %s: %w", host, err)
		}
		if len(ips) == 0 {
			return fmt.Errorf("resolving proxy %s: no address", host)
		}
	}
	set := &proxySet{}
	for _, ip := range ips {
		set.addrs = append(set.addrs, netip.AddrPortFrom(ip.Unmap(), uint16(n)))
	}
	dst := set.addrs[0]
	// Connecting a UDP socket sends nothing; it picks the source address.
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return fmt.Errorf("no route to proxy %s: %w", dst, err)
	}
	la, _ := addrPortOf(c.LocalAddr())
	_ = c.Close()
	ip := la.Addr()
	destStr := dst.String()
	p.proxies.Store(set)
	p.dest.Store(&destStr)
	p.localIP.Store(&ip)
	return nil
}

func (p *Phone) transport() string { return strings.ToUpper(p.profile.Transport) }

func (p *Phone) aor() sip.Uri {
	return sip.Uri{Scheme: "sip", User: p.profile.User, Host: p.profile.Domain}
}

// contactHeader is our Contact: our end of the connection to the proxy,
// which is where the proxy reaches us. Before the first connection the
// port is 0 and proxyRequester fills it in.
func (p *Phone) contactHeader() *sip.ContactHeader {
	h := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: p.profile.User, UriParams: sip.NewParams()}}
	if c := p.contact.Load(); c != nil {
		h.Address.Host = c.Addr().String()
		h.Address.Port = int(c.Port())
	}
	h.Address.UriParams.Add("transport", p.profile.Transport)
	return h
}

// proxyRequester is the single exit of every request the phone sends: it
// sends them all to the proxy (outbound proxy), whatever their
// Request-URI or Route says, and fills in the Contact from the connection.
type proxyRequester struct{ p *Phone }

func (r proxyRequester) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	p := r.p
	dest := p.dest.Load()
	ip := p.localIP.Load()
	if dest == nil || ip == nil {
		return nil, errors.New("proxy not resolved yet")
	}
	req.SetDestination(*dest)
	if via := req.Via(); via != nil && via.Host == "" {
		via.Host = ip.String()
	}
	if req.IsAck() {
		return nil, p.ua.TransportLayer().WriteMsg(req)
	}
	tx, err := p.ua.TransactionLayer().NewClientTransaction(ctx, req)
	if err != nil {
		return nil, err
	}
	if la, ok := addrPortOf(tx.Connection().LocalAddr()); ok {
		c := netip.AddrPortFrom(*ip, la.Port())
		p.contact.Store(&c)
		if ct := req.Contact(); ct != nil && ct.Address.Port == 0 {
			ct.Address.Host = ip.String()
			ct.Address.Port = int(la.Port())
		}
	}
	if err := tx.Init(); err != nil {
		tx.Terminate()
		return nil, err
	}
	return tx, nil
}

type intervalTooBriefError struct{ min int }

func (e *intervalTooBriefError) Error() string {
	return "registration interval too brief: proxy wants " + strconv.Itoa(e.min) + "s"
}

// register sends one REGISTER (expires 0 removes the binding), answering
// a digest challenge, and returns the expiry the proxy granted.
func (p *Phone) register(ctx context.Context, expires int) (time.Duration, error) {
	if err := p.resolve(ctx); err != nil {
		return 0, err
	}
	if expires > 0 {
		p.mu.Lock()
		if p.reg.Status != Registered {
			p.reg.Status = Registering
		}
		p.mu.Unlock()
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req := p.newRegister(expires)
	res, err := p.client.Do(rctx, req)
	if err != nil {
		return 0, p.transportError(err)
	}
	if res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired {
		res, err = p.client.DoDigestAuth(rctx, req, res, sipgo.DigestAuth{Username: p.profile.AuthUser, Password: p.password})
		if err != nil {
			return 0, p.transportError(err)
		}
	}
	p.mu.Lock()
	p.regCSeq = req.CSeq().SeqNo
	p.mu.Unlock()
	switch {
	case res.StatusCode == sip.StatusUnauthorized, res.StatusCode == sip.StatusProxyAuthRequired, res.StatusCode == sip.StatusForbidden:
		return 0, fmt.Errorf("%w: %s answered %d %s for user %q", ErrAuth, p.profile.Proxy, res.StatusCode, res.Reason, p.profile.AuthUser)
	case res.StatusCode == sip.StatusIntervalToBrief:
		if h := res.GetHeader("Min-Expires"); h != nil {
			if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 && n <= 86400 {
				return 0, &intervalTooBriefError{min: n}
			}
		}
		return 0, errors.New("423 interval too brief without a usable Min-Expires")
	case !res.IsSuccess():
		return 0, fmt.Errorf("registration refused: %d %s", res.StatusCode, res.Reason)
	}
	return p.grantedExpiry(res, expires), nil
}

func (p *Phone) transportError(err error) error {
	var cerr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	if errors.As(err, &cerr) || errors.As(err, &uerr) || errors.As(err, &herr) {
		p.security.note(SecurityTLS, p.profile.Proxy)
		return fmt.Errorf("proxy %s: certificate not trusted: %w", p.profile.Proxy, err)
	}
	return fmt.Errorf("proxy %s: %w", p.profile.Proxy, err)
}

func (p *Phone) newRegister(expires int) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: p.profile.Domain})
	req.SetTransport(p.transport())
	from := &sip.FromHeader{DisplayName: p.profile.DisplayName, Address: p.aor(), Params: sip.NewParams()}
	from.Params.Add("tag", p.fromTag)
	to := &sip.ToHeader{Address: p.aor(), Params: sip.NewParams()}
	callID := sip.CallIDHeader(p.regCallID)
	p.mu.Lock()
	p.regCSeq++
	cseq := &sip.CSeqHeader{SeqNo: p.regCSeq, MethodName: sip.REGISTER}
	p.mu.Unlock()
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(cseq)
	req.AppendHeader(p.contactHeader())
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	req.AppendHeader(sip.NewHeader("User-Agent", p.ua.Name()))
	return req
}

// grantedExpiry reads the expiry of our binding from a 200 to REGISTER:
// the expires parameter of our Contact, else the Expires header, else
// what we asked for.
func (p *Phone) grantedExpiry(res *sip.Response, asked int) time.Duration {
	ours := p.contact.Load()
	for _, h := range res.GetHeaders("Contact") {
		ch, ok := h.(*sip.ContactHeader)
		if !ok || ours == nil {
			continue
		}
		if ch.Address.Port != int(ours.Port()) || ch.Address.Host != ours.Addr().String() {
			continue
		}
		if v, ok := ch.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(min(n, 86400)) * time.Second
			}
		}
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
			return time.Duration(min(n, 86400)) * time.Second
		}
	}
	return time.Duration(asked) * time.Second
}

// keepAlive sends OPTIONS to the proxy: any answer (a 407 too) shows the
// path is up; no answer makes Run register again at once, on a fresh
// connection when the old one died.
func (p *Phone) keepAlive(ctx context.Context) {
	t := time.NewTicker(time.Duration(p.profile.KeepAlive) * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.State().Registration.Status != Registered {
			continue
		}
		if err := p.ping(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("sip keep-alive", "err", err)
			select {
			case p.reregister <- struct{}{}:
			default:
			}
		}
	}
}

func (p *Phone) ping(ctx context.Context) error {
	host, port, _ := net.SplitHostPort(p.profile.Proxy)
	n, _ := strconv.Atoi(port)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: n})
	req.SetTransport(p.transport())
	from := &sip.FromHeader{Address: p.aor(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: n}})
	req.AppendHeader(p.contactHeader())
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := p.client.Do(pctx, req)
	return err
}

func (p *Phone) flushSecurity(ctx context.Context) {
	t := time.NewTicker(p.security.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.security.flush()
			return
		case <-t.C:
			p.security.flush()
		}
	}
}

// guard applies the inbound policy before a handler: requests not from
// the proxy are dropped unanswered and counted; requests that start
// something new are rate-limited per caller (503 while the reply budget
// lasts, dropped after); in-dialog requests of our calls always pass, so a flood
// cannot tear down or stall a call that is up.
func (p *Phone) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if !p.fromProxy(req) {
			p.count.unsolicited.Add(1)
			p.security.note(SecurityUnsolicited, req.Transport()+":"+req.Source())
			return
		}
		if !p.inDialog(req) && !req.IsAck() {
			caller := req.Source()
			if f := req.From(); f != nil {
				caller = f.Address.User + "@" + f.Address.Host
			}
			if !p.limiter.allow(caller, time.Now()) {
				p.count.rateLimited.Add(1)
				p.security.note(SecurityRateLimited, req.Method.String()+" from "+req.Source())
				if p.replies.Allow() {
					res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
					res.AppendHeader(sip.NewHeader("Retry-After", "5"))
					p.respond(tx, res)
				}
				return
			}
		}
		p.count.accepted.Add(1)
		h(req, tx)
	}
}

// inDialog reports whether req belongs to one of our calls.
func (p *Phone) inDialog(req *sip.Request) bool {
	return p.callFor(req) != nil
}

func (p *Phone) callFor(req *sip.Request) *Call {
	to := req.To()
	if to == nil {
		return nil
	}
	if _, ok := to.Params.Get("tag"); !ok {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if id, err := sip.DialogIDFromRequestUAS(req); err == nil {
		if c := p.dialogs[id]; c != nil {
			return c
		}
	}
	if id, err := sip.DialogIDFromRequestUAC(req); err == nil {
		if c := p.dialogs[id]; c != nil {
			return c
		}
	}
	return nil
}

func (p *Phone) respond(tx sip.ServerTransaction, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		p.log.Debug("sip respond", "status", res.StatusCode, "err", err)
	}
}

func (p *Phone) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", allowed))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	p.respond(tx, res)
}

func (p *Phone) onAck(req *sip.Request, tx sip.ServerTransaction) {
	if c := p.callFor(req); c != nil {
		c.readAck(req, tx)
	}
}

func (p *Phone) onBye(req *sip.Request, tx sip.ServerTransaction) {
	c := p.callFor(req)
	if c == nil {
		p.respond(tx, sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	c.readBye(req, tx)
}

func (p *Phone) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if _, ok := to.Params.Get("tag"); ok {
			c := p.callFor(req)
			if c == nil {
				p.respond(tx, sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
				return
			}
			c.readReinvite(req, tx)
			return
		}
	}
	p.answer(req, tx)
}

// reserve takes a call slot; false when the phone is busy.
func (p *Phone) reserve(c *Call) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) >= p.maxCalls {
		return false
	}
	p.calls[c] = struct{}{}
	p.current = c
	return true
}

func (p *Phone) release(c *Call) {
	p.mu.Lock()
	delete(p.calls, c)
	for id, d := range p.dialogs {
		if d == c {
			delete(p.dialogs, id)
		}
	}
	if p.current == c {
		p.current = nil
		for o := range p.calls {
			p.current = o
			break
		}
	}
	p.mu.Unlock()
	p.publishState()
}

func (p *Phone) bindDialog(id string, c *Call) {
	p.mu.Lock()
	p.dialogs[id] = c
	p.mu.Unlock()
}
