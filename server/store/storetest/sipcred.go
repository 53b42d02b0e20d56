package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// SIPCredentialStore is what the SIP credential tests need of a store.
type SIPCredentialStore interface {
	store.Store
	store.SIPCredentials
}

// RunSIPCredentials runs the behaviour tests of store.SIPCredentials, each
// in a subtest with a store of its own from open.
func RunSIPCredentials(t *testing.T, open func(t *testing.T) SIPCredentialStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s SIPCredentialStore)
	}{
		{"SetGetDelete", testSIPSetGetDelete},
		{"OwnTenantOnly", testSIPOwnTenant},
		{"Invalid", testSIPInvalid},
		{"Concurrent", testSIPConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func sipDevice(t *testing.T, s store.Store, tenant, device string) {
	t.Helper()
	st := wire.State{Schema: wire.SchemaVersion, Tenant: tenant, Device: device, Model: "dt100", Hardware: "r1", Version: "1.0.0",
		Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: t0}
	if err := s.UpsertState(context.Background(), tenant, st, t0); err != nil {
		t.Fatal(err)
	}
}

func testSIPSetGetDelete(t *testing.T, s SIPCredentialStore) {
	ctx := context.Background()
	sipDevice(t, s, "acme", "p1")
	sipDevice(t, s, "acme", "p2")
	if _, _, _, err := s.SIPCredential(ctx, "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("before any: %v, want ErrNotFound", err)
	}
	if err := s.SetSIPCredential(ctx, "acme", "p1", []byte("ct-1"), at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ct, tenant, updated, err := s.SIPCredential(ctx, "p1")
	if err != nil || !bytes.Equal(ct, []byte("ct-1")) || tenant != "acme" || !updated.Equal(at(time.Minute)) || updated.Location() != time.UTC {
		t.Fatalf("SIPCredential = %q, %q, %v, %v", ct, tenant, updated, err)
	}
	if _, _, _, err := s.SIPCredential(ctx, "p2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another device's: %v, want ErrNotFound", err)
	}
	// Replacing.
	if err := s.SetSIPCredential(ctx, "acme", "p1", []byte("ct-2"), at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ct, _, updated, err := s.SIPCredential(ctx, "p1"); err != nil || string(ct) != "ct-2" || !updated.Equal(at(2*time.Minute)) {
		t.Fatalf("after replacing: %q, %v, %v", ct, updated, err)
	}
	if err := s.DeleteSIPCredential(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.SIPCredential(ctx, "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after deleting: %v, want ErrNotFound", err)
	}
	if err := s.DeleteSIPCredential(ctx, "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting twice: %v, want ErrNotFound", err)
	}
}

func testSIPOwnTenant(t *testing.T, s SIPCredentialStore) {
	ctx := context.Background()
	sipDevice(t, s, "acme", "p1")
	if err := s.SetSIPCredential(ctx, "beta", "p1", []byte("ct"), t0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a device of another tenant: %v, want ErrConflict", err)
	}
	if err := s.SetSIPCredential(ctx, "acme", "nosuch", []byte("ct"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown device: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.SIPCredential(ctx, "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused set left a row: %v", err)
	}
}

func testSIPInvalid(t *testing.T, s SIPCredentialStore) {
	ctx := context.Background()
	sipDevice(t, s, "acme", "p1")
	for _, tc := range []struct {
		name, tenant, device string
		ct                   []byte
	}{
		{"empty ciphertext", "acme", "p1", nil},
		{"oversized ciphertext", "acme", "p1", make([]byte, 4096)},
		{"no tenant", "", "p1", []byte("ct")},
		{"no device", "acme", "", []byte("ct")},
		{"NUL in tenant", "ac\x00me", "p1", []byte("ct")},
	} {
		if err := s.SetSIPCredential(ctx, tc.tenant, tc.device, tc.ct, t0); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
}

// testSIPConcurrent: concurrent sets of one device leave one of them,
// whole.
func testSIPConcurrent(t *testing.T, s SIPCredentialStore) {
	ctx := context.Background()
	sipDevice(t, s, "acme", "p1")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ct := bytes.Repeat([]byte{byte('a' + i)}, 64)
			if err := s.SetSIPCredential(ctx, "acme", "p1", ct, at(time.Duration(i)*time.Second)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ct, _, _, err := s.SIPCredential(ctx, "p1")
	if err != nil || len(ct) != 64 || !bytes.Equal(ct, bytes.Repeat(ct[:1], 64)) {
		t.Fatalf("after concurrent sets: %q, %v", ct, err)
	}
}
