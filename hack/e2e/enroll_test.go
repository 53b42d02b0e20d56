package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/quote"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/server/attest"
)

func pemPool(t *testing.T, paths ...string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM", p)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(c)
	}
	return pool
}

// TestEnrollmentProofsOnSwtpm: the two proofs enrollment rests on, between
// the agent's TPM code and the server's checks, on software TPMs that
// swtpm_setup manufactured with EK certificates from a local CA (issue 5;
// the enrollment API is still to come). An EK certificate verifies against
// its manufacturer's CA and certifies the EK; one from an unknown CA, or
// offered with another TPM's EK, is refused. A credential challenge for the
// AK is answered only by the TPM holding both keys.
func TestEnrollmentProofsOnSwtpm(t *testing.T) {
	open := func(m *testutil.ManufacturedSwtpm) *tpm.Attestor {
		t.Helper()
		tp, err := tpm.Open(context.Background(), m.Spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		a, err := tpm.NewAttestor(tp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	mA, mB := testutil.StartManufacturedSwtpm(t), testutil.StartManufacturedSwtpm(t)
	a, b := open(mA), open(mB)
	certA, err := a.EKCertificate()
	if err != nil {
		t.Fatal(err)
	}
	rootsA, interA := pemPool(t, mA.CARoot), pemPool(t, mA.CAIssuer)
	rootsB, interB := pemPool(t, mB.CARoot), pemPool(t, mB.CAIssuer)
	now := time.Now()

	t.Run("EK certificate from the manufacturer's CA", func(t *testing.T) {
		if _, err := attest.VerifyEKCert(certA, rootsA, interA, a.EKPublic(), now); err != nil {
			t.Fatalf("genuine EK certificate refused: %v", err)
		}
	})
	t.Run("EK certificate from an unknown CA", func(t *testing.T) {
		if _, err := attest.VerifyEKCert(certA, rootsB, interB, a.EKPublic(), now); !errors.Is(err, attest.ErrEKCert) {
			t.Fatalf("VerifyEKCert = %v, want ErrEKCert", err)
		}
	})
	t.Run("EK certificate offered with another TPM's EK", func(t *testing.T) {
		if _, err := attest.VerifyEKCert(certA, rootsA, interA, b.EKPublic(), now); !errors.Is(err, attest.ErrEKKey) {
			t.Fatalf("VerifyEKCert = %v, want ErrEKKey", err)
		}
	})
	t.Run("credential activation proves the AK is this TPM's", func(t *testing.T) {
		ch, secret, err := attest.NewChallenge(a.EKPublic(), a.AKPublic())
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.ActivateCredential(ch.CredBlob, ch.EncSecret)
		if err != nil || !attest.CheckResponse(secret, got) {
			t.Fatalf("ActivateCredential = %x, %v", got, err)
		}
	})
	t.Run("an AK from another TPM presented with this EK", func(t *testing.T) {
		ch, secret, err := attest.NewChallenge(a.EKPublic(), b.AKPublic())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := a.ActivateCredential(ch.CredBlob, ch.EncSecret); err == nil && attest.CheckResponse(secret, got) {
			t.Fatal("this TPM answered a challenge for another TPM's AK")
		}
		if got, err := b.ActivateCredential(ch.CredBlob, ch.EncSecret); err == nil && attest.CheckResponse(secret, got) {
			t.Fatal("the other TPM answered a challenge encrypted to this TPM's EK")
		}
	})
	t.Run("the EK offered as AK", func(t *testing.T) {
		if _, _, err := attest.NewChallenge(a.EKPublic(), a.EKPublic()); !errors.Is(err, quote.ErrKey) {
			t.Fatalf("NewChallenge = %v, want quote.ErrKey", err)
		}
	})
}
