package broker_test

import (
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
)

// denialLog records what Options.OnDenial receives.
type denialLog struct {
	mu sync.Mutex
	ds []broker.Denial
}

func (d *denialLog) add(x broker.Denial) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ds = append(d.ds, x)
}

func (d *denialLog) all() []broker.Denial {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.ds)
}

func (d *denialLog) has(client string, kind broker.DenialKind, topic string) bool {
	return slices.ContainsFunc(d.all(), func(x broker.Denial) bool {
		return x.Client == client && x.Kind == kind && x.Topic == topic && !x.Time.IsZero()
	})
}

// TestACLViolationsReported: a device publishing to another device's topic
// and subscribing to "#" is refused, and both refusals reach OnDenial (the
// alert pipeline's source). Issue 6: "refused by both brokers, and the
// attempt becomes an alert" — the Mosquitto half is TestMosquittoDeviceACL.
func TestACLViolationsReported(t *testing.T) {
	got := &denialLog{}
	b := startBroker(t, broker.Options{Dev: true, OnDenial: got.add})
	seen := serverSide(t, b, "#")
	d := device(t, b, "phoneA", nil)

	other := wire.Topic(tenant, "phoneB", wire.KindEvents)
	publish(t, d, other, 0, false, "spoofed") // QoS 0: dropped
	if code := testutil.SubscribeCode(t, d, "#", (&testutil.Collector{}).Handler); code != 0x80 {
		t.Errorf("subscribing to #: code %#x, want 0x80", code)
	}
	// Retained outside state is a refused publish too.
	own := wire.Topic(tenant, "phoneA", wire.KindEvents)
	publish(t, d, own, 0, true, "retained-event")
	publish(t, d, own, 1, false, "marker")
	seen.WaitFor(t, waitFor, "marker", hasPayload("marker"))
	mustNotContain(t, seen, "spoofed", "retained-event")

	for _, want := range []struct {
		kind  broker.DenialKind
		topic string
	}{
		{broker.DeniedPublish, other},
		{broker.DeniedSubscribe, "#"},
		{broker.DeniedPublish, own},
	} {
		if !got.has("phoneA", want.kind, want.topic) {
			t.Errorf("no %s denial of %q for phoneA in %+v", want.kind, want.topic, got.all())
		}
	}
	if n := len(got.all()); uint64(n) != b.Refusals() {
		t.Errorf("%d denialLog reported, %d refusals counted", n, b.Refusals())
	}

	// A permitted publish and subscription report nothing.
	before := len(got.all())
	if code := testutil.SubscribeCode(t, d, wire.Topic(tenant, "phoneA", wire.KindCmd), (&testutil.Collector{}).Handler); code != 1 {
		t.Fatalf("own cmd subscription: code %#x", code)
	}
	if err := b.Publish(wire.Topic(tenant, "phoneA", wire.KindCmd), []byte("cmd"), false, 1); err != nil {
		t.Fatal(err)
	}
	publish(t, d, own, 1, false, "marker2")
	seen.WaitFor(t, waitFor, "marker2", hasPayload("marker2"))
	if n := len(got.all()); n != before {
		t.Errorf("permitted traffic reported as denialLog: %+v", got.all()[before:])
	}

	// MQTT 3.1.1 QoS 1 to another device's topic: disconnected, reported.
	lost := make(chan error, 1)
	d2 := device(t, b, "phoneC", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	d2.Publish(other, 1, false, "spoofed-qos1")
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("not disconnected")
	}
	if !got.has("phoneC", broker.DeniedPublish, other) {
		t.Errorf("QoS 1 denial not reported: %+v", got.all())
	}
}

type authFailure struct {
	client, remote string
	n              int
}

// TestAuthFailuresReported: a wrong password N times from one host is
// reported once the limit is reached, and again at twice the limit.
func TestAuthFailuresReported(t *testing.T) {
	var (
		mu  sync.Mutex
		got []authFailure
	)
	b := startBroker(t, broker.Options{
		Auth:             passwords{"phone1": "s3cret"},
		AuthFailureLimit: 3,
		OnAuthFailures: func(client, remote string, n int) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, authFailure{client, remote, n})
		},
	})
	addr := b.Addr().String()
	reports := func() []authFailure {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	try := func(user, pw string) {
		t.Helper()
		c, err := testutil.TryConnectMQTT(addr, user, func(o *mqtt.ClientOptions) { o.SetUsername(user); o.SetPassword(pw) })
		if err == nil {
			c.Disconnect(0)
			t.Fatalf("%s with password %q accepted", user, pw)
		}
		if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			t.Fatalf("%s: %v, want not authorised", user, err)
		}
	}
	try("phone1", "wrong")
	try("phone1", "wrong")
	if r := reports(); len(r) != 0 {
		t.Fatalf("reported before the limit: %+v", r)
	}
	// The good password in between does not reset the count.
	testutil.ConnectMQTT(t, addr, "phone1", func(o *mqtt.ClientOptions) { o.SetUsername("phone1"); o.SetPassword("s3cret") })
	try("phone1", "guess")
	r := reports()
	if len(r) != 1 || r[0].client != "phone1" || r[0].n != 3 {
		t.Fatalf("reports = %+v, want one for phone1 with n=3", r)
	}
	if host, _, err := net.SplitHostPort(r[0].remote); err != nil || host != "127.0.0.1" {
		t.Errorf("remote = %q, want 127.0.0.1:port", r[0].remote)
	}
	// A CONNECT that breaks the rules counts too.
	try("phone2", "x")
	try("phone2", "y")
	if _, err := testutil.TryConnectMQTT(addr, "phone1", func(o *mqtt.ClientOptions) { o.SetUsername("phone9") }); err == nil {
		t.Fatal("client id differing from username accepted")
	}
	if r := reports(); len(r) != 2 || r[1].n != 6 || r[1].client != "phone9" {
		t.Fatalf("reports = %+v, want a second one at n=6 for phone9", r)
	}
}
