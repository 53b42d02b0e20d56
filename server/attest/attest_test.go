package attest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/quote/quotetest"
)

const pcr = 14

// repo is a TUF repository's view for the tests: dt100 1.0.0 and 1.1.0,
// and 0.9.0 revoked.
type repo map[string]Target

func (r repo) TargetBySHA256(model, sha string) (Target, bool) {
	t, ok := r[sha]
	return t, ok && t.Model == model
}

func bundle(version string) cel.Firmware {
	return cel.Firmware{Kind: cel.KindBooted, Version: version, Target: "firmware/dt100/dt100-" + version + ".tar", SHA256: sha256.Sum256([]byte(version))}
}

func testRepo() repo {
	r := repo{}
	for _, v := range []string{"1.0.0", "1.1.0", "0.9.0"} {
		f := bundle(v)
		r[hex.EncodeToString(f.SHA256[:])] = Target{Model: "dt100", Version: v, Path: f.Target, Revoked: v == "0.9.0"}
	}
	f := bundle("2.0.0")
	r[hex.EncodeToString(f.SHA256[:])] = Target{Model: "dt200", Version: "2.0.0", Path: f.Target}
	return r
}

func logOf(fws ...cel.Firmware) ([]cel.Record, []byte) {
	var recs []cel.Record
	var b []byte
	for i, f := range fws {
		r := cel.NewRecord(uint64(i), pcr, f)
		recs = append(recs, r)
		b = cel.Append(b, r)
	}
	return recs, b
}

func installed(v string) cel.Firmware {
	f := bundle(v)
	f.Kind = cel.KindInstalled
	return f
}

// TestVerify: the attack table at the policy level, each ending untrusted
// with its reason (the TPM side runs on swtpm in agent/tpm and hack/e2e).
func TestVerify(t *testing.T) {
	ak, other := quotetest.NewAK(), quotetest.NewAK()
	nonce := []byte("nonce-0123456789abcdef0123456789")
	genuine := func(fws ...cel.Firmware) (Evidence, []cel.Record) {
		recs, b := logOf(fws...)
		return Evidence{Quote: ak.Quote(nonce, map[uint][32]byte{pcr: cel.Replay(recs)[pcr]}), Log: b}, recs
	}
	good, _ := genuine(bundle("1.0.0"), installed("1.1.0"), bundle("1.1.0"))
	// A log with a record removed, quoted over the full PCR.
	_, shortLog := logOf(bundle("1.0.0"), installed("1.1.0"))
	removed := Evidence{Quote: good.Quote, Log: shortLog}
	// An edited record with its digest recomputed: the log decodes but
	// replays to another value than the TPM quoted.
	edited := bundle("1.1.0")
	edited.SHA256 = sha256.Sum256([]byte("patched"))
	_, editedLog := logOf(bundle("1.0.0"), installed("1.1.0"), edited)
	editedEv := Evidence{Quote: good.Quote, Log: editedLog}
	// An edited record with the digest kept: refused by the decoder.
	badLog := append([]byte(nil), good.Log...)
	badLog[len(badLog)-1] ^= 1
	unknown, _ := genuine(bundle("1.0.0"), installed("1.1.1"))
	revoked, _ := genuine(bundle("0.9.0"))
	otherModel, _ := genuine(bundle("2.0.0"))
	noBoot, _ := genuine(installed("1.1.0"))
	stillOld, _ := genuine(bundle("1.0.0"), installed("1.1.0")) // not rebooted into 1.1.0

	for _, tc := range []struct {
		name    string
		ak      []byte
		ev      Evidence
		nonce   []byte
		claim   Claim
		outcome string
		reason  string
	}{
		{"genuine", ak.Public(), good, nonce, Claim{"dt100", "1.1.0", ""}, Trusted, ""},
		{"replayed quote (old nonce)", ak.Public(), good, []byte("a fresh nonce"), Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonNonce},
		{"quote signed by another TPM's AK", other.Public(), good, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonSignature},
		{"log entry removed", ak.Public(), removed, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonReplay},
		{"log entry edited, digest recomputed", ak.Public(), editedEv, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonReplay},
		{"log entry edited", ak.Public(), Evidence{Quote: good.Quote, Log: badLog}, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonLog},
		{"firmware that is not a TUF target", ak.Public(), unknown, nonce, Claim{"dt100", "1.0.0", ""}, Untrusted, ReasonUnknown},
		{"revoked firmware", ak.Public(), revoked, nonce, Claim{"dt100", "0.9.0", ""}, Untrusted, ReasonRevoked},
		{"another model's firmware", ak.Public(), otherModel, nonce, Claim{"dt100", "2.0.0", ""}, Untrusted, ReasonUnknown},
		{"version contradicted by the measurements", ak.Public(), stillOld, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonVersion},
		{"at the fleet minimum", ak.Public(), good, nonce, Claim{"dt100", "1.1.0", "1.1.0"}, Trusted, ""},
		{"below the fleet minimum", ak.Public(), good, nonce, Claim{"dt100", "1.1.0", "1.2.0"}, Untrusted, ReasonMinimum},
		{"below a minimum ordered as semver, not as text", ak.Public(), good, nonce, Claim{"dt100", "1.1.0", "1.10.0"}, Untrusted, ReasonMinimum},
		{"nothing booted measured", ak.Public(), noBoot, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonNoBoot},
		{"garbage quote", ak.Public(), Evidence{Quote: quote.Quote{Attest: []byte{1}, Signature: []byte{2}}, Log: good.Log}, nonce, Claim{"dt100", "1.1.0", ""}, Untrusted, ReasonQuote},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Verify(tc.ak, tc.ev, tc.nonce, pcr, tc.claim, testRepo())
			if r.Outcome != tc.outcome || r.Reason != tc.reason {
				t.Fatalf("Verify = %s (%s: %s), want %s (%s)", r.Outcome, r.Reason, r.Detail, tc.outcome, tc.reason)
			}
		})
	}
}

