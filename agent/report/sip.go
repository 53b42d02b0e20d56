package report

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// ErrOffline is returned by PublishTelemetry while there is no connection:
// telemetry is not worth keeping for later (QoS 0, DESIGN.md §6).
var ErrOffline = errors.New("offline")

// SetSIP sets the SIP line that every later retained state carries, and
// publishes the last state again with it when it differs from the one
// sent; nil removes it. The update flow publishes states without knowing
// of SIP; they get the line set here.
func (c *Client) SetSIP(ctx context.Context, s *wire.SIPState) error {
	c.mu.Lock()
	if sameSIP(c.sip, s) {
		c.mu.Unlock()
		return nil
	}
	if s != nil {
		cp := *s
		s = &cp
	}
	c.sip = s
	last := c.state
	c.mu.Unlock()
	if last == nil {
		return nil // the first state carries it
	}
	st := *last
	st.Time, st.SIP = time.Time{}, nil // now, and the line just set
	return c.PublishState(ctx, st)
}

// sipFor is the SIP line a state given to PublishState goes out with.
func (c *Client) sipFor(s *wire.SIPState) *wire.SIPState {
	if s != nil {
		return s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sip
}

func sameSIP(a, b *wire.SIPState) bool {
	switch {
	case a == nil || b == nil:
		return a == b
	default:
		return *a == *b
	}
}

// PublishTelemetry publishes t on the device's telemetry topic at QoS 0,
// filling Schema, ID, Device and Time when zero. While offline it returns
// ErrOffline and t is dropped.
func (c *Client) PublishTelemetry(ctx context.Context, t wire.Telemetry) error {
	if t.Schema == 0 {
		t.Schema = wire.SchemaVersion
	}
	if t.ID == "" {
		t.ID = newID()
	}
	if t.Device == "" {
		t.Device = c.opts.Device
	}
	if t.Time.IsZero() {
		t.Time = time.Now().UTC()
	}
	if t.Device != c.opts.Device {
		return fmt.Errorf("report: telemetry for %s from client %s: %w", t.Device, c.opts.Device, wire.ErrInvalid)
	}
	payload, err := wire.EncodeTelemetry(t)
	if err != nil {
		return fmt.Errorf("report: telemetry: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return fmt.Errorf("report: telemetry %s dropped: %w", t.Type, ErrOffline)
	}
	tok := sess.pc.Publish(c.telemetryTopic, 0, false, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("report: publishing telemetry: %w", ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("report: publishing telemetry: %w", err)
	}
	return nil
}
