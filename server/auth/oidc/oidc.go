// Package oidc signs operators in with an external OpenID Connect identity
// provider (single sign-on): the authorization code flow with PKCE (S256),
// for a confidential client, as Dialtone's server is.
//
// # The flow
//
//  1. Begin answers the provider's authorization URL and sets a state
//     cookie: short-lived (StateTTL), HMAC-SHA256-signed, HttpOnly,
//     SameSite=Lax, Secure when the redirect URL is https. It carries the
//     state, the nonce and the PKCE verifier of this login (and, for the
//     CLI, its loopback address and challenge), so that the server keeps
//     nothing between the two legs and any replica sharing the key can
//     finish a login. One browser has one login under way: a second Begin
//     replaces the first's cookie.
//  2. Finish, on the callback: the cookie's signature and expiry, the state
//     parameter against the cookie's (constant time), the state not already
//     consumed on this replica, then the code exchanged at the provider's
//     token endpoint with the PKCE verifier, then the ID token verified with
//     coreos/go-oidc: signature against the provider's published keys,
//     issuer, audience (and azp when there are several audiences), expiry;
//     then its nonce against the cookie's. The access token is never used:
//     the identity is the ID token's issuer and subject.
//  3. The caller (server/api) turns the Identity into a Dialtone session
//     through a SessionIssuer, which maps issuer+subject — never the email
//     alone — to a user an admin linked.
//
// Errors wrap the sentinels of errors.go; their text may carry what the
// provider answered and is for server logs only.
package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Defaults and limits.
const (
	// DefaultStateTTL is how long a login may take between Begin and the
	// callback.
	DefaultStateTTL = 10 * time.Minute
	// DefaultHTTPTimeout bounds each back-channel call to the provider
	// (discovery, keys, token exchange).
	DefaultHTTPTimeout = 15 * time.Second
	// MinKeyBytes is the shortest Config.Key.
	MinKeyBytes = 32
	// maxCookieBytes bounds the state cookie read back.
	maxCookieBytes = 4096
	// maxParamBytes bounds the callback's code and state parameters.
	maxParamBytes = 2048
	// maxConsumed bounds the states and hand-off codes remembered as used.
	maxConsumed = 1 << 16
)

