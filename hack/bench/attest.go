package main

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote/quotetest"
	"github.com/dialtone-dev/dialtone/server/attest"
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

	// The burst: 2,000 phones, each with its own AK, verified at once by as
	// many goroutines as the machine has cores, as the API would.
	const phones = 2000
	cases := make([]attestCase, phones)
	for i := range cases {
		cases[i] = newAttestCase(repo, i)
	}
	lat := make([]time.Duration, phones)
	var wg sync.WaitGroup
	next := make(chan int, phones)
	for i := range phones {
		next <- i
	}
	close(next)
	start := time.Now()
	bad := 0
	var mu sync.Mutex
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c := cases[i]
				v := attest.Verify(c.ak.Public(), c.ev, c.nonce, 14, claim, repo)
				lat[i] = time.Since(start) // queued at start: the burst's latency
				if v.Outcome != attest.Trusted {
					mu.Lock()
					bad++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	slices.Sort(lat)
	p99 := lat[phones*99/100]
	logf("   burst: %d phones verified in %s (%.0f/s), p50 %s, p99 %s, %d not trusted", phones, total.Round(time.Millisecond),
		phones/total.Seconds(), lat[phones/2].Round(time.Microsecond), p99.Round(time.Microsecond), bad)
	burst := row{name: fmt.Sprintf("attestation burst, %d phones: p99 latency", phones), value: float64(p99.Microseconds()) / 1000, ref: -1,
		unit: "ms", ratio: -1, target: "all verified"}
	if bad > 0 {
		burst.failNote = fmt.Sprintf("%d of %d not trusted", bad, phones)
	}
	return append(rows, burst), nil
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
