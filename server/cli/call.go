package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// apiCall is one JSON request to the server's API.
type apiCall struct {
	server, ca, token string // token "" sends no Authorization
	method, path      string
	body              []byte // nil sends no body
	want              int    // the status that means success
	limit             int64  // bound on the answer read
}

// do sends the request and decodes a successful answer into v (which may be
// nil). Any other status is a *serverStatusError carrying the server's
// error message (and its Retry-After, when it asks for one).
func (c apiCall) do(ctx context.Context, v any) error {
	var rd io.Reader
	if c.body != nil {
		rd = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, strings.TrimSuffix(c.server, "/")+c.path, rd)
	if err != nil {
		return err
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc, err := newHTTPClient(c.ca, 30*time.Second)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("contacting server: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, c.limit))
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != c.want {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(rb, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(rb))
		}
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			e.Error += " (retry after " + ra + " s)"
		}
		return &serverStatusError{Code: resp.StatusCode, Msg: fmt.Sprintf("server answered %s: %s", resp.Status, e.Error)}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(rb, v); err != nil {
		return errors.Join(errors.New("decoding answer"), err)
	}
	return nil
}
