package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/auth/oidc"
	"github.com/dialtone-dev/dialtone/server/auth/oidc/oidctest"
)

type linkedIssuer struct{ subject string }

func (l linkedIssuer) IssueOIDCSession(_ context.Context, id oidc.Identity) (string, time.Time, error) {
	if id.Subject != l.subject {
		return "", time.Time{}, fmt.Errorf("%s: %w", id.Subject, oidc.ErrUnknownIdentity)
	}
	return "dts_cli_" + id.Subject, time.Now().Add(time.Hour), nil
}

func TestOIDCLoginLoopback(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	t.Cleanup(srv.Close)
	redirect := "http://" + srv.Listener.Addr().String() + "/v1/oidc/callback"
	op := oidctest.Start(t, oidctest.Client{ID: "dialtone", Secret: "s3cret", RedirectURI: redirect})
	rp, err := oidc.New(oidc.Config{Issuer: op.Issuer, ClientID: "dialtone", ClientSecret: "s3cret",
		RedirectURL: redirect, Key: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.NewOIDC(rp, linkedIssuer{subject: oidctest.OtherSubject}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = h
	srv.Start()

	urls := make(chan string, 1)
	type result struct {
		s   api.OIDCSession
		err error
	}
	done := make(chan result, 1)
	var out bytes.Buffer
	go func() {
		s, err := oidcLogin(t.Context(), oidcLoginOptions{Server: srv.URL, Stdout: &out, Timeout: time.Minute,
			opened: func(u string) { urls <- u }})
		done <- result{s, err}
	}()
	loginURL := <-urls
	browser := oidctest.Browser(t, "/v1/oidc/callback")
	cb := oidctest.SignIn(t, browser, loginURL, oidctest.OtherUser, oidctest.Password)
	resp, body := oidctest.Get(t, browser, cb.String()) // follows to the loopback
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "close this tab") {
		t.Fatalf("loopback page: %s %s", resp.Status, body)
	}
	r := <-done
	if r.err != nil || r.s.Token != "dts_cli_id2" {
		t.Fatalf("oidcLogin: %+v %v", r.s, r.err)
	}
	if !strings.Contains(out.String(), loginURL) {
		t.Errorf("output does not show the URL: %s", out.String())
	}
}

func TestOIDCLoginPasted(t *testing.T) {
	for in, want := range map[string]string{
		"dts_abc\n": "dts_abc",
		`{"token": "dts_json", "expires": "2030-01-01T00:00:00Z"}` + "\n": "dts_json",
	} {
		s, err := oidcLogin(t.Context(), oidcLoginOptions{Server: "http://127.0.0.1:1", Stdout: &bytes.Buffer{},
			Stdin: strings.NewReader(in), Timeout: 10 * time.Second})
		if err != nil || s.Token != want {
			t.Errorf("pasted %q: %+v %v", in, s, err)
		}
	}
	if _, err := parsePastedSession("not a token"); err == nil {
		t.Error("accepted text with spaces")
	}
}
