package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote"
)

// TestSim: in a cgo build --tpm sim is a working TPM whose state outlives
// each handle (like swtpm's between connections): an AK quotes, a device
// key is certified, and the Signer signs through fresh handles. Without cgo
// it is a clear error.
func TestSim(t *testing.T) {
	tp, err := Open(t.Context(), "sim")
	if !simAvailable {
		if !errors.Is(err, ErrNoSim) {
			t.Fatalf("Open(sim) without cgo = %v, want ErrNoSim", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	a := newAttestor(t, tp)
	recs := measure(t, tp)
	n := nonce(t)
	q, err := a.Quote(n, DefaultPCR)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[uint][32]byte{DefaultPCR: cel.Replay(recs)[DefaultPCR]}
	if _, err := quote.Verify(a.AKPublic(), quote.Quote(q), n, pcrs); err != nil {
		t.Fatalf("simulator quote refused: %v", err)
	}
	if _, err := quote.Verify(a.AKPublic(), quote.Quote(q), nonce(t), pcrs); !errors.Is(err, quote.ErrNonce) {
		t.Fatalf("simulator quote over another nonce = %v, want ErrNonce", err)
	}

	blob, err := a.CreateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Certify(blob, n)
	if err != nil {
		t.Fatal(err)
	}
	key, err := quote.VerifyCertify(akKey(t, a), c, n, blob.Public)
	if err != nil {
		t.Fatalf("simulator certification refused: %v", err)
	}
	akPublic := a.AKPublic()
	a.Close()
	tp.Close()
	if _, err := tp.Send([]byte{0x80, 0x01}); err == nil {
		t.Fatal("a closed simulator handle still sends")
	}

	// Another handle reaches the same TPM: same AK, same PCR, the key
	// blob loads.
	s, err := NewSigner(opener("sim"), blob)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	sig, err := s.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(key, d[:], sig) {
		t.Fatal("the simulator's signature does not verify with the certified key")
	}
	tp2, err := Open(t.Context(), "sim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp2.Close() })
	a2 := newAttestor(t, tp2)
	if !bytes.Equal(a2.AKPublic(), akPublic) {
		t.Fatal("a second simulator handle has another AK")
	}
	if got, err := ReadPCR(tp2, DefaultPCR); err != nil || got != pcrs[DefaultPCR] {
		t.Fatalf("PCR %d through a second handle = %x, %v; want %x", DefaultPCR, got, err, pcrs[DefaultPCR])
	}
}
