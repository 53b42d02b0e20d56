package broker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
)

// held is an IngestAsync that keeps the reports it gets until the test
// decides their outcome.
type held struct {
	mu      sync.Mutex
	reports []string
	dones   []func(error)
	more    chan struct{}
}

func newHeld() *held { return &held{more: make(chan struct{}, 100)} }

func (h *held) ingest(_ context.Context, _ string, payload []byte, done func(error)) {
	h.mu.Lock()
	h.reports = append(h.reports, string(payload))
	h.dones = append(h.dones, done)
	h.mu.Unlock()
	h.more <- struct{}{}
}

// wait waits until n reports were handed over.
func (h *held) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		h.mu.Lock()
		got := len(h.reports)
		h.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-h.more:
		case <-deadline:
			t.Fatalf("%d reports handed over, want %d", got, n)
		}
	}
}

func (h *held) finish(i int, err error) {
	h.mu.Lock()
	done := h.dones[i]
	h.mu.Unlock()
	done(err)
}

func (h *held) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reports)
}

// TestIngestAsyncAcknowledgesOnlyStored: with the pipelined IngestAsync, a
// device's reports are handed over without waiting for the store, but each
// is acknowledged only once its outcome says stored; a failure withholds
// its PUBACK (and those after it) and disconnects the device.
func TestIngestAsyncAcknowledgesOnlyStored(t *testing.T) {
	h := newHeld()
	b := startBroker(t, broker.Options{Dev: true, IngestAsync: h.ingest})
	topic := wire.Topic(tenant, "phone-1", wire.KindEvents)
	lost := make(chan struct{})
	c := device(t, b, "phone-1", func(o *mqtt.ClientOptions) {
		o.SetAutoReconnect(false)
		o.SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	})
	var toks []mqtt.Token
	for i := range 4 {
		toks = append(toks, c.Publish(topic, 1, false, fmt.Sprintf("ev-%d", i)))
	}
	// All four are handed over while none is stored: the pipeline.
	h.wait(t, 4)
	for i, tok := range toks {
		if tok.WaitTimeout(100 * time.Millisecond) {
			t.Fatalf("report %d acknowledged before it was stored", i)
		}
	}
	h.finish(0, nil)
	h.finish(1, nil)
	for i := range 2 {
		if !toks[i].WaitTimeout(waitFor) || toks[i].Error() != nil {
			t.Fatalf("stored report %d not acknowledged: %v", i, toks[i].Error())
		}
	}
	h.finish(2, errors.New("store unavailable"))
	h.finish(3, nil) // stored, but after a failure: the device resends it anyway
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("the device was not disconnected when its report could not be stored")
	}
	for i := 2; i < 4; i++ {
		if toks[i].WaitTimeout(100*time.Millisecond) && toks[i].Error() == nil {
			t.Fatalf("report %d acknowledged after the failure", i)
		}
	}
}

// TestIngestAsyncBoundsPending: a device that publishes faster than the
// store writes has at most MaxPending reports in the pipe; the rest wait
// in its connection (TCP pushes back), and all arrive, in order, once the
// store catches up.
func TestIngestAsyncBoundsPending(t *testing.T) {
	h := newHeld()
	b := startBroker(t, broker.Options{Dev: true, MaxPending: 2, IngestAsync: h.ingest})
	topic := wire.Topic(tenant, "phone-1", wire.KindEvents)
	c := device(t, b, "phone-1", nil)
	var toks []mqtt.Token
	for i := range 6 {
		toks = append(toks, c.Publish(topic, 1, false, fmt.Sprintf("ev-%d", i)))
	}
	h.wait(t, 2)
	time.Sleep(200 * time.Millisecond)
	if n := h.count(); n != 2 {
		t.Fatalf("%d reports in the pipe, want MaxPending = 2", n)
	}
	for i := range 6 {
		h.wait(t, i+1)
		h.finish(i, nil)
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("report %d not acknowledged: %v", i, tok.Error())
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, r := range h.reports {
		if want := fmt.Sprintf("ev-%d", i); r != want {
			t.Fatalf("report %d is %q, want %q: order lost", i, r, want)
		}
	}
}
