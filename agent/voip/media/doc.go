// Package media owns a call's audio path: 8 kHz mono G.711 over SRTP and
// SRTCP (github.com/pion/srtp), from a Source to the network and from the
// network to a Sink, with the figures a call is judged by (loss, jitter,
// round-trip time and an ITU-T G.107 MOS estimate).
//
// Policy: there is no plain RTP here. Every packet is protected with the
// negotiated SDES keys, replay protection is on for SRTP and SRTCP, and
// packets from any address but the negotiated remote are dropped and
// counted. The session locks onto the first remote SSRC that
// authenticates; a peer that changes SSRC needs a new Session (new keys
// from a re-INVITE give one anyway).
//
// Session is the socket-driven call. Outbound and Inbound are its two
// halves without sockets (packetise and protect; unprotect, reorder and
// depacketise), exported so the pipeline can be measured and fuzzed alone.
package media
