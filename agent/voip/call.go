package voip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/dialtone-dev/dialtone/agent/voip/media"
	"github.com/dialtone-dev/dialtone/agent/voip/sdp"
)

// Call is one call, placed by Phone.Call or answered through
// Config.Incoming.
type Call struct {
	p      *Phone
	dir    string // "in" or "out"
	peer   string
	callID string
	ctx    context.Context // ends with the call
	cancel context.CancelFunc
	start  time.Time
	done   chan struct{}
	// finished guards closing done and releasing the phone's slot.
	finished sync.Once

	source media.Source
	sink   media.Sink
	sess   *sdp.Session

	mu         sync.Mutex
	state      string
	uac        *sipgo.DialogClientSession
	uas        *sipgo.DialogServerSession
	local      sdp.Media // what we last offered (for Accept)
	neg        sdp.Negotiated
	rtp, rtcp  *net.UDPConn
	media      *media.Session
	localHold  bool
	remoteHold bool
	ended      bool
	// why is the end reason once a hangup is under way, for watch, which
	// sees the dialog end first.
	why    string
	report CallReport
	// stats of media sessions replaced by a re-INVITE, added to the report
	prior media.Stats
}

// Direction is "in" for an answered call and "out" for a placed one.
func (c *Call) Direction() string { return c.dir }

// Peer is the other party's address of record.
func (c *Call) Peer() string { return c.peer }

// Done is closed when the call has ended.
func (c *Call) Done() <-chan struct{} { return c.done }

// Report is the call's quality report; complete once Done is closed.
func (c *Call) Report() CallReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.report
}

// Negotiated is what the last offer/answer settled.
func (c *Call) Negotiated() sdp.Negotiated {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.neg
}

// Stats are the media figures so far.
func (c *Call) Stats() media.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.media == nil {
		return c.prior
	}
	return addStats(c.prior, c.media.Stats())
}

// State is the call's part of the phone state.
func (c *Call) State() CallState { return c.callState() }

func (c *Call) callState() CallState {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CallState{Status: c.state, Peer: c.peer, Direction: c.dir}
	if c.neg.SRTP {
		s.Suite = string(c.neg.Suite)
	}
	return s
}

func (c *Call) setState(s string) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
	c.p.publishState()
}

// Wait blocks until the call ends (or ctx does) and returns its report.
func (c *Call) Wait(ctx context.Context) (CallReport, error) {
	select {
	case <-c.done:
		return c.Report(), nil
	case <-ctx.Done():
		return CallReport{}, ctx.Err()
	}
}

func (p *Phone) newCall(dir, peer string, src media.Source, sink media.Sink) *Call {
	ctx, cancel := context.WithCancel(context.Background())
	if src == nil {
		src = media.Silence{}
	}
	if sink == nil {
		sink = media.Discard{}
	}
	return &Call{
		p: p, dir: dir, peer: peer, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		source: src, sink: sink, sess: sdp.NewSession(p.profile.User, p.rand), state: CallRinging,
	}
}

func (p *Phone) policy() sdp.Policy {
	pol := sdp.Policy{RequireSRTP: true}
	for _, s := range p.profile.Suites {
		pol.Suites = append(pol.Suites, sdp.Suite(s))
	}
	for _, name := range p.profile.Codecs {
		switch name {
		case "PCMU":
			pol.Codecs = append(pol.Codecs, sdp.PCMU)
		case "PCMA":
			pol.Codecs = append(pol.Codecs, sdp.PCMA)
		}
	}
	return pol
}

// listenMedia opens the RTP/RTCP pair on our address towards the proxy.
func (p *Phone) listenMedia() (rtp, rtcp *net.UDPConn, err error) {
	ip := p.localIP.Load()
	if ip == nil {
		return nil, nil, errors.New("proxy not resolved yet")
	}
	rtp, rtcp, err = media.ListenPair(*ip)
	if err != nil {
		return nil, nil, fmt.Errorf("media sockets: %w", err)
	}
	return rtp, rtcp, nil
}

func udpAddrPort(c *net.UDPConn) netip.AddrPort {
	ap, _ := addrPortOf(c.LocalAddr())
	return ap
}

