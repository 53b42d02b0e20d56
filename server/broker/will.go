package broker

import (
	"context"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// willTimeout bounds storing one last will.
const willTimeout = 10 * time.Second

// OnWillSent hands a device's last will — its offline state, which
// OnConnect checked stays in its subtree — to Ingest. mochi publishes wills
// itself, past OnPublish, so without this the server would never learn that
// a device dropped off. Nothing can be withheld from a will: a store
// failure is logged, and the device's next state corrects the view.
func (h *aclHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if h.b.opts.Ingest == nil && h.b.opts.IngestAsync == nil {
		return
	}
	parent := h.b.ctx
	if parent == nil {
		parent = context.Background()
	}
	logErr := func(err error) {
		if err != nil {
			h.b.log.Warn("last will not stored", "client", cl.ID, "topic", trunc(pk.TopicName), "error", err)
		}
	}
	if h.b.opts.IngestAsync != nil {
		// After the connection's other reports, in order; nobody waits.
		h.b.opts.IngestAsync(context.WithoutCancel(parent), pk.TopicName, pk.Payload, logErr)
		return
	}
	ctx, cancel := context.WithTimeout(parent, willTimeout)
	defer cancel()
	logErr(h.b.opts.Ingest(ctx, pk.TopicName, pk.Payload))
}