// Config configures the relying party.
type Config struct {
	// Issuer is the provider's issuer URL; discovery reads
	// Issuer/.well-known/openid-configuration and the issuer it names must
	// be exactly this.
	Issuer string
	// ClientID and ClientSecret are this server's client at the provider.
	ClientID     string
	ClientSecret string
	// RedirectURL is the callback the provider sends the browser back to,
	// registered at the provider: https://HOST/v1/oidc/callback.
	RedirectURL string
	// Scopes requested besides openid; default email and profile.
	Scopes []string
	// AllowedDomains, when not empty, admits only identities whose hosted
	// domain claim (hd) or verified email's domain is one of these.
	AllowedDomains []string
	// Key signs state cookies and seals CLI hand-off codes; at least
	// MinKeyBytes random bytes, the same on every replica.
	Key []byte
	// StateTTL bounds a login's duration; default DefaultStateTTL.
	StateTTL time.Duration
	// HTTPClient makes the back-channel calls; default a client with
	// DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Identity is who the provider says signed in, from the verified ID token.
type Identity struct {
	// Issuer and Subject identify the account: the pair is the only key a
	// SessionIssuer may map to a user.
	Issuer  string
	Subject string
	// Email and EmailVerified are informational (display, linking UI).
	Email         string
	EmailVerified bool
	// AMR are the authentication methods the provider asserts (RFC 8176).
	AMR []string
	// AuthTime is when the user authenticated at the provider, if told.
	AuthTime time.Time
}

// Factor kinds of RFC 8176 amr values.
var (
	knowledge  = []string{"pwd", "pin", "kba"}
	possession = []string{"otp", "hwk", "swk", "sms", "tel", "sc", "pop"}
	inherence  = []string{"fpt", "face", "iris", "retina", "vbm"}
)

// MFA reports whether the provider asserts a multi-factor authentication:
// amr holds "mfa", or methods of at least two kinds among knowledge (pwd,
// pin, kba), possession (otp, hwk, swk, sms, tel, sc, pop) and inherence
// (fpt, face, iris, retina, vbm).
func (id Identity) MFA() bool {
	if slices.Contains(id.AMR, "mfa") {
		return true
	}
	kinds := 0
	for _, k := range [][]string{knowledge, possession, inherence} {
		if slices.ContainsFunc(id.AMR, func(m string) bool { return slices.Contains(k, m) }) {
			kinds++
		}
	}
	return kinds >= 2
}

// RP is the relying party: Dialtone's server as the provider's client.
type RP struct {
	cfg        Config
	secure     bool
	stateKey   []byte
	handoffKey []byte

	mu       sync.Mutex
	provider *gooidc.Provider
	verifier *gooidc.IDTokenVerifier
	oauth    oauth2.Config

	states   consumed
	handoffs consumed
}

// New checks cfg and returns the relying party. It does not reach the
// provider: Discover does, at the first login if not before.
func New(cfg Config) (*RP, error) {
	iss, err := url.Parse(cfg.Issuer)
	if err != nil || (iss.Scheme != "https" && iss.Scheme != "http") || iss.Host == "" {
		return nil, fmt.Errorf("%w: issuer %q is not an http(s) URL", ErrConfig, cfg.Issuer)
	}
	red, err := url.Parse(cfg.RedirectURL)
	if err != nil || (red.Scheme != "https" && red.Scheme != "http") || red.Host == "" {
		return nil, fmt.Errorf("%w: redirect URL %q is not an http(s) URL", ErrConfig, cfg.RedirectURL)
	}
	switch {
	case cfg.ClientID == "":
		return nil, fmt.Errorf("%w: a client ID is required", ErrConfig)
	case cfg.ClientSecret == "":
		return nil, fmt.Errorf("%w: a client secret is required", ErrConfig)
	case len(cfg.Key) < MinKeyBytes:
		return nil, fmt.Errorf("%w: the state key needs at least %d bytes", ErrConfig, MinKeyBytes)
	}
	for i, d := range cfg.AllowedDomains {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" || strings.ContainsAny(d, "@/ ") {
			return nil, fmt.Errorf("%w: allowed domain %q", ErrConfig, cfg.AllowedDomains[i])
		}
		cfg.AllowedDomains[i] = d
	}
	if cfg.Scopes == nil {
		cfg.Scopes = []string{"email", "profile"}
	}
	if cfg.StateTTL <= 0 {
		cfg.StateTTL = DefaultStateTTL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &RP{
		cfg:        cfg,
		secure:     red.Scheme == "https",
		stateKey:   derive(cfg.Key, "dialtone oidc state v1"),
		handoffKey: derive(cfg.Key, "dialtone oidc cli handoff v1"),
	}, nil
}

func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// backChannel returns ctx carrying the HTTP client for go-oidc and oauth2.
func (rp *RP) backChannel(ctx context.Context) context.Context {
	ctx = gooidc.ClientContext(ctx, rp.cfg.HTTPClient)
	return context.WithValue(ctx, oauth2.HTTPClient, rp.cfg.HTTPClient)
}

// Discover reads the provider's discovery document (once it succeeded, not
// again). The provider's keys are fetched, and refetched on an unknown key
// ID, as ID tokens are verified.
func (rp *RP) Discover(ctx context.Context) error {
	_, _, err := rp.discovered(ctx)
	return err
}

func (rp *RP) discovered(ctx context.Context) (*gooidc.IDTokenVerifier, oauth2.Config, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.provider != nil {
		return rp.verifier, rp.oauth, nil
	}
	// The provider keeps this context's client (not its deadline) for
	// fetching keys later.
	p, err := gooidc.NewProvider(rp.backChannel(context.WithoutCancel(ctx)), rp.cfg.Issuer)
	if err != nil {
		return nil, oauth2.Config{}, fmt.Errorf("%w: discovery at %s: %w", ErrProvider, rp.cfg.Issuer, err)
	}
	rp.provider = p
	rp.verifier = p.Verifier(&gooidc.Config{ClientID: rp.cfg.ClientID, Now: rp.cfg.Now})
	rp.oauth = oauth2.Config{
		ClientID:     rp.cfg.ClientID,
		ClientSecret: rp.cfg.ClientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  rp.cfg.RedirectURL,
		Scopes:       append([]string{gooidc.ScopeOpenID}, rp.cfg.Scopes...),
	}
	return rp.verifier, rp.oauth, nil
}

// CLI asks that a login end at a command line's loopback listener
// (RFC 8252 §7.3) instead of answering the session as JSON.
type CLI struct {
	// RedirectURI is http://127.0.0.1:<port>/ or http://[::1]:<port>/.
	RedirectURI string
	// Challenge is BASE64URL(SHA-256(verifier)) of a verifier only the CLI
	// knows; it redeems the hand-off code with it (RedeemHandoff).
	Challenge string
}

// Begin starts a login: it sets the state cookie on w and returns the
// provider's authorization URL to redirect the browser to. cli is the zero
// CLI for a plain browser login.
func (rp *RP) Begin(ctx context.Context, w http.ResponseWriter, cli CLI) (string, error) {
	if cli != (CLI{}) {
		u, err := ValidLoopback(cli.RedirectURI)
		if err != nil {
			return "", err
		}
		if !validChallenge(cli.Challenge) {
			return "", fmt.Errorf("%w: a CLI login needs a 43-character S256 challenge", ErrHandoff)
		}
		cli.RedirectURI = u
	}
	_, oc, err := rp.discovered(ctx)
	if err != nil {
		return "", err
	}
	st := loginState{
		State:     random(32),
		Nonce:     random(32),
		Verifier:  oauth2.GenerateVerifier(),
		Expires:   rp.cfg.Now().Add(rp.cfg.StateTTL).Unix(),
		Loopback:  cli.RedirectURI,
		Challenge: cli.Challenge,
	}
	value, err := rp.sealState(st)
	if err != nil {
		return "", err
	}
	http.SetCookie(w, rp.cookie(value, int(rp.cfg.StateTTL/time.Second)))
	return oc.AuthCodeURL(st.State, gooidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier)), nil
}

