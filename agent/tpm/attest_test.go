package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/testutil"
)

func openSwtpm(t *testing.T, sw *testutil.Swtpm) transport.TPMCloser {
	t.Helper()
	tp, err := Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func newAttestor(t *testing.T, tp transport.TPM) *Attestor {
	t.Helper()
	a, err := NewAttestor(tp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// measure extends a small event log into PCR DefaultPCR and returns it.
func measure(t *testing.T, tp transport.TPM) []cel.Record {
	t.Helper()
	var recs []cel.Record
	for i, fw := range []cel.Firmware{
		{Kind: cel.KindBooted, Version: "1.0.0", Target: "firmware/dt100/dt100-1.0.0.tar", SHA256: sha256.Sum256([]byte("1.0.0"))},
		{Kind: cel.KindInstalled, Version: "1.1.0", Target: "firmware/dt100/dt100-1.1.0.tar", SHA256: sha256.Sum256([]byte("1.1.0"))},
	} {
		r := cel.NewRecord(uint64(i), DefaultPCR, fw)
		if err := Extend(tp, DefaultPCR, r.Digest); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestQuoteOnSwtpm: a quote from a real (software) TPM verifies against the
// replayed event log, and each change — another nonce, other PCR values, a
// flipped byte, another TPM's AK, a PCR extended out of band with
// tpm2-tools — is refused with its own reason.
func TestQuoteOnSwtpm(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	tp := openSwtpm(t, sw)
	a := newAttestor(t, tp)
	if _, err := quote.AKPublic(a.AKPublic()); err != nil {
		t.Fatalf("the AK is not what the verifier accepts: %v", err)
	}
	if !bytes.Equal(quote.Name(a.AKPublic()), a.AKName()) {
		t.Fatalf("quote.Name = %x, the TPM says %x", quote.Name(a.AKPublic()), a.AKName())
	}
	recs := measure(t, tp)
	want := cel.Replay(recs)[DefaultPCR]
	if got, err := ReadPCR(tp, DefaultPCR); err != nil || got != want {
		t.Fatalf("PCR %d = %x (%v), the log replays to %x", DefaultPCR, got, err, want)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	q, err := a.Quote(nonce, DefaultPCR)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[uint][32]byte{DefaultPCR: want}
	if _, err := quote.Verify(a.AKPublic(), quote.Quote(q), nonce, pcrs); err != nil {
		t.Fatalf("genuine quote refused: %v", err)
	}

	other := newAttestor(t, openSwtpm(t, testutil.StartSwtpm(t)))
	flipped := quote.Quote{Attest: bytes.Clone(q.Attest), Signature: q.Signature}
	flipped.Attest[len(flipped.Attest)-1] ^= 1
	for _, tc := range []struct {
		name   string
		ak     []byte
		q      quote.Quote
		nonce  []byte
		pcrs   map[uint][32]byte
		reason error
	}{
		{"replayed quote (old nonce)", a.AKPublic(), quote.Quote(q), []byte("another nonce"), pcrs, quote.ErrNonce},
		{"PCR values the log does not give", a.AKPublic(), quote.Quote(q), nonce, map[uint][32]byte{DefaultPCR: sha256.Sum256(nil)}, quote.ErrPCRs},
		{"another PCR selection", a.AKPublic(), quote.Quote(q), nonce, map[uint][32]byte{DefaultPCR: want, 15: {}}, quote.ErrSelection},
		{"attest bytes edited", a.AKPublic(), flipped, nonce, pcrs, quote.ErrSignature},
		{"AK of another TPM", other.AKPublic(), quote.Quote(q), nonce, pcrs, quote.ErrSignature},
		{"EK offered as AK", a.EKPublic(), quote.Quote(q), nonce, pcrs, quote.ErrKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := quote.Verify(tc.ak, tc.q, tc.nonce, tc.pcrs); !errors.Is(err, tc.reason) {
				t.Fatalf("Verify = %v, want %v", err, tc.reason)
			}
		})
	}

	t.Run("PCR extended out of band", func(t *testing.T) {
		// swtpm serves one connection at a time: let go of ours while
		// tpm2-tools has its turn, as an agent does between exchanges.
		a.Close()
		tp.Close()
		bin := testutil.RequireBinary(t, "tpm2_pcrextend", "make deps (apt-get install tpm2-tools)")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, strconv.Itoa(DefaultPCR)+":sha256="+strings.Repeat("ab", 32))
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sw.TCTI())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tpm2_pcrextend: %v\n%s", err, out)
		}
		a := newAttestor(t, openSwtpm(t, sw)) // the same AK: a primary from a fixed template
		rand.Read(nonce)
		q, err := a.Quote(nonce, DefaultPCR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := quote.Verify(a.AKPublic(), quote.Quote(q), nonce, pcrs); !errors.Is(err, quote.ErrPCRs) {
			t.Fatalf("Verify after an out-of-band extend = %v, want ErrPCRs", err)
		}
	})
}

// TestActivateCredentialOnSwtpm: a secret the verifier encrypts to the EK
// for the AK's name comes back only from the TPM that holds both.
func TestActivateCredentialOnSwtpm(t *testing.T) {
	a := newAttestor(t, openSwtpm(t, testutil.StartSwtpm(t)))
	other := newAttestor(t, openSwtpm(t, testutil.StartSwtpm(t)))
	challenge := func(ekPublic, akPublic []byte) ([]byte, []byte, []byte) {
		t.Helper()
		ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
		if err != nil {
			t.Fatal(err)
		}
		key, err := tpm2.ImportEncapsulationKey(ek)
		if err != nil {
			t.Fatal(err)
		}
		secret := make([]byte, 32)
		rand.Read(secret)
		blob, enc, err := tpm2.CreateCredential(rand.Reader, key, quote.Name(akPublic), secret)
		if err != nil {
			t.Fatal(err)
		}
		return blob, enc, secret
	}
	blob, enc, secret := challenge(a.EKPublic(), a.AKPublic())
	got, err := a.ActivateCredential(blob, enc)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredential = %x, %v; want the secret", got, err)
	}
	// The EK of this TPM, the AK name of another: the TPM refuses.
	blob, enc, _ = challenge(a.EKPublic(), other.AKPublic())
	if _, err := a.ActivateCredential(blob, enc); err == nil {
		t.Fatal("a credential for another TPM's AK was activated")
	}
	// Encrypted to another TPM's EK: this one cannot open it.
	blob, enc, _ = challenge(other.EKPublic(), a.AKPublic())
	if _, err := a.ActivateCredential(blob, enc); err == nil {
		t.Fatal("a credential encrypted to another TPM's EK was activated")
	}
}