func TestNonces(t *testing.T) {
	n := NewNonces()
	now := time.Now()
	n.now = func() time.Time { return now }
	a := n.Issue("p1")
	if n.Take("p2", a) {
		t.Fatal("another device's nonce accepted")
	}
	if !n.Take("p1", a) {
		t.Fatal("fresh nonce refused")
	}
	if n.Take("p1", a) {
		t.Fatal("nonce accepted twice")
	}
	b := n.Issue("p1")
	c := n.Issue("p1")
	if n.Take("p1", b) {
		t.Fatal("a nonce voided by a newer one accepted")
	}
	d := n.Issue("p1")
	now = now.Add(NonceTTL + time.Second)
	if n.Take("p1", d) || n.Take("p1", c) {
		t.Fatal("expired nonce accepted")
	}
}

func FuzzVerify(f *testing.F) {
	ak := quotetest.NewAK()
	recs, b := logOf(bundle("1.0.0"))
	q := ak.Quote([]byte("n"), map[uint][32]byte{pcr: cel.Replay(recs)[pcr]})
	f.Add(q.Attest, q.Signature, b)
	f.Fuzz(func(t *testing.T, attest, sig, log []byte) {
		r := Verify(ak.Public(), Evidence{Quote: quote.Quote{Attest: attest, Signature: sig}, Log: log}, []byte("n"), pcr, Claim{"dt100", "1.0.0", ""}, testRepo())
		if r.Outcome == Trusted && (string(attest) != string(q.Attest) || string(log) != string(b)) {
			t.Fatalf("altered evidence trusted")
		}
	})
}

// FuzzEnrollmentInputs: what a device sends to enroll (an EK certificate,
// the EK's and the AK's TPMT_PUBLIC) never panics the server and is never
// accepted against an empty trust store.
func FuzzEnrollmentInputs(f *testing.F) {
	ak := quotetest.NewAK()
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, ak.Public(), ak.Public())
	f.Fuzz(func(t *testing.T, cert, ek, akPub []byte) {
		if _, err := VerifyEKCert(cert, x509.NewCertPool(), nil, ek, time.Now()); err == nil {
			t.Fatal("an EK certificate verified against no trusted CA")
		}
		_, _, _ = NewChallenge(ek, akPub)
	})
}