// offerMedia is our side for an offer: one crypto line per profile suite,
// each with a fresh key.
func (p *Phone) offerMedia(rtp, rtcp *net.UDPConn, dir sdp.Direction) (sdp.Media, error) {
	pol := p.policy()
	m := sdp.Media{RTP: udpAddrPort(rtp), RTCP: udpAddrPort(rtcp), Proto: sdp.ProtoSAVP, Codecs: pol.Codecs, Direction: dir, Ptime: 20}
	for i, s := range pol.Suites {
		cr, err := sdp.NewCrypto(i+1, s, p.rand)
		if err != nil {
			return sdp.Media{}, err
		}
		m.Cryptos = append(m.Cryptos, cr)
	}
	return m, nil
}

// Call places a call to uri (sip:user@domain, or just user for one in
// the profile's domain) and returns once it is answered, with media
// running. Cancelling ctx before the answer cancels the call (CANCEL).
// A refusal is a *CallError.
func (p *Phone) Call(ctx context.Context, uri string, src media.Source, sink media.Sink) (*Call, error) {
	target, err := p.parseTarget(uri)
	if err != nil {
		return nil, err
	}
	c := p.newCall("out", target.Addr(), src, sink)
	if !p.reserve(c) {
		return nil, ErrBusy
	}
	ok := false
	defer func() {
		if !ok {
			c.finish("failed")
		}
	}()
	if p.dest.Load() == nil {
		if err := p.resolve(ctx); err != nil {
			return nil, err
		}
	}
	c.rtp, c.rtcp, err = p.listenMedia()
	if err != nil {
		return nil, err
	}
	c.local, err = p.offerMedia(c.rtp, c.rtcp, sdp.SendRecv)
	if err != nil {
		return nil, err
	}
	offer, err := c.sess.Offer(c.local)
	if err != nil {
		return nil, fmt.Errorf("sdp offer: %w", err)
	}
	req := sip.NewRequest(sip.INVITE, target)
	req.SetTransport(p.transport())
	from := &sip.FromHeader{DisplayName: p.profile.DisplayName, Address: p.aor(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: target.Scheme, User: target.User, Host: target.Host}})
	req.AppendHeader(p.contactHeader())
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.AppendHeader(sip.NewHeader("Allow", allowed))
	req.AppendHeader(sip.NewHeader("User-Agent", p.ua.Name()))
	req.SetBody(offer)
	dua := &sipgo.DialogUA{Client: p.client, ContactHDR: *p.contactHeader()}
	dtx, err := dua.WriteInvite(ctx, req)
	if err != nil {
		return nil, p.transportError(err)
	}
	c.callID = req.CallID().Value()
	c.mu.Lock()
	c.uac = dtx
	c.mu.Unlock()
	p.publishState()
	err = dtx.WaitAnswer(ctx, sipgo.AnswerOptions{
		Username: p.profile.AuthUser, Password: p.password,
		OnResponse: func(res *sip.Response) error {
			if res.StatusCode == 180 || res.StatusCode == 183 {
				p.log.Debug("call ringing", "peer", c.peer)
			}
			return nil
		},
	})
	if err != nil {
		var derr *sipgo.ErrDialogResponse
		if errors.As(err, &derr) {
			return nil, &CallError{Status: derr.Res.StatusCode, Reason: derr.Res.Reason}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("call cancelled: %w", ctx.Err())
		}
		return nil, fmt.Errorf("call: %w", err)
	}
	neg, nerr := c.sess.Accept(dtx.InviteResponse.Body(), c.local, p.policy())
	// The 2xx is acknowledged whatever its SDP says; an unusable answer
	// ends the dialog with a BYE.
	if err := dtx.Ack(ctx); err != nil {
		return nil, fmt.Errorf("sending ACK: %w", err)
	}
	p.bindDialog(dtx.ID, c)
	if nerr != nil {
		p.noteNegotiation(nerr, c.peer)
		c.bye(ctx, nerr)
		return nil, fmt.Errorf("answer refused: %w", nerr)
	}
	if err := c.startMedia(neg, c.rtp, c.rtcp); err != nil {
		c.bye(ctx, err)
		return nil, err
	}
	ok = true
	c.start = time.Now()
	c.setState(CallActive)
	go c.watch()
	p.log.Info("call established", "peer", c.peer, "suite", neg.Suite, "codec", neg.Codec.Name)
	return c, nil
}

