package testutil

import (
	"errors"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is one MQTT message seen by a Collector.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Collector records messages from any number of goroutines and lets a test
// wait for a condition on them. The zero value is ready to use.
type Collector struct {
	mu      sync.Mutex
	msgs    []Message
	changed chan struct{}
}

// Add records m.
func (c *Collector) Add(m Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// Handler is a paho message handler that records every message.
func (c *Collector) Handler(_ mqtt.Client, m mqtt.Message) {
	c.Add(Message{Topic: m.Topic(), Payload: slices.Clone(m.Payload()), Retained: m.Retained()})
}

// Messages returns a copy of the messages recorded so far.
func (c *Collector) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// WaitFor waits until done returns true for the messages recorded so far,
// and returns them; it fails the test after timeout.
func (c *Collector) WaitFor(t testing.TB, timeout time.Duration, what string, done func([]Message) bool) []Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		msgs := slices.Clone(c.msgs)
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		changed := c.changed
		c.mu.Unlock()
		if done(msgs) {
			return msgs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waiting %s for %s: have %d messages", timeout, what, len(msgs))
		}
	}
}

// ConnectMQTT connects a paho client to addr ("host:port", plain TCP) as
// clientID, after configure (which may be nil) adjusted the options, and
// disconnects it in t.Cleanup. It fails the test if the connection fails.
func ConnectMQTT(t testing.TB, addr, clientID string, configure func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	c, err := TryConnectMQTT(addr, clientID, configure)
	if err != nil {
		t.Fatalf("connecting %s to %s: %v", clientID, addr, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// TryConnectMQTT is ConnectMQTT returning the error (and a client only on
// success; the caller disconnects it).
func TryConnectMQTT(addr, clientID string, configure func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	u := url.URL{Scheme: "tcp", Host: addr}
	o := mqtt.NewClientOptions().
		AddBroker(u.String()).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	if configure != nil {
		configure(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		c.Disconnect(0)
		return nil, errTimeout
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// Subscribe subscribes c to filter at QoS 1 and records what arrives in a
// new Collector; it fails the test unless the broker granted the
// subscription.
func Subscribe(t testing.TB, c mqtt.Client, filter string) *Collector {
	t.Helper()
	col := &Collector{}
	if code := SubscribeCode(t, c, filter, col.Handler); code > 2 {
		t.Fatalf("subscribing to %q: refused with code %#x", filter, code)
	}
	return col
}

// SubscribeCode subscribes c to filter at QoS 1 and returns the SUBACK
// return code (0x80 means refused).
func SubscribeCode(t testing.TB, c mqtt.Client, filter string, h mqtt.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribing to %q: timeout", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribing to %q: %v", filter, err)
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

var errTimeout = errors.New("connect timeout")
