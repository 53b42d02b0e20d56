package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/server/attest"
)

// TestEvidenceChecksWithTPM2Tools: the evidence the server exports for an
// attestation verifies with tpm2_checkquote, an implementation that is not
// ours; the PCR file is byte for byte what tpm2_pcrread -F serialized
// writes; and a wrong nonce or wrong PCR values make tpm2_checkquote fail.
func TestEvidenceChecksWithTPM2Tools(t *testing.T) {
	check := testutil.RequireBinary(t, "tpm2_checkquote", "make deps (apt-get install tpm2-tools)")
	pcrread := testutil.RequireBinary(t, "tpm2_pcrread", "make deps (apt-get install tpm2-tools)")
	sw := testutil.StartSwtpm(t)
	tp, err := tpm.Open(context.Background(), sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tpm.NewAttestor(tp)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.Extend(tp, tpm.DefaultPCR, sha256.Sum256([]byte("booted 1.0.0"))); err != nil {
		t.Fatal(err)
	}
	pcr, err := tpm.ReadPCR(tp, tpm.DefaultPCR)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 20)
	rand.Read(nonce)
	q, err := a.Quote(nonce, tpm.DefaultPCR)
	if err != nil {
		t.Fatal(err)
	}
	ak := a.AKPublic()
	a.Close()
	tp.Close() // swtpm serves one connection at a time: tpm2-tools' turn

	run := func(bin string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sw.TCTI())
		return cmd.CombinedOutput()
	}
	dir := t.TempDir()
	pcrs := map[uint][32]byte{tpm.DefaultPCR: pcr}
	if err := attest.WriteEvidence(dir, ak, quote.Quote(q), nonce, pcrs); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(t.TempDir(), "pcrread.bin")
	if out, err := run(pcrread, "sha256:"+strconv.Itoa(tpm.DefaultPCR), "-F", "serialized", "-o", theirs); err != nil {
		t.Fatalf("tpm2_pcrread: %v\n%s", err, out)
	}
	ours, _ := os.ReadFile(filepath.Join(dir, attest.EvidencePCRs))
	if want, _ := os.ReadFile(theirs); !bytes.Equal(ours, want) {
		t.Fatalf("our PCR file (%d bytes) differs from tpm2_pcrread's (%d bytes):\n%x\n%x", len(ours), len(want), ours, want)
	}
	checkquote := func(dir string, nonce []byte) ([]byte, error) {
		return run(check, "-u", filepath.Join(dir, attest.EvidenceAK), "-m", filepath.Join(dir, attest.EvidenceMessage),
			"-s", filepath.Join(dir, attest.EvidenceSignature), "-f", filepath.Join(dir, attest.EvidencePCRs),
			"-g", "sha256", "-q", hex.EncodeToString(nonce))
	}
	if out, err := checkquote(dir, nonce); err != nil {
		t.Fatalf("tpm2_checkquote refused genuine evidence: %v\n%s", err, out)
	}
	if out, err := checkquote(dir, []byte("another nonce")); err == nil {
		t.Fatalf("tpm2_checkquote accepted another nonce:\n%s", out)
	}
	bad := t.TempDir()
	if err := attest.WriteEvidence(bad, ak, quote.Quote(q), nonce, map[uint][32]byte{tpm.DefaultPCR: sha256.Sum256(nil)}); err != nil {
		t.Fatal(err)
	}
	if out, err := checkquote(bad, nonce); err == nil {
		t.Fatalf("tpm2_checkquote accepted PCR values the quote does not cover:\n%s", out)
	}
}
