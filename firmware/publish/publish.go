// Package publish owns the publisher's side of a release: turning a signed
// bundle into new delegated TUF targets metadata signed with the publisher's
// key, and uploading all three to a Dialtone server. It is what
// `dialtone firmware publish` and CI pipelines run.
package publish

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Options for one publish.
type Options struct {
	Server     string // base URL, e.g. http://127.0.0.1:8080
	Token      string
	BundlePath string
	// SignaturePath is the bundle's signature (cosign sign-blob format);
	// empty means BundlePath+".sig", created with Key when missing.
	SignaturePath string
	Key           signature.Signer // the publisher's key: signs the metadata
	Channel       string           // default "stable"
	Publisher     string           // name recorded in the target; default the role name
	MinVersion    string
	Expires       time.Duration // of the new metadata; default 30 days
	HTTPClient    *http.Client
	Logger        *slog.Logger
	// Progress, when set, wraps the upload stream (e.g. a progress bar).
	Progress func(total int64, r io.Reader) io.Reader
	Now      func() time.Time
}

// Result is the server's answer to an accepted publish.
type Result = wire.PublishResult

// ServerError is a refusal from the server, with the check that failed.
type ServerError struct {
	Status int
	Check  string
	Msg    string
}

func (e *ServerError) Error() string {
	if e.Check != "" {
		return fmt.Sprintf("server refused it (%d, check %s): %s", e.Status, e.Check, e.Msg)
	}
	return fmt.Sprintf("server refused the request (%d): %s", e.Status, e.Msg)
}

// ErrForeignMetadata means the server handed us role metadata that our key
// did not sign: signing it again would launder whatever the server put in it.
var ErrForeignMetadata = errors.New("role metadata from the server is not signed by the publisher key")

// Run publishes one bundle.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Key == nil {
		return nil, errors.New("publish: a publisher key is required")
	}
	if o.Channel == "" {
		o.Channel = "stable"
	}
	if !wire.ValidID(o.Channel) {
		return nil, fmt.Errorf("publish: bad channel %q", o.Channel)
	}
	if o.Expires == 0 {
		o.Expires = 30 * 24 * time.Hour
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SignaturePath == "" {
		o.SignaturePath = o.BundlePath + ".sig"
	}

	man, length, digest, err := inspect(ctx, o.BundlePath)
	if err != nil {
		return nil, err
	}
	sig, err := bundleSignature(ctx, o, digest)
	if err != nil {
		return nil, err
	}
	// One path per model and version, whatever the channel: promoting a
	// release from beta to stable re-signs its entry, never re-uploads it.
	target := "firmware/" + man.Model + "/" + man.Model + "-" + man.Version + ".tar"
	role, raw, err := fetchDelegation(ctx, o, target)
	if err != nil {
		return nil, err
	}
	md, err := Extend(o, Release{Role: role, Metadata: raw, Target: target, Manifest: man, Length: length, SHA256: digest, Signature: sig})
	if err != nil {
		return nil, err
	}
	return upload(ctx, o, role, md, sig, length)
}

