package oidc

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// loginState is what the state cookie carries between Begin and Finish.
type loginState struct {
	State     string `json:"s"`
	Nonce     string `json:"n"`
	Verifier  string `json:"v"`
	Expires   int64  `json:"e"`
	Loopback  string `json:"r,omitempty"`
	Challenge string `json:"c,omitempty"`
}

// Cookie names: with https the __Host- prefix pins the cookie to this host
// and path /, Secure.
const (
	cookieName       = "dialtone_oidc"
	secureCookieName = "__Host-dialtone_oidc"
)

func (rp *RP) cookieName() string {
	if rp.secure {
		return secureCookieName
	}
	return cookieName
}

// cookie returns the state cookie holding value, for maxAge seconds (<0
// deletes it).
func (rp *RP) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     rp.cookieName(),
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   rp.secure,
		// Lax: the provider's redirect back is a top-level GET navigation,
		// which carries a Lax cookie; cross-site subrequests do not.
		SameSite: http.SameSiteLaxMode,
	}
}

// sealState encodes st as BASE64URL(JSON) "." BASE64URL(HMAC-SHA256).
func (rp *RP) sealState(st loginState) (string, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("encoding the login state: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	return payload + "." + base64.RawURLEncoding.EncodeToString(rp.mac(payload)), nil
}

func (rp *RP) mac(payload string) []byte {
	m := hmac.New(sha256.New, rp.stateKey)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// openState checks the signature of a state cookie's value and decodes it.
func (rp *RP) openState(v string) (loginState, error) {
	var st loginState
	payload, sig, ok := strings.Cut(v, ".")
	if !ok {
		return st, fmt.Errorf("%w: malformed state cookie", ErrState)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, rp.mac(payload)) {
		return st, fmt.Errorf("%w: state cookie not signed by this server", ErrState)
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return st, fmt.Errorf("%w: state cookie: %w", ErrState, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%w: state cookie: %w", ErrState, err)
	}
	if st.State == "" || st.Nonce == "" || st.Verifier == "" {
		return st, fmt.Errorf("%w: incomplete state cookie", ErrState)
	}
	return st, nil
}
