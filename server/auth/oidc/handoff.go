package oidc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// A command line signs in with SSO through its loopback listener (RFC 8252
// §7.3): it picks a verifier, opens /v1/oidc/login?redirect_uri=
// http://127.0.0.1:PORT/&code_challenge=S256(verifier) in a browser, and
// after the provider's callback the server redirects the browser to the
// loopback with a hand-off code. The code seals the session token, its
// expiry and the challenge (AES-256-GCM under a key derived from
// Config.Key); the CLI redeems it with its verifier. A page that pushes its
// own code to the listener gets nothing: its challenge is not the CLI's.
// The session token itself never appears in a URL.

// HandoffTTL is how long a hand-off code can be redeemed.
const HandoffTTL = 2 * time.Minute

// maxHandoffBytes bounds a hand-off code.
const maxHandoffBytes = 1024

// ValidLoopback checks a CLI's redirect URI: http, host 127.0.0.1 or ::1
// (not "localhost", which a resolver could answer differently), an explicit
// port, path "/" or empty, no user info, query or fragment. It returns the
// URI with path "/".
func ValidLoopback(s string) (string, error) {
	if len(s) > 64 {
		return "", ErrLoopback
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || u.ForceQuery {
		return "", ErrLoopback
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", ErrLoopback
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || (host != "127.0.0.1" && host != "::1") {
		return "", ErrLoopback
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", ErrLoopback
	}
	return "http://" + u.Host + "/", nil
}

// Challenge returns BASE64URL(SHA-256(verifier)), the S256 challenge.
func Challenge(verifier string) string {
	h := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

// handoff is the sealed content of a hand-off code.
type handoff struct {
	Token     string    `json:"t"`
	Expires   time.Time `json:"x"`
	Challenge string    `json:"c"`
	Until     int64     `json:"u"`
}

func (rp *RP) aead() cipher.AEAD {
	b, err := aes.NewCipher(rp.handoffKey)
	if err != nil {
		panic(err) // a 32-byte key: cannot fail
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

// SealHandoff returns a hand-off code for a CLI that began its login with
// challenge.
func (rp *RP) SealHandoff(token string, expires time.Time, challenge string) (string, error) {
	b, err := json.Marshal(handoff{Token: token, Expires: expires, Challenge: challenge,
		Until: rp.cfg.Now().Add(HandoffTTL).Unix()})
	if err != nil {
		return "", fmt.Errorf("encoding a hand-off: %w", err)
	}
	g := rp.aead()
	nonce := make([]byte, g.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(g.Seal(nonce, nonce, b, []byte("handoff"))), nil
}

// RedeemHandoff opens a hand-off code with the CLI's verifier and returns
// the session token and its expiry. A code is redeemed once per replica and
// is useless without the verifier.
func (rp *RP) RedeemHandoff(code, verifier string) (token string, expires time.Time, err error) {
	if len(code) > maxHandoffBytes || len(verifier) > 128 {
		return "", time.Time{}, fmt.Errorf("%w: too long", ErrHandoff)
	}
	b, err := base64.RawURLEncoding.DecodeString(code)
	g := rp.aead()
	if err != nil || len(b) < g.NonceSize() {
		return "", time.Time{}, fmt.Errorf("%w: malformed", ErrHandoff)
	}
	plain, err := g.Open(nil, b[:g.NonceSize()], b[g.NonceSize():], []byte("handoff"))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: not sealed by this server", ErrHandoff)
	}
	var h handoff
	if err := json.Unmarshal(plain, &h); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrHandoff, err)
	}
	now := rp.cfg.Now()
	if now.Unix() >= h.Until {
		return "", time.Time{}, fmt.Errorf("%w: expired", ErrHandoff)
	}
	if subtle.ConstantTimeCompare([]byte(Challenge(verifier)), []byte(h.Challenge)) != 1 {
		return "", time.Time{}, fmt.Errorf("%w: verifier does not match", ErrHandoff)
	}
	if !rp.handoffs.consume(code, time.Unix(h.Until, 0), now) {
		return "", time.Time{}, fmt.Errorf("%w: already redeemed", ErrHandoff)
	}
	return h.Token, h.Expires, nil
}
