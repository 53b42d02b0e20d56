package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote/quotetest"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/store"
)

// attestRepo is the repository view of the attestation benchmark: every
// bundle of the logs is a target of dt100.
type attestRepo map[string]attest.Target

func (r attestRepo) TargetBySHA256(model, sha string) (attest.Target, bool) {
	t, ok := r[sha]
	return t, ok && t.Model == model
}

// attestCase is one phone's evidence: a boot and an update's worth of
// measurements (booted, installed, booted after the reboot — the log of a
// day in a phone's life), quoted by a software AK.
type attestCase struct {
	ak    *quotetest.AK
	ev    attest.Evidence
	nonce []byte
}

func newAttestCase(repo attestRepo, i int) attestCase {
	ak := quotetest.NewAK()
	var recs []cel.Record
	var log []byte
	for n, v := range []struct{ kind, version string }{{cel.KindBooted, "1.0.0"}, {cel.KindInstalled, "1.1.0"}, {cel.KindBooted, "1.1.0"}} {
		f := cel.Firmware{Kind: v.kind, Version: v.version, Target: "firmware/dt100/dt100-" + v.version + ".tar", SHA256: sha256.Sum256([]byte(v.version))}
		repo[hex.EncodeToString(f.SHA256[:])] = attest.Target{Model: "dt100", Version: v.version, Path: f.Target}
		r := cel.NewRecord(uint64(n), 14, f)
		recs, log = append(recs, r), cel.Append(log, r)
	}
	nonce := []byte(fmt.Sprintf("nonce-%026d", i))
	return attestCase{ak: ak, ev: attest.Evidence{Quote: ak.Quote(nonce, map[uint][32]byte{14: cel.Replay(recs)[14]}), Log: log}, nonce: nonce}
}

// benchAttest: server-side verification of one attestation (key checks,
// quote signature, nonce, PCR digest, event log decode and replay, policy)
// against a bare ECDSA P-256 signature verification of the same key type,
// interleaved; then a burst of simulated phones attesting at once.
func benchAttest(cfg config) ([]row, error) {
	repo := attestRepo{}
	c := newAttestCase(repo, 0)
	digest := sha256.Sum256(c.ev.Quote.Attest)
	r, s := c.ak.Sign(digest[:])
	der := asn1Sig(r, s)
	key := c.ak.Key()
	claim := attest.Claim{Model: "dt100", Version: "1.1.0"}
	if v := attest.Verify(c.ak.Public(), c.ev, c.nonce, 14, claim, repo); v.Outcome != attest.Trusted {
		return nil, fmt.Errorf("attest: the benchmark's evidence is not trusted: %s %s", v.Reason, v.Detail)
	}
	const n = 2000
	per := func(fn func()) float64 {
		start := time.Now()
		for range n {
			fn()
		}
		return float64(time.Since(start).Microseconds()) / n
	}
	var full, raw, ratios []float64
	rounds := 5
	for i := range rounds {
		var f, b float64
		// The server parses a device's AK once, at enrollment.
		verify := func() { attest.VerifyKey(key, c.ev, c.nonce, 14, claim, repo) }
		bare := func() { ecdsa.VerifyASN1(key, digest[:], der) }
		if i%2 == 0 {
			f, b = per(verify), per(bare)
		} else {
			b, f = per(bare), per(verify)
		}
		full, raw, ratios = append(full, f), append(raw, b), append(ratios, f/b)
		logf("   round %d: attest-verify %.1f µs   raw-verify %.1f µs   ratio %.2f", i+1, f, b, f/b)
	}
	rows := []row{{name: "attest-verify / raw-verify (ECDSA P-256)", value: median(full), ref: median(raw), unit: "µs",
		refName: "bare signature verify", ratio: median(ratios), max: 2, rounds: ratios}}

	burst, err := attestBurst(cfg, repo)
	if err != nil {
		return nil, err
	}
	return append(rows, burst), nil
}

