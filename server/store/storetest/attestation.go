package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/store"
)

// AttestationStore is what the attestation tests need of a store.
type AttestationStore interface {
	store.Store
	store.Attestations
}

// RunAttestations runs the behaviour tests of store.Attestations, each in a
// subtest with a store of its own from open.
func RunAttestations(t *testing.T, open func(t *testing.T) AttestationStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s AttestationStore)
	}{
		{"GrantsAreSingleUse", testGrantsSingleUse},
		{"OneTPMOneDevice", testOneTPMOneDevice},
		{"History", testAttestationHistory},
		{"Expire", testExpireAttestations},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var at0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ekHash(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func identity(device, tenant, ek, grant string) store.Identity {
	return store.Identity{Device: device, Tenant: tenant, Model: "dt100", EKHash: ekHash(ek), EKPublic: []byte("ek-" + ek),
		AKPublic: []byte("ak-" + ek), TokenHash: ekHash("token-" + ek), Method: store.EnrollEKCert, Grant: grant}
}

func testGrantsSingleUse(t *testing.T, s AttestationStore) {
	ctx := context.Background()
	g := store.Grant{ID: "g1", Kind: store.GrantToken, Hash: ekHash("token"), Tenant: "acme", Created: at0, Expires: at0.Add(time.Hour)}
	if err := s.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateGrant(ctx, g); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second grant with the same hash: %v, want ErrConflict", err)
	}
	got, err := s.GrantByHash(ctx, store.GrantToken, g.Hash)
	if err != nil || got.ID != "g1" || got.Tenant != "acme" || !got.Used.IsZero() || !got.Expires.Equal(g.Expires) {
		t.Fatalf("GrantByHash = %+v, %v", got, err)
	}
	if _, err := s.GrantByHash(ctx, store.GrantSerial, g.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("grant of another kind: %v, want ErrNotFound", err)
	}
	if err := s.Enroll(ctx, identity("d1", "acme", "ek1", "g1"), at0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The same token for a second device: used.
	if err := s.Enroll(ctx, identity("d2", "acme", "ek2", "g1"), at0.Add(2*time.Minute)); !errors.Is(err, store.ErrGrantUsed) {
		t.Fatalf("reusing a grant: %v, want ErrGrantUsed", err)
	}
	if _, err := s.Identity(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused enrollment left an identity: %v", err)
	}
	if _, err := s.Device(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused enrollment left a device: %v", err)
	}
	// An expired grant.
	g2 := store.Grant{ID: "g2", Kind: store.GrantSerial, Hash: ekHash("d3"), Tenant: "acme", Device: "d3", Created: at0, Expires: at0.Add(time.Minute)}
	if err := s.CreateGrant(ctx, g2); err != nil {
		t.Fatal(err)
	}
	if err := s.Enroll(ctx, identity("d3", "acme", "ek3", "g2"), at0.Add(time.Hour)); !errors.Is(err, store.ErrGrantUsed) {
		t.Fatalf("expired grant: %v, want ErrGrantUsed", err)
	}
	got, _ = s.GrantByHash(ctx, store.GrantToken, g.Hash)
	if got.UsedBy != "d1" || !got.Used.Equal(at0.Add(time.Minute)) {
		t.Fatalf("used grant = %+v", got)
	}
	list, err := s.ListGrants(ctx, []string{"other"})
	if err != nil || len(list) != 0 {
		t.Fatalf("ListGrants(other) = %v, %v", list, err)
	}
	if list, err = s.ListGrants(ctx, nil); err != nil || len(list) != 2 {
		t.Fatalf("ListGrants(all) = %v, %v", list, err)
	}
	if err := s.CreateGrant(ctx, store.Grant{ID: "bad", Kind: "nope", Hash: []byte{1}, Tenant: "acme"}); err == nil {
		t.Fatal("a grant of an unknown kind was stored")
	}
}

func testOneTPMOneDevice(t *testing.T, s AttestationStore) {
	ctx := context.Background()
	if err := s.Enroll(ctx, identity("d1", "acme", "ek1", ""), at0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Identity(ctx, "d1")
	if err != nil || !bytes.Equal(got.EKHash, ekHash("ek1")) || !bytes.Equal(got.TokenHash, ekHash("token-ek1")) || got.Tenant != "acme" || !got.Enrolled.Equal(at0) || got.EKCert != nil {
		t.Fatalf("Identity = %+v, %v", got, err)
	}
	if d, err := s.Device(ctx, "d1"); err != nil || d.Tenant != "acme" {
		t.Fatalf("enrollment did not create the device: %+v, %v", d, err)
	}
	// Same TPM again: a re-enrollment, the AK is replaced.
	again := identity("d1", "acme", "ek1", "")
	again.AKPublic, again.TokenHash = []byte("ak-new"), ekHash("token-new")
	if err := s.Enroll(ctx, again, at0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Identity(ctx, "d1"); string(got.AKPublic) != "ak-new" || !bytes.Equal(got.TokenHash, ekHash("token-new")) {
		t.Fatalf("AK and token after re-enrollment = %q, %x", got.AKPublic, got.TokenHash)
	}
	// An identity without a token hash is refused.
	bad := identity("d9", "acme", "ek9", "")
	bad.TokenHash = nil
	if err := s.Enroll(ctx, bad, at0); err == nil {
		t.Fatal("an identity without a token hash was enrolled")
	}
	// Another TPM for the device: a hijack.
	if err := s.Enroll(ctx, identity("d1", "acme", "ek-evil", ""), at0.Add(2*time.Hour)); !errors.Is(err, store.ErrIdentity) {
		t.Fatalf("another TPM for d1: %v, want ErrIdentity", err)
	}
	// The TPM for another device.
	if err := s.Enroll(ctx, identity("d2", "acme", "ek1", ""), at0.Add(2*time.Hour)); !errors.Is(err, store.ErrIdentity) {
		t.Fatalf("d1's TPM for d2: %v, want ErrIdentity", err)
	}
	if got, _ := s.Identity(ctx, "d1"); !bytes.Equal(got.EKHash, ekHash("ek1")) {
		t.Fatal("a refused enrollment changed the identity")
	}
	// A device of another tenant.
	if err := s.Enroll(ctx, identity("d1", "other", "ek1", ""), at0.Add(3*time.Hour)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("d1 under another tenant: %v, want ErrConflict", err)
	}
}

func testAttestationHistory(t *testing.T, s AttestationStore) {
	ctx := context.Background()
	if err := s.AddAttestation(ctx, store.Attestation{Device: "ghost", Time: at0, Outcome: "trusted"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("attestation of an unknown device: %v, want ErrNotFound", err)
	}
	if err := s.Enroll(ctx, identity("d1", "acme", "ek1", ""), at0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastEvidence(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LastEvidence before any: %v", err)
	}
	good := store.Attestation{Device: "d1", Time: at0.Add(time.Minute), Outcome: "trusted", Booted: "1.0.0", Nonce: []byte("n1"),
		Quote: []byte("q1"), Signature: []byte("s1"), PCR: 14, PCRValue: bytes.Repeat([]byte{1}, 32), Log: []byte("log")}
	bad := store.Attestation{Device: "d1", Time: at0.Add(2 * time.Minute), Outcome: "untrusted", Reason: "quote signature invalid",
		Nonce: []byte("n2"), Quote: []byte("q2"), Signature: []byte("s2"), PCR: 14}
	for _, a := range []store.Attestation{good, bad} {
		if err := s.AddAttestation(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// An older verdict arriving late joins the history but does not
	// change the state.
	late := store.Attestation{Device: "d1", Time: at0, Outcome: "trusted"}
	if err := s.AddAttestation(ctx, late); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Device(ctx, "d1")
	if d.Attestation != "untrusted" || !d.Attested.Equal(bad.Time) {
		t.Fatalf("state = %s at %v, want untrusted at %v", d.Attestation, d.Attested, bad.Time)
	}
	h, err := s.Attestations(ctx, "d1", 0)
	if err != nil || len(h) != 3 || h[0].Outcome != "trusted" || h[1].Reason != bad.Reason || h[2].Booted != "1.0.0" {
		t.Fatalf("history = %+v, %v", h, err)
	}
	if h, _ := s.Attestations(ctx, "d1", 1); len(h) != 1 {
		t.Fatalf("limit 1: %d entries", len(h))
	}
	ev, err := s.LastEvidence(ctx, "d1")
	if err != nil || string(ev.Quote) != "q2" || string(ev.Nonce) != "n2" || ev.PCR != 14 {
		t.Fatalf("LastEvidence = %+v, %v", ev, err)
	}
}

func testExpireAttestations(t *testing.T, s AttestationStore) {
	ctx := context.Background()
	for i, dev := range []string{"old", "fresh", "bad"} {
		if err := s.Enroll(ctx, identity(dev, "acme", "ek"+dev, ""), at0); err != nil {
			t.Fatal(err)
		}
		outcome, at := "trusted", at0.Add(time.Duration(i)*time.Hour)
		if dev == "bad" {
			outcome = "untrusted"
			at = at0
		}
		if err := s.AddAttestation(ctx, store.Attestation{Device: dev, Time: at, Outcome: outcome}); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := s.ExpireAttestations(ctx, at0.Add(30*time.Minute), at0.Add(2*time.Hour))
	if err != nil || len(ids) != 1 || ids[0] != "old" {
		t.Fatalf("expired %v, %v; want [old]", ids, err)
	}
	for dev, want := range map[string]string{"old": "stale", "fresh": "trusted", "bad": "untrusted"} {
		if d, _ := s.Device(ctx, dev); d.Attestation != want {
			t.Errorf("%s: %s, want %s", dev, d.Attestation, want)
		}
	}
	h, _ := s.Attestations(ctx, "old", 1)
	if len(h) != 1 || h[0].Outcome != "stale" || h[0].Reason == "" {
		t.Fatalf("history of old = %+v", h)
	}
}
