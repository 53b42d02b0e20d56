package sdp

import (
	"errors"
	"fmt"
)

// Status codes carried by NegotiationError, named after the SIP responses the SIP layer sends.
const (
	StatusBadRequest        = 400 // the SDP or a crypto attribute is malformed
	StatusNotAcceptableHere = 488 // well-formed, but nothing in it is acceptable under the policy
)

var (
	// ErrMalformed is wrapped by every NegotiationError with Status 400.
	ErrMalformed = errors.New("malformed sdp")
	// ErrNotAcceptable is wrapped by every NegotiationError with Status 488.
	ErrNotAcceptable = errors.New("not acceptable")
)

// NegotiationError is a refusal the SIP layer turns into a response: Status is the SIP status code
// (400 or 488) and Reason a short phrase fit for a Warning header or a log line. It never contains key
// material. Errors that are not a NegotiationError come from our own inputs (local address, random
// source) and map to 500.
type NegotiationError struct {
	Status int
	Reason string
	cause  error // parser error, kept for errors.Is/As; not shown to the peer
}

func (e *NegotiationError) Error() string {
	return fmt.Sprintf("%v: %s", e.sentinel(), e.Reason)
}

// Unwrap exposes the sentinel (ErrMalformed or ErrNotAcceptable) and the underlying cause.
func (e *NegotiationError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.sentinel(), e.cause}
	}
	return []error{e.sentinel()}
}

func (e *NegotiationError) sentinel() error {
	if e.Status == StatusBadRequest {
		return ErrMalformed
	}
	return ErrNotAcceptable
}

func malformed(format string, args ...any) *NegotiationError {
	return &NegotiationError{Status: StatusBadRequest, Reason: fmt.Sprintf(format, args...)}
}

func notAcceptable(format string, args ...any) *NegotiationError {
	return &NegotiationError{Status: StatusNotAcceptableHere, Reason: fmt.Sprintf(format, args...)}
}