// Result is a finished login.
type Result struct {
	Identity Identity
	// CLI is the command line's loopback and challenge if it began the
	// login, else the zero CLI.
	CLI CLI
}

// Finish completes a login on the provider's callback request r: see the
// package documentation for the checks. It always clears the state cookie.
func (rp *RP) Finish(ctx context.Context, w http.ResponseWriter, r *http.Request) (Result, error) {
	http.SetCookie(w, rp.cookie("", -1))
	c, err := r.Cookie(rp.cookieName())
	if err != nil {
		return Result{}, fmt.Errorf("%w: no state cookie", ErrState)
	}
	if len(c.Value) > maxCookieBytes {
		return Result{}, fmt.Errorf("%w: state cookie too long", ErrState)
	}
	st, err := rp.openState(c.Value)
	if err != nil {
		return Result{}, err
	}
	now := rp.cfg.Now()
	if now.Unix() >= st.Expires {
		return Result{}, fmt.Errorf("%w: login expired", ErrState)
	}
	q := r.URL.Query()
	state, code := q.Get("state"), q.Get("code")
	if len(state) > maxParamBytes || len(code) > maxParamBytes {
		return Result{}, fmt.Errorf("%w: parameter too long", ErrState)
	}
	if subtle.ConstantTimeCompare([]byte(state), []byte(st.State)) != 1 {
		return Result{}, fmt.Errorf("%w: state parameter does not match the cookie", ErrState)
	}
	if e := q.Get("error"); e != "" {
		return Result{}, fmt.Errorf("%w: %.64q: %.256q", ErrProvider, e, q.Get("error_description"))
	}
	if code == "" {
		return Result{}, fmt.Errorf("%w: no code", ErrExchange)
	}
	if !rp.states.consume(st.State, time.Unix(st.Expires, 0), now) {
		return Result{}, ErrReplay
	}
	verifier, oc, err := rp.discovered(ctx)
	if err != nil {
		return Result{}, err
	}
	bc := rp.backChannel(ctx)
	tok, err := oc.Exchange(bc, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrExchange, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return Result{}, fmt.Errorf("%w: the token response has no id_token", ErrIDToken)
	}
	idt, err := verifier.Verify(bc, raw)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrIDToken, err)
	}
	var claims struct {
		AZP           string   `json:"azp"`
		Email         string   `json:"email"`
		EmailVerified any      `json:"email_verified"`
		HD            string   `json:"hd"`
		AMR           []string `json:"amr"`
		AuthTime      int64    `json:"auth_time"`
	}
	if err := idt.Claims(&claims); err != nil {
		return Result{}, fmt.Errorf("%w: claims: %w", ErrIDToken, err)
	}
	// OpenID Connect Core 3.1.3.7: with several audiences, azp must name us.
	if len(idt.Audience) > 1 && claims.AZP != rp.cfg.ClientID {
		return Result{}, fmt.Errorf("%w: several audiences and azp %q is not this client", ErrIDToken, claims.AZP)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		return Result{}, ErrNonce
	}
	if idt.Subject == "" {
		return Result{}, fmt.Errorf("%w: no subject", ErrIDToken)
	}
	id := Identity{Issuer: idt.Issuer, Subject: idt.Subject, Email: claims.Email, AMR: claims.AMR,
		EmailVerified: claims.EmailVerified == true || claims.EmailVerified == "true"}
	if claims.AuthTime > 0 {
		id.AuthTime = time.Unix(claims.AuthTime, 0).UTC()
	}
	if err := rp.allowed(id, claims.HD); err != nil {
		return Result{}, err
	}
	return Result{Identity: id, CLI: CLI{RedirectURI: st.Loopback, Challenge: st.Challenge}}, nil
}

