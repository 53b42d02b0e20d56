package report

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// session is one MQTT connection, made by its own paho client.
type session struct {
	pc       mqtt.Client
	lost     chan struct{} // closed when the connection is gone
	lostOnce sync.Once
	sends    sync.WaitGroup // awaitPuback goroutines
	// since is when the connection was made: the Conn of its will and of
	// every state sent on it.
	since time.Time

	mu   sync.Mutex
	conn net.Conn // the network connection under pc, once dialled
}

func (s *session) markLost() { s.lostOnce.Do(func() { close(s.lost) }) }

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// abort closes the network connection under paho, which then reports the
// connection lost (and completes every pending token with an error).
func (s *session) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		_ = s.conn.Close()
	}
}

// run is the connection manager: connect, serve until the connection is
// lost, back off, again, until Close.
func (c *Client) run() {
	defer close(c.done)
	attempt := 0
	for {
		sess, err := c.dial(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.setStatus(nil, err)
			attempt++
			wait := backoff(attempt)
			c.log.Warn("connecting failed", "broker", c.broker.Host, "error", err, "retry_in", wait.Round(time.Millisecond))
			if !sleep(c.ctx, wait) {
				return
			}
			continue
		}
		since := time.Now()
		c.log.Info("connected", "broker", c.broker.Host)
		c.serve(sess)
		c.setStatus(nil, nil)
		closing := c.ctx.Err() != nil
		if closing {
			sess.pc.Disconnect(uint(quiesce / time.Millisecond)) // clean: the broker drops the will
		} else {
			sess.pc.Disconnect(0) // already lost; make sure paho's workers stopped
		}
		sess.sends.Wait() // every token is complete once paho disconnected
		if closing {
			return
		}
		if time.Since(since) >= stableAfter {
			attempt = 1
		} else {
			attempt++
		}
		wait := backoff(attempt)
		c.log.Warn("connection lost", "broker", c.broker.Host, "retry_in", wait.Round(time.Millisecond))
		if !sleep(c.ctx, wait) {
			return
		}
	}
}

// setStatus records the current session and the last attempt's error and
// wakes Connect.
func (c *Client) setStatus(sess *session, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = sess
	if sess != nil || err != nil {
		c.lastErr = err
	}
	close(c.status)
	c.status = make(chan struct{})
}

// backoff is the wait before reconnection attempt n (n ≥ 1): exponential
// from minBackoff to maxBackoff, with "equal jitter" (a random half) so that
// a fleet that lost its broker does not come back in lockstep.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 20 {
		d = min(minBackoff<<(n-1), maxBackoff)
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dial makes one connection attempt with a fresh paho client whose last
// will is the current offline state.
func (c *Client) dial(ctx context.Context) (*session, error) {
	sess := &session{lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(c.broker.String()).
		SetClientID(c.opts.Device).
		SetUsername(c.opts.Device).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetProtocolVersion(4).
		SetKeepAlive(keepAlive).
		SetPingTimeout(pingTimeout).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(writeTimeout).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			c.log.Debug("connection lost", "error", err)
			sess.markLost()
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := c.dialNet(ctx, u)
			if err != nil {
				return nil, err
			}
			sess.mu.Lock()
			sess.conn = conn
			sess.mu.Unlock()
			return conn, nil
		})
	if c.opts.Password != "" {
		opts.SetPassword(c.opts.Password)
	}
	willState := c.offlineState()
	sess.since = willState.Time
	willState.Conn = sess.since
	if will, err := wire.EncodeState(willState); err != nil {
		c.log.Error("connecting without a last will", "error", err)
	} else {
		opts.SetBinaryWill(c.stateTopic, will, 1, true)
	}
	sess.pc = mqtt.NewClient(opts)
	tok := sess.pc.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		sess.abort()
		<-tok.Done() // prompt once the connection is closed
		sess.pc.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		if rc := tok.(*mqtt.ConnectToken).ReturnCode(); rc >= 1 && rc <= 5 {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return nil, fmt.Errorf("connecting: %w", err)
	}
	return sess, nil
}