func (p *Phone) parseTarget(uri string) (sip.Uri, error) {
	if !strings.Contains(uri, ":") {
		uri = "sip:" + uri
	}
	if !strings.Contains(uri, "@") {
		uri += "@" + p.profile.Domain
	}
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		return sip.Uri{}, fmt.Errorf("bad SIP URI %q: %w", uri, err)
	}
	if u.Scheme != "sip" && u.Scheme != "sips" || u.User == "" || u.Host == "" {
		return sip.Uri{}, fmt.Errorf("bad SIP URI %q: want sip:user@host", uri)
	}
	return u, nil
}

// noteNegotiation reports an SRTP downgrade attempt as a security event.
func (p *Phone) noteNegotiation(err error, peer string) {
	if errors.Is(err, sdp.ErrNotAcceptable) {
		p.security.note(SecurityDowngrade, peer+": "+err.Error())
	}
}

// answer handles a new inbound INVITE: negotiate first (488/400 at once
// for an offer we will not take), then ring, ask Incoming, answer.
func (p *Phone) answer(req *sip.Request, tx sip.ServerTransaction) {
	peer := ""
	if f := req.From(); f != nil {
		peer = f.Address.Addr()
	}
	c := p.newCall("in", peer, nil, nil)
	if !p.reserve(c) {
		p.respond(tx, sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
		return
	}
	c.callID = req.CallID().Value()
	answered := false
	defer func() {
		if !answered {
			c.finish("not answered")
		}
	}()
	if len(req.Body()) == 0 {
		p.refuse(tx, req, 488, "Not Acceptable Here", "an offer in the INVITE is required")
		return
	}
	var err error
	c.rtp, c.rtcp, err = p.listenMedia()
	if err != nil {
		p.respond(tx, sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil))
		return
	}
	ans, neg, err := c.sess.Answer(req.Body(), udpAddrPort(c.rtp), p.policy(), p.rand)
	if err != nil {
		p.refuseNegotiation(tx, req, err, peer)
		return
	}
	dua := &sipgo.DialogUA{Client: p.client, ContactHDR: *p.contactHeader()}
	dtx, err := dua.ReadInvite(req, tx)
	if err != nil {
		p.log.Debug("reading INVITE", "err", err)
		p.respond(tx, sip.NewResponseFromRequest(req, 400, "Bad Request", nil))
		return
	}
	c.mu.Lock()
	c.uas = dtx
	c.neg = neg
	c.mu.Unlock()
	p.bindDialog(dtx.ID, c)
	if err := dtx.Respond(180, "Ringing", nil); err != nil {
		return
	}
	p.publishState()
	if p.incoming == nil {
		_ = dtx.Respond(480, "Temporarily Unavailable", nil)
		return
	}
	// The dialog's context ends when a CANCEL arrives.
	src, sink, err := p.incoming(dtx.Context(), c)
	if dtx.Context().Err() != nil {
		return
	}
	if err != nil {
		_ = dtx.Respond(486, "Busy Here", nil)
		return
	}
	if src != nil {
		c.source = src
	}
	if sink != nil {
		c.sink = sink
	}
	// Media starts before the 200 so that the first packets of an
	// impatient caller are not lost; RespondSDP returns at the ACK.
	if err := c.startMedia(neg, c.rtp, c.rtcp); err != nil {
		p.log.Error("starting media", "err", err)
		_ = dtx.Respond(500, "Server Internal Error", nil)
		return
	}
	answered = true
	c.start = time.Now()
	if err := dtx.RespondSDP(ans); err != nil {
		p.log.Warn("answering call", "peer", peer, "err", err)
		c.end("no ACK")
		return
	}
	c.setState(CallActive)
	go c.watch()
	p.log.Info("call answered", "peer", peer, "suite", neg.Suite, "codec", neg.Codec.Name)
}

// refuse answers a request with status and a Warning saying why.
func (p *Phone) refuse(tx sip.ServerTransaction, req *sip.Request, status int, reason, why string) {
	res := sip.NewResponseFromRequest(req, status, reason, nil)
	res.AppendHeader(sip.NewHeader("Warning", `399 `+p.profile.Domain+` "`+sanitizeWarning(why)+`"`))
	p.respond(tx, res)
}

func (p *Phone) refuseNegotiation(tx sip.ServerTransaction, req *sip.Request, err error, peer string) {
	var nerr *sdp.NegotiationError
	if errors.As(err, &nerr) {
		p.noteNegotiation(err, peer)
		reason := "Not Acceptable Here"
		if nerr.Status == 400 {
			reason = "Bad Request"
		}
		p.refuse(tx, req, nerr.Status, reason, nerr.Reason)
		return
	}
	p.log.Error("answering offer", "err", err)
	p.respond(tx, sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil))
}

