package mqttingest

import (
	"errors"
	"fmt"
	"time"
)

// ErrNotConnected is returned by Publish while the client has no connection
// to the broker.
var ErrNotConnected = errors.New("mqttingest: not connected to the broker")

// publishTimeout bounds how long Publish waits for the broker's
// acknowledgement of a QoS 1 message.
const publishTimeout = 10 * time.Second

// Publish sends a message to the broker as the server — the commands and
// desired versions of server/rollout — on the current connection. It
// returns once the broker acknowledged it (QoS 1) or it was written (QoS
// 0); without a connection it fails at once with ErrNotConnected rather
// than queueing: callers that must deliver (rollout) keep what they send in
// the store and deliver it again from OnConnect.
func (c *Client) Publish(topic string, payload []byte, retain bool, qos byte) error {
	sess := c.cur.Load()
	if sess == nil || sess.isLost() {
		return ErrNotConnected
	}
	tok := sess.pc.Publish(topic, qos, retain, payload)
	select {
	case <-tok.Done():
	case <-sess.lost:
		return fmt.Errorf("publishing to %s: %w", trunc(topic), ErrNotConnected)
	case <-time.After(publishTimeout):
		return fmt.Errorf("publishing to %s: no acknowledgement within %s", trunc(topic), publishTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publishing to %s: %w", trunc(topic), err)
	}
	return nil
}
