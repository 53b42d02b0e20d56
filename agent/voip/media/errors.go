package media

import "errors"

// Configuration errors, returned (wrapped) by Start, NewOutbound and
// NewInbound.
var (
	ErrProfile     = errors.New("unsupported SRTP protection profile")
	ErrKeyLength   = errors.New("wrong SRTP master key length")
	ErrPayloadType = errors.New("unsupported payload type")
	ErrConfig      = errors.New("invalid media configuration")
)

// Reasons an inbound packet was refused, returned (wrapped) by
// Inbound.Receive and Inbound.ReceiveRTCP.
var (
	ErrReplayed = errors.New("replayed packet")
	ErrAuth     = errors.New("packet failed authentication")
	ErrInvalid  = errors.New("invalid packet")
)

// WAV errors.
var (
	ErrNotWAV      = errors.New("not a RIFF/WAVE file")
	ErrWAVFormat   = errors.New("unsupported WAV format (want 8000 Hz 16-bit mono PCM)")
	ErrWAVTooLarge = errors.New("WAV data exceeds 4 GiB")
)
