package broker

import (
	"context"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// DefaultMaxPending bounds, per connection, the reports handed to
// Options.IngestAsync and not yet stored.
const DefaultMaxPending = 32

// A pipe is one connection's reports on their way to the store with
// Options.IngestAsync: mochi's connection goroutine hands a report over and
// reads the next one while the store writes the last (so the store can
// write many devices' and many reports' worth at once), and the pipe's own
// goroutine sends the PUBACKs, in order, as the outcomes come. A report is
// still acknowledged only once stored.
//
// Each connection has at most maxPending reports in the pipe: the
// connection goroutine waits for a slot, which pushes back on a device that
// publishes faster than the store writes (MQTT 3.1.1 has no receive
// maximum). PUBACKs are written by the pipe's goroutine, never by the
// ingester's: a device that stops reading blocks only itself.
type pipe struct {
	slots chan struct{} // one per report in the pipe
	acks  chan pipeAck  // outcomes, in hand-over order; never blocks (cap = slots)
	gone  chan struct{} // closed when the connection is closed
	once  sync.Once
}

type pipeAck struct {
	id  uint16
	qos byte
	err error
}

// pipeFor returns cl's pipe, starting it on first use.
func (b *Broker) pipeFor(cl *mqtt.Client) *pipe {
	b.pipesMu.Lock()
	defer b.pipesMu.Unlock()
	if p, ok := b.pipes[cl]; ok {
		return p
	}
	n := b.opts.MaxPending
	if n <= 0 {
		n = DefaultMaxPending
	}
	p := &pipe{slots: make(chan struct{}, n), acks: make(chan pipeAck, n), gone: make(chan struct{})}
	if b.pipes == nil {
		b.pipes = map[*mqtt.Client]*pipe{}
	}
	b.pipes[cl] = p
	go b.ackLoop(cl, p)
	return p
}

// ingestAsync hands pk to Options.IngestAsync and tells mochi not to
// acknowledge it: the pipe does once it is stored.
func (h *aclHook) ingestAsync(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	p := h.b.pipeFor(cl)
	select {
	case p.slots <- struct{}{}:
	case <-p.gone:
		return pk, packets.ErrRejectPacket // the device resends it on its next connection
	}
	ctx := h.b.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	id, qos := pk.PacketID, pk.FixedHeader.Qos
	h.b.opts.IngestAsync(ctx, pk.TopicName, pk.Payload, func(err error) {
		p.acks <- pipeAck{id: id, qos: qos, err: err}
	})
	return pk, packets.ErrRejectPacket
}

// ackLoop acknowledges cl's stored reports in order. After a report the
// store could not take, it acknowledges nothing more and disconnects the
// device, which resends what was not acknowledged when it reconnects. It
// ends once the connection is gone and nothing of it is in the pipe.
func (b *Broker) ackLoop(cl *mqtt.Client, p *pipe) {
	defer func() {
		b.pipesMu.Lock()
		delete(b.pipes, cl)
		b.pipesMu.Unlock()
	}()
	failed := false
	for {
		select {
		case a := <-p.acks:
			<-p.slots
			switch {
			case failed:
			case a.err != nil:
				failed = true
				b.log.Warn("report not stored: withholding its acknowledgement", "client", cl.ID, "error", a.err)
				_ = b.srv.DisconnectClient(cl, packets.ErrUnspecifiedError)
			case a.qos > 0:
				ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: a.id,
					ReasonCode: packets.CodeSuccess.Code, Created: time.Now().Unix()}
				if err := cl.WritePacket(ack); err != nil {
					failed = true // the connection is going: the device resends
				}
			}
		case <-p.gone:
			if len(p.slots) == 0 {
				return
			}
			// Reports still in the pipe: their outcomes come on acks.
			a := <-p.acks
			<-p.slots
			_ = a
		}
	}
}

// closePipe marks cl's connection gone: its pipe stops taking reports and
// ends once the store has answered those it holds.
func (b *Broker) closePipe(cl *mqtt.Client) {
	b.pipesMu.Lock()
	p := b.pipes[cl]
	b.pipesMu.Unlock()
	if p != nil {
		p.once.Do(func() { close(p.gone) })
	}
}

// OnDisconnect ends the connection's pipe.
func (h *aclHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.b.closePipe(cl)
}