func sanitizeWarning(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return '\''
		}
		return r
	}, s)
	return truncate(s, 120)
}

// startMedia runs media for neg on the given sockets, replacing (and
// closing) what ran before.
func (c *Call) startMedia(neg sdp.Negotiated, rtp, rtcp *net.UDPConn) error {
	prof, ok := neg.Suite.Profile()
	if !neg.SRTP || !ok {
		return errors.New("no SRTP suite negotiated")
	}
	ptime := time.Duration(neg.Ptime) * time.Millisecond
	if ptime == 0 {
		ptime = 20 * time.Millisecond
	}
	ms, err := media.Start(c.ctx, media.Config{
		RTP: rtp, RTCP: rtcp, Remote: neg.Remote, RemoteRTCP: neg.RemoteRTCP,
		PayloadType: neg.Codec.PT, Profile: prof, LocalKey: neg.LocalKey, RemoteKey: neg.RemoteKey,
		Source: c.source, Sink: c.sink, Ptime: ptime, Logger: c.p.log.With("component", "media", "call", c.callID),
	})
	if err != nil {
		return fmt.Errorf("starting media: %w", err)
	}
	c.mu.Lock()
	old, oldRTP, oldRTCP := c.media, c.rtp, c.rtcp
	c.media, c.neg, c.rtp, c.rtcp = ms, neg, rtp, rtcp
	c.mu.Unlock()
	if old != nil {
		st, _ := old.Close()
		c.mu.Lock()
		c.prior = addStats(c.prior, st)
		c.mu.Unlock()
	}
	for _, s := range []*net.UDPConn{oldRTP, oldRTCP} {
		if s != nil && s != rtp && s != rtcp {
			_ = s.Close()
		}
	}
	c.applyDirection()
	return nil
}

// applyDirection sends media only when the negotiated direction lets us
// and we have not put the call on hold ourselves.
func (c *Call) applyDirection() {
	c.mu.Lock()
	send := (c.neg.Direction == sdp.SendRecv || c.neg.Direction == sdp.SendOnly) && !c.localHold
	c.remoteHold = c.neg.Direction == sdp.RecvOnly || c.neg.Direction == sdp.Inactive
	held := c.localHold || c.remoteHold
	ms := c.media
	ended := c.ended
	c.mu.Unlock()
	if ms != nil {
		ms.SetSending(send)
	}
	if ended {
		return
	}
	if held {
		c.setState(CallHeld)
	} else {
		c.setState(CallActive)
	}
}

func (c *Call) watch() {
	select {
	case <-c.ctx.Done():
	case <-c.dialogCtx().Done():
		c.mu.Lock()
		why := c.why
		c.mu.Unlock()
		if why == "" {
			why = "dialog ended"
		}
		c.end(why)
	}
}

func (c *Call) setWhy(why string) {
	c.mu.Lock()
	if c.why == "" {
		c.why = why
	}
	c.mu.Unlock()
}

func (c *Call) dialogCtx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.uac != nil:
		return c.uac.Context()
	case c.uas != nil:
		return c.uas.Context()
	}
	return c.ctx
}

// Hangup ends the call: BYE when it is up, CANCEL is for Call's ctx.
func (c *Call) Hangup(ctx context.Context) error {
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return ErrCallEnded
	}
	c.setWhy("local hangup")
	err := c.bye(ctx, nil)
	c.end("local hangup")
	return err
}

func (c *Call) bye(ctx context.Context, why error) error {
	c.mu.Lock()
	uac, uas := c.uac, c.uas
	c.mu.Unlock()
	var req *sip.Request
	switch {
	case uac != nil && uac.InviteResponse != nil:
		req = sip.NewRequest(sip.BYE, remoteTarget(uac.InviteRequest.Recipient, uac.InviteResponse.Contact()))
	case uas != nil:
		req = sip.NewRequest(sip.BYE, remoteTarget(uas.InviteRequest.Recipient, uas.InviteRequest.Contact()))
	default:
		return nil
	}
	req.SetTransport(c.p.transport())
	if why != nil {
		req.AppendHeader(sip.NewHeader("Reason", `SIP;cause=488;text="`+sanitizeWarning(why.Error())+`"`))
	}
	var err error
	if uac != nil {
		err = uac.WriteBye(ctx, req)
	} else {
		err = uas.WriteBye(ctx, req)
	}
	if err != nil {
		return fmt.Errorf("sending BYE: %w", err)
	}
	return nil
}

