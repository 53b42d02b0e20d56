package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// PushResult is the server's answer to a metadata push.
type PushResult = wire.PushResult

// Revoke removes a published bundle and its signature from the publisher's
// metadata, re-signs it and pushes it with the reason. Updated phones then
// refuse the bundle.
func Revoke(ctx context.Context, o Options, target, reason string) (*PushResult, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, errors.New("revoke: a reason is required")
	}
	return change(ctx, o, target, reason, func(t map[string]*metadata.TargetFiles) error {
		if _, ok := t[target]; !ok {
			return fmt.Errorf("revoke: %s is not a published target", target)
		}
		delete(t, target)
		delete(t, target+".sig")
		return nil
	})
}

// Promote moves a published bundle to another channel by re-signing its
// entry; nothing is uploaded again.
func Promote(ctx context.Context, o Options, target, channel string) (*PushResult, error) {
	if !wire.ValidID(channel) {
		return nil, fmt.Errorf("promote: bad channel %q", channel)
	}
	return change(ctx, o, target, "", func(t map[string]*metadata.TargetFiles) error {
		tf, ok := t[target]
		if !ok || tf.Custom == nil {
			return fmt.Errorf("promote: %s is not a published firmware target", target)
		}
		var c wire.TargetCustom
		if err := json.Unmarshal(*tf.Custom, &c); err != nil {
			return fmt.Errorf("promote: %s: %w", target, err)
		}
		if c.Channel == channel {
			return fmt.Errorf("promote: %s is already on %s", target, channel)
		}
		c.Channel = channel
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		raw := json.RawMessage(b)
		tf.Custom = &raw
		return nil
	})
}

func change(ctx context.Context, o Options, target, reason string, edit func(map[string]*metadata.TargetFiles) error) (*PushResult, error) {
	if o.Key == nil {
		return nil, errors.New("a publisher key is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Expires == 0 {
		o.Expires = 30 * 24 * time.Hour
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	role, raw, err := fetchDelegation(ctx, o, target)
	if err != nil {
		return nil, err
	}
	var zero metadata.Metadata[metadata.TargetsType]
	md, err := zero.FromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing role metadata: %w", err)
	}
	if err := signedBy(md, role, o.Key); err != nil {
		return nil, err
	}
	if err := edit(md.Signed.Targets); err != nil {
		return nil, err
	}
	md.Signed.Version++
	md.Signed.Expires = o.Now().UTC().Truncate(time.Second).Add(o.Expires)
	md.ClearSignatures()
	if _, err := md.Sign(o.Key); err != nil {
		return nil, fmt.Errorf("signing metadata: %w", err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		return nil, err
	}
	return Push(ctx, o.Server, o.Token, o.HTTPClient, reason, map[string][]byte{role: b})
}

// Push uploads offline-signed metadata files, keyed by role, to the server.
func Push(ctx context.Context, server, token string, hc *http.Client, reason string, files map[string][]byte) (*PushResult, error) {
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if reason != "" {
		if err := mw.WriteField("reason", reason); err != nil {
			return nil, err
		}
	}
	for role, b := range files {
		w, err := mw.CreateFormFile(role, role+".json")
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(server, "/")+"/v1/tuf/push", &body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pushing metadata: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, serverError(resp.StatusCode, rb)
	}
	var res PushResult
	if err := json.Unmarshal(rb, &res); err != nil {
		return nil, fmt.Errorf("decoding answer: %w", err)
	}
	return &res, nil
}
