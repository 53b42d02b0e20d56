package media

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/dialtone-dev/dialtone/agent/voip/g711"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"
)

// RTP payload types of the codecs this package speaks (RFC 3551).
const (
	PCMU uint8 = 0
	PCMA uint8 = 8
)

const rtpHeaderLen = 12

// Outbound is the sending half of a stream without its socket: it encodes
// frames with G.711, puts them in RTP packets and protects them with SRTP.
// Not safe for concurrent use.
type Outbound struct {
	ctx     *srtp.Context
	hdr     rtp.Header
	scratch rtp.Header // for pion to parse into (nil would allocate one)
	encode  func([]byte, []int16)
	tag     int
	marker  bool
	packets uint64
	octets  uint64
}

// NewOutbound starts a stream with a random SSRC, sequence number and
// timestamp, protected with keySalt (master key then salt) under profile.
func NewOutbound(profile srtp.ProtectionProfile, keySalt []byte, payloadType uint8) (*Outbound, error) {
	enc, err := encoder(payloadType)
	if err != nil {
		return nil, err
	}
	ctx, err := encryptContext(profile, keySalt)
	if err != nil {
		return nil, err
	}
	var r [10]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("choosing ssrc: %w", err)
	}
	return &Outbound{
		ctx: ctx,
		hdr: rtp.Header{
			Version:        2,
			PayloadType:    payloadType,
			SSRC:           binary.BigEndian.Uint32(r[0:4]),
			Timestamp:      binary.BigEndian.Uint32(r[4:8]),
			SequenceNumber: binary.BigEndian.Uint16(r[8:10]),
		},
		encode: enc,
		tag:    tagLen(profile),
		marker: true,
	}, nil
}

func encoder(pt uint8) (func([]byte, []int16), error) {
	switch pt {
	case PCMU:
		return g711.EncodeUlaw, nil
	case PCMA:
		return g711.EncodeAlaw, nil
	}
	return nil, fmt.Errorf("%w: %d (want 0 PCMU or 8 PCMA)", ErrPayloadType, pt)
}

// Packet returns the next SRTP packet carrying samples, built in dst when
// it has the capacity. The first packet, and the first after Skip, carry
// the marker bit.
func (o *Outbound) Packet(dst []byte, samples []int16) ([]byte, error) {
	n := rtpHeaderLen + len(samples)
	if cap(dst) < n+o.tag {
		dst = make([]byte, n, n+o.tag)
	}
	dst = dst[:n]
	o.hdr.Marker = o.marker
	if _, err := o.hdr.MarshalTo(dst); err != nil {
		return nil, fmt.Errorf("marshalling rtp header: %w", err)
	}
	o.encode(dst[rtpHeaderLen:], samples)
	// In place: pion writes the header and XORs (or seals) the payload
	// over itself, then appends the tag within dst's capacity.
	out, err := o.ctx.EncryptRTP(dst, dst, &o.scratch)
	if err != nil {
		return nil, fmt.Errorf("protecting rtp: %w", err)
	}
	o.marker = false
	o.hdr.SequenceNumber++
	o.hdr.Timestamp += uint32(len(samples))
	o.packets++
	o.octets += uint64(len(samples))
	return out, nil
}

// Skip advances the timestamp over n samples that are not sent (hold):
// the stream's clock keeps running and the next packet carries the
// marker bit, as a talkspurt's first does.
func (o *Outbound) Skip(n int) {
	o.hdr.Timestamp += uint32(n)
	o.marker = true
}

// SSRC is the stream's synchronisation source.
func (o *Outbound) SSRC() uint32 { return o.hdr.SSRC }

// Timestamp is the RTP timestamp the next packet will carry.
func (o *Outbound) Timestamp() uint32 { return o.hdr.Timestamp }

// Sent is the packets and payload octets sent so far.
func (o *Outbound) Sent() (packets, octets uint64) { return o.packets, o.octets }

// protectRTCP protects a marshalled compound RTCP packet with the
// stream's context (the sender goroutine is its only user).
func (o *Outbound) protectRTCP(b []byte) ([]byte, error) {
	out, err := o.ctx.EncryptRTCP(nil, b, nil)
	if err != nil {
		return nil, fmt.Errorf("protecting rtcp: %w", err)
	}
	return out, nil
}