// allowed applies AllowedDomains.
func (rp *RP) allowed(id Identity, hd string) error {
	if len(rp.cfg.AllowedDomains) == 0 {
		return nil
	}
	if hd != "" && slices.Contains(rp.cfg.AllowedDomains, strings.ToLower(hd)) {
		return nil
	}
	if at := strings.LastIndexByte(id.Email, '@'); id.EmailVerified && at > 0 &&
		slices.Contains(rp.cfg.AllowedDomains, strings.ToLower(id.Email[at+1:])) {
		return nil
	}
	return fmt.Errorf("%w: hd %q, email %q (verified %v)", ErrDomain, hd, id.Email, id.EmailVerified)
}

// random returns n random bytes, base64url.
func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// consumed remembers single-use values until they expire, at most
// maxConsumed of them (past that the soonest to expire are forgotten: the
// provider still refuses a reused code).
type consumed struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// consume records v until exp and reports whether it was new.
func (c *consumed) consume(v string, exp, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if e, ok := c.seen[v]; ok && now.Before(e) {
		return false
	}
	if len(c.seen) >= maxConsumed {
		for k, e := range c.seen {
			if !now.Before(e) {
				delete(c.seen, k)
			}
		}
		for len(c.seen) >= maxConsumed {
			var oldest string
			var first time.Time
			for k, e := range c.seen {
				if oldest == "" || e.Before(first) {
					oldest, first = k, e
				}
			}
			delete(c.seen, oldest)
		}
	}
	c.seen[v] = exp
	return true
}
