// Package oidctest runs a real OpenID provider in-process for tests:
// zitadel/oidc's example OP (github.com/zitadel/oidc/v3/example/server),
// with its in-memory storage, its two example users and a username and
// password login form, on 127.0.0.1:0. Only tests import it.
package oidctest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

// The example OP's users (storage.NewUserStore); both have password
// Password. Subjects are their IDs.
const (
	// AdminUser is "test-user@127.0.0.1", subject AdminSubject.
	AdminUser    = "test-user@127.0.0.1"
	AdminSubject = "id1"
	// OtherUser is "test-user2", subject OtherSubject.
	OtherUser    = "test-user2"
	OtherSubject = "id2"
	Password     = "verysecure"
)

// Client is a confidential (client_secret_basic) web client to register.
type Client struct {
	ID, Secret  string
	RedirectURI string
}

// OP is a running provider.
type OP struct {
	// Issuer is http://127.0.0.1:PORT/.
	Issuer string
	srv    *httptest.Server
}

// Start starts a provider with clients registered and stops it at the
// end of the test.
func Start(t testing.TB, clients ...Client) *OP {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String() + "/"
	reg := map[string]*storage.Client{}
	for _, c := range clients {
		reg[c.ID] = storage.WebClient(c.ID, c.Secret, c.RedirectURI)
	}
	st := storage.NewStorageWithClients(storage.NewUserStore(issuer), reg)
	// A nil logger: SetupServer would otherwise replace slog's default.
	srv.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
	srv.Start()
	t.Cleanup(srv.Close)
	return &OP{Issuer: issuer, srv: srv}
}

// Browser returns an HTTP client with a cookie jar that follows redirects
// except to a URL whose path is stopAt: that response is returned as is.
func Browser(t testing.TB, stopAt string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) > 10 {
			return errors.New("too many redirects")
		}
		if req.URL.Path == stopAt {
			return http.ErrUseLastResponse
		}
		return nil
	}}
}

// SignIn drives a browser from start (the relying party's login URL)
// through the provider's login form with user and password, up to the
// provider's redirect to a URL whose path is the browser's stopAt, and
// returns that redirect's target without following it.
func SignIn(t testing.TB, browser *http.Client, start, user, password string) *url.URL {
	t.Helper()
	resp, err := browser.Get(start)
	if err != nil {
		t.Fatalf("opening %s: %v", start, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/login/username" {
		t.Fatalf("want the provider's login form, got %s at %s: %s", resp.Status, resp.Request.URL, body)
	}
	id := resp.Request.URL.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("login form at %s has no authRequestID", resp.Request.URL)
	}
	form := url.Values{"id": {id}, "username": {user}, "password": {password}}
	action := resp.Request.URL.ResolveReference(&url.URL{Path: "/login/username"})
	resp, err = browser.PostForm(action.String(), form)
	if err != nil {
		t.Fatalf("posting the login form: %v", err)
	}
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("login form answered %s at %s: %s", resp.Status, resp.Request.URL, strings.TrimSpace(string(body)))
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("provider's redirect: %v", err)
	}
	return loc
}

// Get fetches u with browser and returns the status and body.
func Get(t testing.TB, browser *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := browser.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(fmt.Errorf("reading %s: %w", u, err))
	}
	return resp, string(b)
}