// dialNet opens the TCP or TLS connection for paho, cancellable by ctx.
func (c *Client) dialNet(ctx context.Context, u *url.URL) (net.Conn, error) {
	d := &net.Dialer{Timeout: connectTimeout}
	if u.Scheme != "mqtts" {
		return d.DialContext(ctx, "tcp", u.Host)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.opts.TLS != nil {
		cfg = c.opts.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	td := &tls.Dialer{NetDialer: d, Config: cfg}
	return td.DialContext(ctx, "tcp", u.Host)
}

// serve runs one connection: subscribe to commands, republish the state,
// then send the outbox in Seq order, a window of events at a time, until
// the connection is lost or the client closes.
func (c *Client) serve(sess *session) {
	c.subscribe(sess)

	// Publish the remembered state before PublishState may use the session,
	// so that a newer state cannot be overtaken by this one.
	c.stateMu.Lock()
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st != nil {
		s := *st
		s.Time = time.Now().UTC()
		p, err := wire.EncodeState(s) // cannot fail: PublishState checked it
		if err == nil {
			err = c.waitAck(sess, func() mqtt.Token { return sess.pc.Publish(c.stateTopic, 1, true, p) })
		}
		if err != nil {
			c.log.Warn("republishing state", "error", err)
		}
	}
	c.setStatus(sess, nil)
	c.stateMu.Unlock()

	acks := make(chan struct{}, sendWindow)
	var after uint64 // Seq of the last event sent on this connection
	inflight := 0
	for {
		for inflight < sendWindow && !sess.isLost() {
			e, ok := c.box.next(after)
			if !ok {
				break
			}
			after = e.seq
			inflight++
			tok := sess.pc.Publish(c.eventsTopic, 1, false, e.payload)
			sess.sends.Add(1)
			go c.awaitPuback(sess, tok, e, acks)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-sess.lost:
			return
		case <-c.wake:
		case <-acks:
			inflight--
		}
	}
}

// awaitPuback removes e from the outbox once the broker acknowledged it. A
// failed or overdue acknowledgement aborts the connection: the event is sent
// again after reconnection.
func (c *Client) awaitPuback(sess *session, tok mqtt.Token, e *entry, acks chan<- struct{}) {
	defer sess.sends.Done()
	defer func() { acks <- struct{}{} }()
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-sess.lost:
		select {
		case <-tok.Done():
		default:
			return
		}
	case <-t.C:
		c.log.Warn("no acknowledgement from the broker; reconnecting", "seq", e.seq, "id", e.id)
		sess.abort()
		return
	}
	if err := tok.Error(); err != nil {
		if !sess.isLost() {
			c.log.Warn("sending event failed; reconnecting", "seq", e.seq, "id", e.id, "error", err)
			sess.abort()
		}
		return
	}
	if err := c.box.remove(e.seq); err != nil {
		c.log.Error("outbox", "seq", e.seq, "error", err)
	}
}

// subscribe subscribes to the device's command topic. A refusal is logged;
// events still flow.
func (c *Client) subscribe(sess *session) {
	var tok mqtt.Token
	err := c.waitAck(sess, func() mqtt.Token {
		tok = sess.pc.Subscribe(c.cmdTopic, 1, c.onCommand)
		return tok
	})
	if err != nil {
		c.log.Warn("subscribing to commands", "error", err)
		return
	}
	if code := tok.(*mqtt.SubscribeToken).Result()[c.cmdTopic]; code > 2 {
		c.log.Error("command subscription refused by broker", "topic", c.cmdTopic, "code", code)
		return
	}
	c.subOnce.Do(func() { close(c.subscribed) })
}

// waitAck runs send and waits for its token, at most ackTimeout, or until
// the connection is lost or the client closes.
func (c *Client) waitAck(sess *session, send func() mqtt.Token) error {
	tok := send()
	t := time.NewTimer(ackTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-sess.lost:
		return errors.New("connection lost")
	case <-c.ctx.Done():
		return c.ctx.Err()
	case <-t.C:
		sess.abort()
		return errors.New("no acknowledgement from the broker")
	}
}

// onCommand runs on paho's router goroutine: decode and hand over, never
// block.
func (c *Client) onCommand(_ mqtt.Client, m mqtt.Message) {
	if m.Topic() != c.cmdTopic {
		c.log.Warn("dropping message on unexpected topic", "topic", m.Topic())
		return
	}
	cmd, err := wire.DecodeCommand(m.Payload())
	if err != nil {
		c.log.Warn("dropping invalid command", "error", err)
		return
	}
	c.deliverCommand(cmd)
}
