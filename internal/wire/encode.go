package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// EncodeState marshals s and checks that DecodeState accepts the result, so
// a writer never puts on the wire what the other side would refuse.
func EncodeState(s State) ([]byte, error) {
	return encodeChecked(s, func(b []byte) error { _, err := DecodeState(b); return err })
}

// EncodeEvent marshals e and checks that DecodeEvent accepts the result.
func EncodeEvent(e Event) ([]byte, error) {
	return encodeChecked(e, func(b []byte) error { _, err := DecodeEvent(b); return err })
}

// EncodeCommand marshals c and checks that DecodeCommand accepts the result.
func EncodeCommand(c Command) ([]byte, error) {
	return encodeChecked(c, func(b []byte) error { _, err := DecodeCommand(b); return err })
}

func encodeChecked(v any, check func([]byte) error) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // MQTT payloads are not embedded in HTML
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: encoding: %w", ErrInvalid, err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := check(b); err != nil {
		return nil, err
	}
	return b, nil
}
