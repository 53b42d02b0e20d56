// Package attest owns the agent's side of enrollment and attestation
// (DESIGN.md §5): enrolling the phone's TPM with the server (EK and its
// certificate, the AK, and the credential activation that proves the AK is
// that TPM's), measuring the firmware it boots and installs into the
// measurement PCR with its event log (agent/measure), and answering the
// server's nonces with quotes.
package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/agent/measure"
	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// TPM is the phone's TPM as this package uses it: commands, and sequences
// that load keys, run with the TPM to themselves (agent/tpm.Shared).
type TPM interface {
	transport.TPM
	Exclusive(ctx context.Context, fn func(transport.TPM) error) error
	Opener() func(ctx context.Context) (transport.TPMCloser, error)
}

// Config configures a Client.
type Config struct {
	HTTP   *http.Client
	Server string // https://HOST:PORT
	Device string
	Model  string
	// Token is a one-time enrollment token (dialtone devices
	// enroll-token); empty when the device is allowlisted or approved.
	Token string
	TPM   TPM
	// PCR is the measurement PCR; agent/tpm.DefaultPCR when 0.
	PCR uint8
	// Dir keeps the measurement log and the enrollment record.
	Dir    string
	Logger *slog.Logger
}

// Client enrolls and attests the phone.
type Client struct {
	c   Config
	log *slog.Logger

	mu  sync.Mutex // the measurement log
	ml  *measure.Log
	err error // why the log cannot explain the PCR, when it cannot

	certMu sync.Mutex
	cert   *tls.Certificate // the device certificate with its TPM signer

	tokenMu sync.Mutex
	token   string // the attestation token, once unsealed
}

// ErrServer wraps a refusal from the server: its message says why.
var ErrServer = errors.New("server refused")

// maxAnswer bounds what the client reads of an answer.
const maxAnswer = 1 << 20

// New opens the measurement log against the PCR's current value. A log
// that does not explain the PCR (lost, or extended out of band) is kept as
// it is and reported by Attest's verdict, never rewritten.
func New(ctx context.Context, c Config) (*Client, error) {
	if c.HTTP == nil || c.Server == "" || !wire.ValidID(c.Device) || c.Model == "" || c.TPM == nil || c.Dir == "" {
		return nil, errors.New("attest: http client, server, device, model, tpm and dir are required")
	}
	if c.PCR == 0 {
		c.PCR = tpm.DefaultPCR
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	cl := &Client{c: c, log: c.Logger}
	cur, err := tpm.ReadPCR(c.TPM, uint(c.PCR))
	if err != nil {
		return nil, fmt.Errorf("attest: reading PCR %d: %w", c.PCR, err)
	}
	cl.ml, cl.err = measure.Open(filepath.Join(c.Dir, "measurements.cel"), c.PCR, cur)
	if cl.err != nil {
		if cl.ml == nil {
			return nil, cl.err
		}
		cl.log.Error("the measurement log does not explain the PCR: attestation will be untrusted until a reboot", "pcr", c.PCR, "err", cl.err)
	}
	return cl, nil
}

// Measure extends f into the PCR after logging it. A booted image that
// the log already shows as the last one booted is not measured again (the
// agent restarted; the phone did not reboot).
func (cl *Client) Measure(ctx context.Context, f cel.Firmware) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if f.Kind == cel.KindBooted {
		recs := cl.ml.Records()
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Firmware.Kind == cel.KindBooted {
				if recs[i].Firmware == f && i == len(recs)-1 {
					return nil
				}
				break
			}
		}
	}
	err := cl.ml.Measure(func(pcr uint, d [32]byte) error { return tpm.Extend(cl.c.TPM, pcr, d) }, f)
	if err != nil {
		return err
	}
	cl.log.Info("measured", "kind", f.Kind, "version", f.Version, "sha256", hex.EncodeToString(f.SHA256[:]), "pcr", cl.c.PCR)
	return nil
}

// Booted returns the last image the log shows booted: what the phone runs,
// even after an install made another slot the next to boot.
func (cl *Client) Booted() (cel.Firmware, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	recs := cl.ml.Records()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Firmware.Kind == cel.KindBooted {
			return recs[i].Firmware, true
		}
	}
	return cel.Firmware{}, false
}

// enrolledFile records a finished enrollment; tokenFile keeps the
// attestation token it gave, sealed to the TPM (a copy of the state
// directory attests nowhere else).
const (
	enrolledFile = "enrolled.json"
	tokenFile    = "token.sealed"
)

// Enrolled returns the recorded enrollment, if there is one with its
// attestation token.
func (cl *Client) Enrolled() (wire.Enrolled, bool) {
	b, err := os.ReadFile(filepath.Join(cl.c.Dir, enrolledFile))
	if err != nil {
		return wire.Enrolled{}, false
	}
	if _, err := os.Stat(filepath.Join(cl.c.Dir, tokenFile)); err != nil {
		return wire.Enrolled{}, false
	}
	var e wire.Enrolled
	if json.Unmarshal(b, &e) != nil || e.Device != cl.c.Device {
		return wire.Enrolled{}, false
	}
	return e, true
}