func inspect(ctx context.Context, p string) (firmware.Manifest, int64, []byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return firmware.Manifest{}, 0, nil, fmt.Errorf("publish: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(f, h)}
	man, err := firmware.Verify(ctx, cr, firmware.DefaultLimits())
	if err != nil {
		return firmware.Manifest{}, 0, nil, fmt.Errorf("publish: checking bundle: %w", err)
	}
	// Read anything Verify left (it must have consumed the whole stream).
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return firmware.Manifest{}, 0, nil, fmt.Errorf("publish: %w", err)
	}
	return man, cr.n, h.Sum(nil), nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func bundleSignature(ctx context.Context, o Options, digest []byte) ([]byte, error) {
	pub, err := o.Key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	sig, err := os.ReadFile(o.SignaturePath)
	if errors.Is(err, os.ErrNotExist) {
		o.Logger.Info("no signature file: signing the bundle now", "signature", o.SignaturePath)
		sig, err = firmware.SignFile(ctx, o.Key, o.BundlePath)
		if err != nil {
			return nil, fmt.Errorf("publish: signing bundle: %w", err)
		}
		return sig, nil
	}
	if err != nil {
		return nil, fmt.Errorf("publish: reading signature: %w", err)
	}
	if len(sig) > 4096 {
		return nil, fmt.Errorf("publish: signature file %s is %d bytes: not a bundle signature", o.SignaturePath, len(sig))
	}
	if err := firmware.VerifySignatureDigest(pub, digest, sig); err != nil {
		return nil, fmt.Errorf("publish: %s does not verify with the publisher key: %w", o.SignaturePath, err)
	}
	return sig, nil
}

type delegationResponse struct {
	Role     string          `json:"role"`
	Metadata json.RawMessage `json:"metadata"`
}

func fetchDelegation(ctx context.Context, o Options, target string) (string, []byte, error) {
	u, err := url.Parse(strings.TrimSuffix(o.Server, "/") + "/v1/firmware/delegation")
	if err != nil {
		return "", nil, fmt.Errorf("publish: server url: %w", err)
	}
	u.RawQuery = url.Values{"target": {target}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", nil, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+o.Token)
	resp, err := o.HTTPClient.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("publish: asking for the role's metadata: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", nil, fmt.Errorf("publish: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, serverError(resp.StatusCode, body)
	}
	var d delegationResponse
	if err := json.Unmarshal(body, &d); err != nil {
		return "", nil, fmt.Errorf("publish: decoding delegation: %w", err)
	}
	return d.Role, d.Metadata, nil
}

func serverError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
		Check string `json:"check"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(body))
	}
	return &ServerError{Status: status, Check: e.Check, Msg: e.Error}
}

// Release is one bundle to add to a role's metadata.
type Release struct {
	Role      string
	Metadata  []byte // the role's current signed metadata
	Target    string // target path of the bundle
	Manifest  firmware.Manifest
	Length    int64
	SHA256    []byte
	Signature []byte // the bundle's signature file
}

// Extend adds the bundle and its signature to the role's metadata, bumps
// its version and signs it with o.Key, which must have signed the current
// metadata too (ErrForeignMetadata otherwise).
func Extend(o Options, rel Release) ([]byte, error) {
	role, target, man, length, digest, sig := rel.Role, rel.Target, rel.Manifest, rel.Length, rel.SHA256, rel.Signature
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Expires == 0 {
		o.Expires = 30 * 24 * time.Hour
	}
	if o.Channel == "" {
		o.Channel = "stable"
	}
	var zero metadata.Metadata[metadata.TargetsType]
	md, err := zero.FromBytes(rel.Metadata)
	if err != nil {
		return nil, fmt.Errorf("publish: parsing role metadata: %w", err)
	}
	if err := signedBy(md, role, o.Key); err != nil {
		return nil, err
	}
	publisher := o.Publisher
	if publisher == "" {
		publisher = role
	}
	custom := wire.TargetCustom{
		Model: man.Model, Version: man.Version, MinVersion: o.MinVersion, Hardware: man.Hardware,
		Channel: o.Channel, Publisher: publisher, Signature: target + ".sig",
		Created: o.Now().UTC().Truncate(time.Second),
	}
	cb, err := json.Marshal(custom)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	rm := json.RawMessage(cb)
	md.Signed.Targets[target] = &metadata.TargetFiles{Length: length, Hashes: metadata.Hashes{"sha256": digest}, Custom: &rm, Path: target}
	ss := sha256.Sum256(sig)
	md.Signed.Targets[target+".sig"] = &metadata.TargetFiles{Length: int64(len(sig)), Hashes: metadata.Hashes{"sha256": ss[:]}, Path: target + ".sig"}
	md.Signed.Version++
	md.Signed.Expires = o.Now().UTC().Truncate(time.Second).Add(o.Expires)
	md.ClearSignatures()
	if _, err := md.Sign(o.Key); err != nil {
		return nil, fmt.Errorf("publish: signing metadata: %w", err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	return b, nil
}

// signedBy checks that md carries a valid signature by key, using go-tuf's
// own verification through a one-role delegation.
func signedBy(md *metadata.Metadata[metadata.TargetsType], role string, key signature.Signer) error {
	pub, err := key.PublicKey()
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	id, err := k.ID()
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	d := metadata.Targets(time.Now().Add(time.Hour))
	d.Signed.Delegations = &metadata.Delegations{
		Keys:  map[string]*metadata.Key{id: k},
		Roles: []metadata.DelegatedRole{{Name: role, KeyIDs: []string{id}, Threshold: 1, Paths: []string{"*"}}},
	}
	if err := d.VerifyDelegate(role, md); err != nil {
		return fmt.Errorf("%w (role %s, key %s): %v", ErrForeignMetadata, role, id[:12], err)
	}
	return nil
}

func upload(ctx context.Context, o Options, role string, md, sig []byte, length int64) (*Result, error) {
	f, err := os.Open(o.BundlePath)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	defer f.Close()
	var bundle io.Reader = f
	if o.Progress != nil {
		bundle = o.Progress(length, f)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			if err := mw.WriteField("role", role); err != nil {
				return err
			}
			for _, part := range []struct {
				name string
				data io.Reader
			}{{"metadata", bytes.NewReader(md)}, {"signature", bytes.NewReader(sig)}, {"bundle", bundle}} {
				w, err := mw.CreateFormFile(part.name, part.name)
				if err != nil {
					return err
				}
				if _, err := io.CopyBuffer(w, part.data, make([]byte, 1<<20)); err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(o.Server, "/")+"/v1/firmware", pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+o.Token)
	resp, err := o.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("publish: uploading: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, serverError(resp.StatusCode, body)
	}
	var res Result
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("publish: decoding answer: %w", err)
	}
	o.Logger.Info("published", "target", res.Target, "sha256", res.SHA256)
	return &res, nil
}
