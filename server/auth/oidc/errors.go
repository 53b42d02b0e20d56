package oidc

import "errors"

// Refusals of a sign-in. Each wraps one of these sentinels; the HTTP
// handlers map them to a generic message and log the detail server-side,
// so that nothing the identity provider answered reaches the browser.
var (
	// ErrConfig: the configuration is incomplete or malformed.
	ErrConfig = errors.New("oidc: bad configuration")
	// ErrState: the callback's state cookie is missing, expired, not signed
	// by this server, or does not match the state parameter.
	ErrState = errors.New("oidc: bad or missing state")
	// ErrReplay: a callback for a state already consumed.
	ErrReplay = errors.New("oidc: callback replayed")
	// ErrProvider: the identity provider answered the authorization
	// request with an error, or could not be reached.
	ErrProvider = errors.New("oidc: identity provider refused or unreachable")
	// ErrExchange: the code could not be exchanged for tokens (reused,
	// expired, wrong PKCE verifier, wrong client credentials).
	ErrExchange = errors.New("oidc: code exchange failed")
	// ErrIDToken: the ID token is missing or fails verification
	// (signature, issuer, audience, authorized party, expiry).
	ErrIDToken = errors.New("oidc: ID token refused")
	// ErrNonce: the ID token's nonce is not the one this login sent.
	ErrNonce = errors.New("oidc: ID token nonce mismatch")
	// ErrDomain: the identity's email or hosted domain is not allowed.
	ErrDomain = errors.New("oidc: domain not allowed")
	// ErrHandoff: a CLI hand-off code is malformed, expired, already
	// redeemed, or its verifier does not match.
	ErrHandoff = errors.New("oidc: bad hand-off code")
	// ErrLoopback: a CLI redirect is not http://127.0.0.1:<port>/.
	ErrLoopback = errors.New("oidc: redirect must be http://127.0.0.1:<port>/ or http://[::1]:<port>/")

	// ErrUnknownIdentity is what a SessionIssuer wraps when no user is
	// linked to the identity's issuer and subject.
	ErrUnknownIdentity = errors.New("oidc: identity not linked to a user")
	// ErrSecondFactor is what a SessionIssuer wraps when the user must
	// give a second factor and the identity provider asserted none.
	ErrSecondFactor = errors.New("oidc: second factor required")
)