// Enroll enrolls the TPM: it sends the EK, its certificate when the TPM
// has one, and the AK; activates the credential the server answers; and
// sends the recovered secret back.
func (cl *Client) Enroll(ctx context.Context) (wire.Enrolled, error) {
	var (
		req wire.EnrollRequest
		ch  wire.EnrollChallenge
		out wire.Enrolled
	)
	err := cl.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		a, err := tpm.NewAttestor(t)
		if err != nil {
			return err
		}
		defer a.Close()
		req = wire.EnrollRequest{Device: cl.c.Device, Model: cl.c.Model, EKPublic: a.EKPublic(), AKPublic: a.AKPublic(), Token: cl.c.Token}
		if req.EKCert, err = a.EKCertificate(); err != nil && !errors.Is(err, tpm.ErrNoEKCert) {
			return err
		} else if err != nil {
			cl.log.Warn("the TPM has no EK certificate: an operator must approve its EK", "ek_sha256", hex.EncodeToString(sha256Sum(req.EKPublic)))
		}
		if err := cl.post(ctx, "/v1/enroll", req, &ch); err != nil {
			return err
		}
		secret, err := a.ActivateCredential(ch.Challenge.CredBlob, ch.Challenge.EncSecret)
		if err != nil {
			return fmt.Errorf("activating the enrollment credential: %w", err)
		}
		return cl.post(ctx, "/v1/enroll/"+ch.ID, wire.EnrollActivate{Secret: secret}, &out)
	})
	if err != nil {
		return out, fmt.Errorf("enrolling: %w", err)
	}
	if !strings.HasPrefix(out.Token, wire.AttestTokenPrefix) || len(out.Token) > min(wire.MaxAttestToken, tpm.MaxSealedSecret) {
		return out, fmt.Errorf("enrolling: %w: the server gave no usable attestation token", ErrServer)
	}
	// The token first: an enrollment record without it would not attest.
	var blob tpm.SealedBlob
	if err := cl.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		var err error
		blob, err = tpm.Seal(t, []byte(out.Token))
		return err
	}); err != nil {
		return out, fmt.Errorf("sealing the attestation token: %w", err)
	}
	if err := blob.WriteFile(filepath.Join(cl.c.Dir, tokenFile)); err != nil {
		return out, err
	}
	cl.tokenMu.Lock()
	cl.token = out.Token
	cl.tokenMu.Unlock()
	rec := out
	rec.Token = ""
	b, _ := json.Marshal(rec)
	if err := atomicfile.WriteFile(filepath.Join(cl.c.Dir, enrolledFile), b, 0o600); err != nil {
		return out, err
	}
	cl.log.Info("enrolled", "tenant", out.Tenant, "method", out.Method)
	return out, nil
}

// Attest asks for a nonce, quotes the measurement PCR over it, and sends
// the quote with the log; it returns the server's verdict.
func (cl *Client) Attest(ctx context.Context, version string) (wire.Verdict, error) {
	var (
		nr wire.NonceResponse
		v  wire.Verdict
	)
	token, err := cl.attestToken(ctx)
	if err != nil {
		return v, err
	}
	if err := cl.post(ctx, "/v1/attest/nonce", wire.NonceRequest{Device: cl.c.Device, Token: token}, &nr); err != nil {
		return v, err
	}
	req := wire.AttestRequest{Device: cl.c.Device, Token: token, Nonce: nr.Nonce, Version: version}
	err = cl.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		a, err := tpm.NewAttestor(t)
		if err != nil {
			return err
		}
		defer a.Close()
		cl.mu.Lock()
		defer cl.mu.Unlock()
		q, err := a.Quote(nr.Nonce, uint(cl.c.PCR))
		if err != nil {
			return err
		}
		pcr, err := tpm.ReadPCR(t, uint(cl.c.PCR))
		if err != nil {
			return err
		}
		req.Quote, req.Log, req.PCRValue = wire.Quote{Attest: q.Attest, Signature: q.Signature}, cl.ml.Bytes(), pcr[:]
		return nil
	})
	if err != nil {
		return v, fmt.Errorf("quoting: %w", err)
	}
	if err := cl.post(ctx, "/v1/attest", req, &v); err != nil {
		return v, err
	}
	lvl := slog.LevelInfo
	if v.Outcome != "trusted" {
		lvl = slog.LevelError
	}
	cl.log.Log(ctx, lvl, "attestation verdict", "outcome", v.Outcome, "reason", v.Reason, "detail", v.Detail)
	return v, nil
}

// ErrNoToken: the phone has no usable attestation token (never enrolled,
// or its sealed token is lost or does not unseal in this TPM): it must
// enroll again.
var ErrNoToken = errors.New("no attestation token: enroll again")

// attestToken is the token the enrollment gave, unsealed once.
func (cl *Client) attestToken(ctx context.Context) (string, error) {
	cl.tokenMu.Lock()
	defer cl.tokenMu.Unlock()
	if cl.token != "" {
		return cl.token, nil
	}
	blob, err := tpm.ReadSealedBlob(filepath.Join(cl.c.Dir, tokenFile))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoToken, err)
	}
	var b []byte
	if err := cl.c.TPM.Exclusive(ctx, func(t transport.TPM) error {
		var err error
		b, err = tpm.Unseal(t, blob)
		return err
	}); err != nil {
		return "", fmt.Errorf("%w: unsealing: %w", ErrNoToken, err)
	}
	cl.token = string(b)
	return cl.token, nil
}

// AttestToken returns the attestation token (tests that speak the
// protocol by hand need it).
func (cl *Client) AttestToken(ctx context.Context) (string, error) { return cl.attestToken(ctx) }

func (cl *Client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(cl.c.Server, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := cl.c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("contacting the server: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("reading the answer to %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("%w: %s: %s: %s", ErrServer, path, resp.Status, e.Error)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the answer to %s: %w", path, err)
	}
	return nil
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