// attestBurst: 2,000 phones, each with its own software AK and a day's
// measurement log, attest at once through the HTTP API of a server with
// the real attestation service and SQLite store: each asks for a nonce,
// quotes over it and posts the attestation; the server checks it and
// stores the verdict. Latency is from the start of the burst (every phone
// is queued then) to the phone's verdict. Enrollment is not part of it:
// the identities are written to the store beforehand.
func attestBurst(cfg config, repo attestRepo) (row, error) {
	const phones = 2000
	name := fmt.Sprintf("attestation burst, %d phones through the API: p99 latency", phones)
	ctx := context.Background()
	dir := filepath.Join(cfg.workdir, "attest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row{}, err
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "fleet.db"))
	if err != nil {
		return row{}, err
	}
	defer st.Close()
	svc, err := attest.NewService(attest.Options{Store: st, Targets: repo, PCR: 14})
	if err != nil {
		return row{}, err
	}
	admin := make([]byte, 16)
	_, _ = rand.Read(admin)
	a, err := api.New(api.Options{Repo: noRepo{}, Devices: st, Tokens: st, AdminToken: hex.EncodeToString(admin),
		Attest: svc, Enrollment: st})
	if err != nil {
		return row{}, err
	}
	srv := httptest.NewServer(a)
	defer srv.Close()

	type phone struct {
		id, token string
		ak        *quotetest.AK
		log       []byte
		pcr       [32]byte
	}
	ps := make([]phone, phones)
	now := time.Now().UTC()
	for i := range ps {
		c := newAttestCase(repo, i)
		recs, err := cel.Decode(c.ev.Log)
		if err != nil {
			return row{}, err
		}
		ps[i] = phone{id: fmt.Sprintf("burst-%04d", i), token: fmt.Sprintf("%sburst-%04d", wire.AttestTokenPrefix, i), ak: c.ak, log: c.ev.Log, pcr: cel.Replay(recs)[14]}
		ek := sha256.Sum256([]byte(ps[i].id))
		th := sha256.Sum256([]byte(ps[i].token))
		if err := st.Enroll(ctx, store.Identity{Device: ps[i].id, Tenant: "default", Model: "dt100", EKHash: ek[:], EKPublic: ek[:],
			AKPublic: c.ak.Public(), TokenHash: th[:], Method: store.EnrollApproved}, now); err != nil {
			return row{}, fmt.Errorf("attest: enrolling %s: %w", ps[i].id, err)
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: phones, MaxConnsPerHost: phones}, Timeout: 5 * time.Minute}
	post := func(path string, in, out any) error {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		resp, err := client.Post(srv.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", path, resp.Status, body)
		}
		return json.Unmarshal(body, out)
	}

	lat := make([]time.Duration, phones)
	errs := make([]error, phones)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := ps[i]
			var n wire.NonceResponse
			if errs[i] = post("/v1/attest/nonce", wire.NonceRequest{Device: p.id, Token: p.token}, &n); errs[i] != nil {
				return
			}
			q := p.ak.Quote(n.Nonce, map[uint][32]byte{14: p.pcr})
			var v wire.Verdict
			if errs[i] = post("/v1/attest", wire.AttestRequest{Device: p.id, Token: p.token, Nonce: n.Nonce, Quote: wire.Quote{Attest: q.Attest, Signature: q.Signature},
				Log: p.log, Version: "1.1.0"}, &v); errs[i] != nil {
				return
			}
			lat[i] = time.Since(start)
			if v.Outcome != attest.Trusted {
				errs[i] = fmt.Errorf("%s: %s (%s)", p.id, v.Outcome, v.Reason)
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	bad := 0
	var first error
	for _, err := range errs {
		if err != nil {
			bad++
			first = cmp.Or(first, err)
		}
	}
	// Every verdict must be in the store, as trusted.
	stored := 0
	for _, p := range ps {
		if a, err := st.Attestations(ctx, p.id, 1); err == nil && len(a) == 1 && a[0].Outcome == attest.Trusted {
			stored++
		}
	}
	slices.Sort(lat)
	p99 := lat[phones*99/100]
	logf("   burst: %d phones attested through the API in %s (%.0f/s), p50 %s, p99 %s; %d failed, %d trusted verdicts stored",
		phones, total.Round(time.Millisecond), phones/total.Seconds(), lat[phones/2].Round(time.Millisecond), p99.Round(time.Millisecond), bad, stored)
	r := row{name: name, value: float64(p99.Microseconds()) / 1000, ref: -1, unit: "ms", ratio: -1, target: "all verified"}
	switch {
	case bad > 0:
		r.failNote = fmt.Sprintf("%d of %d failed, first: %v", bad, phones, first)
	case stored != phones:
		r.failNote = fmt.Sprintf("%d of %d trusted verdicts stored", stored, phones)
	}
	return r, nil
}

// asn1Sig encodes r, s as the DER signature VerifyASN1 takes.
func asn1Sig(r, s []byte) []byte {
	enc := func(b []byte) []byte {
		for len(b) > 1 && b[0] == 0 {
			b = b[1:]
		}
		if b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return append([]byte{0x02, byte(len(b))}, b...)
	}
	body := append(enc(r), enc(s)...)
	return append([]byte{0x30, byte(len(body))}, body...)
}
