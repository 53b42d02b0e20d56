package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// mayPublish reports whether the device named user may publish to topic:
// only its own state, events and telemetry, under any valid tenant.
func mayPublish(user, topic string) bool {
	_, device, kind, err := wire.ParseTopic(topic)
	return err == nil && device == user && kind != wire.KindCmd
}

// maySubscribe reports whether the device named user may subscribe to
// filter: only its own command topic, spelt out without wildcards.
func maySubscribe(user, filter string) bool {
	_, device, kind, err := wire.ParseTopic(filter)
	return err == nil && device == user && kind == wire.KindCmd
}

// mayRetain reports whether a message on topic may be retained.
func mayRetain(topic string) bool {
	_, _, kind, err := wire.ParseTopic(topic)
	return err == nil && kind == wire.KindState
}

// aclHook enforces the device ACL inside mochi. The server's inline client
// is exempt.
type aclHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *aclHook) ID() string { return "dialtone-acl" }

func (h *aclHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnConnect checks what mochi's authentication hook cannot see: that the
// client ID is the username and that the will stays in the device's subtree.
// mochi sends no CONNACK when this hook fails, so it sends its own.
func (h *aclHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user := string(pk.Connect.Username)
	id := pk.Connect.ClientIdentifier
	code := notAuthorized(cl)
	var reason string
	switch {
	case !wire.ValidID(user):
		code, reason = packets.ErrBadUsernameOrPassword, "username is not a valid device id"
	case id != user:
		code, reason = packets.ErrClientIdentifierNotValid, "client id differs from username"
	case user == mqtt.InlineClientId:
		code, reason = packets.ErrClientIdentifierNotValid, "reserved client id"
	case pk.Connect.WillFlag && !mayPublish(user, pk.Connect.WillTopic):
		reason = "will topic outside the device's subtree"
	case pk.Connect.WillFlag && pk.Connect.WillRetain && !mayRetain(pk.Connect.WillTopic):
		reason = "retained will outside the state topic"
	default:
		return nil
	}
	h.b.refuse("connection refused", "reason", reason, "client", trunc(id), "username", trunc(user),
		"will", trunc(pk.Connect.WillTopic), "remote", cl.Net.Remote)
	h.b.connFailed(user, cl.Net.Remote)
	if err := h.b.srv.SendConnack(cl, code, false, nil); err != nil {
		h.b.log.Debug("sending connack", "client", trunc(id), "error", err)
	}
	return code
}

func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username) // a valid ID: checked by OnConnect
	ctx, cancel := h.b.authContext()
	defer cancel()
	if h.b.opts.PeerAuth != nil {
		var chain []*x509.Certificate
		if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
			chain = tc.ConnectionState().PeerCertificates
		}
		if len(chain) == 0 {
			h.b.refuse("no device certificate", "username", user, "remote", cl.Net.Remote)
			h.b.connFailed(user, cl.Net.Remote)
			return false
		}
		if err := h.b.opts.PeerAuth(ctx, user, chain); err != nil {
			h.b.refuse("device certificate refused", "username", user, "remote", cl.Net.Remote, "reason", err)
			h.b.connFailed(user, cl.Net.Remote)
			return false
		}
	}
	switch {
	case h.b.opts.Auth == nil && h.b.opts.PeerAuth == nil && !h.b.opts.Dev:
		return false
	case h.b.opts.Auth != nil && !h.b.opts.Auth.Authenticate(ctx, user, pk.Connect.Password):
		h.b.refuse("authentication failed", "username", user, "remote", cl.Net.Remote)
		h.b.connFailed(user, cl.Net.Remote)
		return false
	}
	if h.b.opts.Admit != nil {
		if err := h.b.opts.Admit(ctx, user); err != nil {
			h.b.refuse("device not admitted", "username", user, "remote", cl.Net.Remote, "reason", err)
			return false
		}
	}
	return true
}

// OnACLCheck is called for every publish and subscription of a client
// (write=true for publish) and again before delivering a message to it.
func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	user := string(cl.Properties.Username)
	if write {
		if mayPublish(user, topic) {
			return true
		}
		h.b.refuse("publish refused", "client", cl.ID, "topic", trunc(topic))
		h.b.denied(cl.ID, DeniedPublish, topic)
		return false
	}
	if maySubscribe(user, topic) {
		return true
	}
	h.b.refuse("subscribe refused", "client", cl.ID, "filter", trunc(topic))
	h.b.denied(cl.ID, DeniedSubscribe, topic)
	return false
}

// OnPublish refuses retained messages outside state topics, the way mochi
// refuses a publish that fails OnACLCheck (which cannot see the retain flag).
func (h *aclHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if !pk.FixedHeader.Retain || mayRetain(pk.TopicName) {
		return h.ingest(cl, pk)
	}
	h.b.refuse("retained publish refused", "client", cl.ID, "topic", trunc(pk.TopicName))
	h.b.denied(cl.ID, DeniedPublish, pk.TopicName)
	switch {
	case pk.FixedHeader.Qos == 0:
		return pk, packets.ErrRejectPacket // dropped
	case cl.Properties.ProtocolVersion == 5:
		return pk, packets.ErrNotAuthorized // mochi answers with this reason code
	default:
		// MQTT 3.1.1 cannot refuse a QoS 1/2 publish: disconnect.
		_ = h.b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return pk, packets.ErrRejectPacket
	}
}

// ingest hands a device's report to Options.Ingest before mochi sends the
// PUBACK (mochi acknowledges after OnPublish returns).
func (h *aclHook) ingest(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.b.opts.IngestAsync != nil {
		return h.ingestAsync(cl, pk)
	}
	if h.b.opts.Ingest == nil {
		return pk, nil
	}
	ctx := h.b.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := h.b.opts.Ingest(ctx, pk.TopicName, pk.Payload); err != nil {
		h.b.log.Warn("report not stored: withholding its acknowledgement", "client", cl.ID, "topic", trunc(pk.TopicName), "error", err)
		// MQTT 3.1.1 cannot refuse a publish, and a client resends an
		// unacknowledged one only after reconnecting: disconnect it.
		_ = h.b.srv.DisconnectClient(cl, packets.ErrUnspecifiedError)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// notAuthorized is the CONNACK code for "not authorized" in the client's
// protocol version (mochi maps bad-username-or-password to MQTT 3's
// "not authorized" but passes 0x87 through unmapped).
func notAuthorized(cl *mqtt.Client) packets.Code {
	if cl.Properties.ProtocolVersion == 5 {
		return packets.ErrNotAuthorized
	}
	return packets.ErrBadUsernameOrPassword
}

// trunc bounds client-chosen strings before they are logged.
func trunc(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