func remoteTarget(fallback sip.Uri, contact *sip.ContactHeader) sip.Uri {
	if contact != nil {
		return *contact.Address.Clone()
	}
	return *fallback.Clone()
}

// readBye handles the peer's BYE.
func (c *Call) readBye(req *sip.Request, tx sip.ServerTransaction) {
	c.setWhy("remote hangup")
	c.mu.Lock()
	uac, uas := c.uac, c.uas
	c.mu.Unlock()
	var err error
	switch {
	case uac != nil:
		err = uac.ReadBye(req, tx)
	case uas != nil:
		err = uas.ReadBye(req, tx)
	}
	if err != nil {
		c.p.respond(tx, sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	c.end("remote hangup")
}

func (c *Call) readAck(req *sip.Request, tx sip.ServerTransaction) {
	c.mu.Lock()
	uas := c.uas
	c.mu.Unlock()
	if uas != nil {
		// An ACK for a re-INVITE's 2xx carries a later CSeq than the
		// dialog's INVITE; sipgo only knows the first, so a mismatch is
		// expected and harmless here.
		_ = uas.ReadAck(req, tx)
	}
}

// readReinvite answers a re-INVITE: a new offer in the dialog (hold,
// resume, new keys). Media restarts on fresh sockets when the answer
// changes keys or addresses; a changed direction only gates sending.
func (c *Call) readReinvite(req *sip.Request, tx sip.ServerTransaction) {
	c.mu.Lock()
	uac, uas := c.uac, c.uas
	ended := c.ended
	c.mu.Unlock()
	if ended {
		c.p.respond(tx, sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	var d *sipgo.Dialog
	if uac != nil {
		d = &uac.Dialog
	} else {
		d = &uas.Dialog
	}
	if err := d.ReadRequest(req, tx); err != nil {
		c.p.respond(tx, sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil))
		return
	}
	if len(req.Body()) == 0 {
		c.p.refuse(tx, req, 488, "Not Acceptable Here", "offerless re-INVITE not supported")
		return
	}
	rtp, rtcp, err := c.p.listenMedia()
	if err != nil {
		c.p.respond(tx, sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil))
		return
	}
	ans, neg, err := c.sess.Answer(req.Body(), udpAddrPort(rtp), c.p.policy(), c.p.rand)
	if err != nil {
		rtp.Close()
		rtcp.Close()
		// The call goes on as it was (RFC 3261 §14.2).
		c.p.refuseNegotiation(tx, req, err, c.peer)
		return
	}
	if err := c.startMedia(neg, rtp, rtcp); err != nil {
		rtp.Close()
		rtcp.Close()
		c.p.respond(tx, sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil))
		return
	}
	res := sip.NewSDPResponseFromRequest(req, ans)
	res.AppendHeader(c.p.contactHeader())
	c.p.respond(tx, res)
	c.p.log.Info("re-INVITE answered", "peer", c.peer, "direction", neg.Direction)
}

// Hold puts the call on hold: a re-INVITE offering sendonly, and our
// own sending stops.
func (c *Call) Hold(ctx context.Context) error { return c.reinvite(ctx, true) }

// Resume takes the call off hold (re-INVITE offering sendrecv).
func (c *Call) Resume(ctx context.Context) error { return c.reinvite(ctx, false) }

func (c *Call) reinvite(ctx context.Context, hold bool) error {
	c.mu.Lock()
	uac, uas := c.uac, c.uas
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return ErrCallEnded
	}
	dir := sdp.SendRecv
	if hold {
		dir = sdp.SendOnly
	}
	rtp, rtcp, err := c.p.listenMedia()
	if err != nil {
		return err
	}
	fail := func(err error) error {
		rtp.Close()
		rtcp.Close()
		return err
	}
	local, err := c.p.offerMedia(rtp, rtcp, dir)
	if err != nil {
		return fail(err)
	}
	offer, err := c.sess.Offer(local)
	if err != nil {
		return fail(err)
	}
	var req *sip.Request
	if uac != nil {
		req = sip.NewRequest(sip.INVITE, remoteTarget(uac.InviteRequest.Recipient, uac.InviteResponse.Contact()))
	} else {
		req = sip.NewRequest(sip.INVITE, remoteTarget(uas.InviteRequest.Recipient, uas.InviteRequest.Contact()))
	}
	req.SetTransport(c.p.transport())
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(offer)
	var tx sip.ClientTransaction
	if uac != nil {
		tx, err = uac.TransactionRequest(ctx, req)
	} else {
		tx, err = uas.TransactionRequest(ctx, req)
	}
	if err != nil {
		return fail(fmt.Errorf("re-INVITE: %w", err))
	}
	defer tx.Terminate()
	var res *sip.Response
wait:
	for {
		select {
		case res = <-tx.Responses():
			if !res.IsProvisional() {
				break wait
			}
		case <-tx.Done():
			return fail(fmt.Errorf("re-INVITE: %w", tx.Err()))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	if !res.IsSuccess() {
		return fail(&CallError{Status: res.StatusCode, Reason: res.Reason})
	}
	ack := sip.NewRequest(sip.ACK, req.Recipient)
	ack.SetTransport(c.p.transport())
	if uac != nil {
		err = uac.WriteRequest(ack)
	} else {
		err = uas.WriteRequest(ack)
	}
	if err != nil {
		return fail(fmt.Errorf("re-INVITE ACK: %w", err))
	}
	neg, err := c.sess.Accept(res.Body(), local, c.p.policy())
	if err != nil {
		c.p.noteNegotiation(err, c.peer)
		_ = fail(nil)
		c.bye(ctx, err)
		c.end("re-INVITE answer refused")
		return fmt.Errorf("re-INVITE answer refused: %w", err)
	}
	c.mu.Lock()
	c.localHold = hold
	c.local = local
	c.mu.Unlock()
	if err := c.startMedia(neg, rtp, rtcp); err != nil {
		return fail(err)
	}
	return nil
}

// end stops media and reports the call; the SIP side is done by then.
func (c *Call) end(reason string) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		// Another path (the peer's BYE, a failed transaction) is ending
		// the call: wait until it has, so that the caller (Hangup) sees
		// the final report. Bounded: closing media takes milliseconds.
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
		return
	}
	c.ended = true
	ms := c.media
	c.media = nil
	c.mu.Unlock()
	var st media.Stats
	if ms != nil {
		var err error
		st, err = ms.Close()
		if err != nil {
			c.p.log.Debug("closing media", "err", err)
		}
	}
	c.mu.Lock()
	st = addStats(c.prior, st)
	r := CallReport{
		CallID: c.callID, Peer: c.peer, Direction: c.dir, Codec: c.neg.Codec.Name,
		Start: c.start, PacketsSent: st.PacketsSent, PacketsReceived: st.PacketsReceived,
		PacketsLost: st.PacketsLost, Jitter: st.Jitter, RTT: st.RTT, MOS: st.MOS, EndReason: reason,
	}
	if c.neg.SRTP {
		r.Suite = string(c.neg.Suite)
	}
	if !c.start.IsZero() {
		r.Duration = time.Since(c.start)
	}
	if exp := st.PacketsReceived + st.PacketsLost; exp > 0 {
		r.LossPercent = 100 * float64(st.PacketsLost) / float64(exp)
	}
	c.report = r
	c.state = CallIdle
	c.mu.Unlock()
	c.finish(reason)
	if !c.start.IsZero() {
		c.p.events.CallEnded(r)
	}
	c.p.log.Info("call ended", "peer", c.peer, "reason", reason, "sent", r.PacketsSent,
		"received", r.PacketsReceived, "lost", r.PacketsLost, "jitter", r.Jitter, "rtt", r.RTT, "mos", r.MOS)
}

// finish releases what the call holds; safe to call more than once.
func (c *Call) finish(string) {
	c.mu.Lock()
	c.ended = true
	ms, rtp, rtcp := c.media, c.rtp, c.rtcp
	c.media = nil
	c.mu.Unlock()
	if ms != nil {
		_, _ = ms.Close()
	}
	for _, s := range []*net.UDPConn{rtp, rtcp} {
		if s != nil {
			_ = s.Close()
		}
	}
	c.cancel()
	c.finished.Do(func() {
		close(c.done)
		c.p.release(c)
	})
}

// addStats adds the counters of two media sessions of one call; the
// quality figures are the later session's.
func addStats(a, b media.Stats) media.Stats {
	b.PacketsSent += a.PacketsSent
	b.PacketsReceived += a.PacketsReceived
	b.PacketsLost += a.PacketsLost
	return b
}
