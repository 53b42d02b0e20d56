package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/auth/oidc"
)

// Single sign-on for `dialtone login --oidc`: the login command (the
// other login flows' file) adds a --oidc flag and, when it is set, calls
// oidcLogin and stores the session it answers as it stores a password
// login's.

// DefaultOIDCLoginTimeout bounds how long oidcLogin waits for the browser.
const DefaultOIDCLoginTimeout = 5 * time.Minute

// oidcLoginOptions configure oidcLogin.
type oidcLoginOptions struct {
	// Server is the server's base URL.
	Server string
	// Stdout shows the URL to open and the instructions.
	Stdout io.Writer
	// Stdin, when set, is read for a session pasted instead: the token (or
	// the JSON answer) that SERVER/v1/oidc/login shows when opened in a
	// browser on another machine.
	Stdin io.Reader
	// HTTPClient talks to the server; default http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds the wait; default DefaultOIDCLoginTimeout.
	Timeout time.Duration
	// opened, when set (tests), is told the login URL.
	opened func(loginURL string)
}

// oidcLogin signs in through the server's SSO with a loopback listener
// (RFC 8252 §7.3): it listens on 127.0.0.1:0, prints the server's login
// URL naming that listener and an S256 challenge, waits for the browser to
// arrive with a hand-off code, and redeems the code with its verifier at
// POST /v1/oidc/token. A session pasted on Stdin ends the wait as well.
func oidcLogin(ctx context.Context, o oidcLoginOptions) (api.OIDCSession, error) {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultOIDCLoginTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	server := strings.TrimRight(o.Server, "/")

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return api.OIDCSession{}, fmt.Errorf("listening for the browser: %w", err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	verifier := base64.RawURLEncoding.EncodeToString(raw)
	loginURL := server + "/v1/oidc/login?" + url.Values{
		"redirect_uri":          {"http://" + ln.Addr().String() + "/"},
		"code_challenge":        {oidc.Challenge(verifier)},
		"code_challenge_method": {"S256"},
	}.Encode()

	codes := make(chan string, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := r.URL.Query().Get("code")
		if r.URL.Path != "/" || code == "" {
			http.Error(w, "not a Dialtone sign-in", http.StatusBadRequest)
			return
		}
		select {
		case codes <- code:
		default:
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Dialtone: the command line has your sign-in. You can close this tab.\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	pasted := make(chan string, 1)
	if o.Stdin != nil {
		go func() {
			sc := bufio.NewScanner(o.Stdin)
			for sc.Scan() {
				if s := strings.TrimSpace(sc.Text()); s != "" {
					pasted <- s
					return
				}
			}
		}()
	}
	fmt.Fprintf(o.Stdout, "Open this URL in a browser to sign in:\n\n  %s\n\n", loginURL)
	if o.Stdin != nil {
		fmt.Fprintf(o.Stdout, "Browser on another machine? Open %s/v1/oidc/login there and paste the token it shows here.\n", server)
	}
	if o.opened != nil {
		o.opened(loginURL)
	}

	select {
	case code := <-codes:
		return redeemHandoff(ctx, o.HTTPClient, server, code, verifier)
	case s := <-pasted:
		return parsePastedSession(s)
	case <-ctx.Done():
		return api.OIDCSession{}, fmt.Errorf("waiting for the browser: %w", ctx.Err())
	}
}

// redeemHandoff exchanges a hand-off code for the session.
func redeemHandoff(ctx context.Context, c *http.Client, server, code, verifier string) (api.OIDCSession, error) {
	body, _ := json.Marshal(api.OIDCTokenRequest{Code: code, CodeVerifier: verifier})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/v1/oidc/token", bytes.NewReader(body))
	if err != nil {
		return api.OIDCSession{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return api.OIDCSession{}, fmt.Errorf("redeeming the sign-in: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return api.OIDCSession{}, fmt.Errorf("redeeming the sign-in: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return api.OIDCSession{}, fmt.Errorf("redeeming the sign-in: %s: %s", resp.Status, e.Error)
	}
	var s api.OIDCSession
	if err := json.Unmarshal(b, &s); err != nil || s.Token == "" {
		return api.OIDCSession{}, fmt.Errorf("redeeming the sign-in: malformed answer")
	}
	return s, nil
}

// parsePastedSession accepts the callback's JSON answer or its token alone.
func parsePastedSession(s string) (api.OIDCSession, error) {
	var sess api.OIDCSession
	if strings.HasPrefix(s, "{") {
		if err := json.Unmarshal([]byte(s), &sess); err != nil || sess.Token == "" {
			return api.OIDCSession{}, errors.New("pasted text is not a sign-in answer")
		}
		return sess, nil
	}
	if strings.ContainsAny(s, " \t\"") || len(s) > 256 {
		return api.OIDCSession{}, errors.New("pasted text is not a token")
	}
	return api.OIDCSession{Token: s}, nil
}
