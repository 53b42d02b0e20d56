package sipsecret

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func testBox(t testing.TB) *Box {
	t.Helper()
	b, err := New(bytes.Repeat([]byte{3}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCredential(t *testing.T) {
	b := testBox(t)
	c := Credential{AuthUser: "1001", Password: []byte("correct horse")}
	ct, err := b.SealCredential("acme", "p1", c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("horse")) || bytes.Contains(ct, []byte("1001")) {
		t.Fatal("the ciphertext holds the credential in the clear")
	}
	got, err := b.OpenCredential("acme", "p1", ct)
	if err != nil || got.AuthUser != "1001" || string(got.Password) != "correct horse" {
		t.Fatalf("OpenCredential = %+v, %v", got, err)
	}
	// Bound to the device and tenant, and to its layout.
	for _, tc := range []struct{ tenant, device string }{{"acme", "p2"}, {"beta", "p1"}} {
		if _, err := b.OpenCredential(tc.tenant, tc.device, ct); !errors.Is(err, ErrDecrypt) {
			t.Errorf("opened as %s/%s: %v", tc.tenant, tc.device, err)
		}
	}
	if _, err := b.Open("acme", "p1", ct); !errors.Is(err, ErrDecrypt) {
		t.Errorf("a credential opened as a bare password: %v", err)
	}
	forged := bytes.Clone(ct)
	forged[0] = version
	if _, err := b.OpenCredential("acme", "p1", forged); !errors.Is(err, ErrDecrypt) {
		t.Errorf("a relabelled ciphertext opened: %v", err)
	}
	// What Seal made opens, without a user name.
	old, err := b.Seal("acme", "p1", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.OpenCredential("acme", "p1", old); err != nil || got.AuthUser != "" || string(got.Password) != "hunter2" {
		t.Fatalf("a version 1 ciphertext: %+v, %v", got, err)
	}
	// Bounds.
	if _, err := b.SealCredential("acme", "p1", Credential{Password: nil}); !errors.Is(err, ErrPassword) {
		t.Errorf("empty password: %v", err)
	}
	if _, err := b.SealCredential("acme", "p1", Credential{Password: make([]byte, MaxPassword+1)}); !errors.Is(err, ErrPassword) {
		t.Errorf("long password: %v", err)
	}
	if _, err := b.SealCredential("acme", "p1", Credential{AuthUser: strings.Repeat("u", MaxAuthUser+1), Password: []byte("x")}); !errors.Is(err, ErrAuthUser) {
		t.Errorf("long user name: %v", err)
	}
	if ct, err := b.SealCredential("acme", "p1", Credential{AuthUser: strings.Repeat("u", MaxAuthUser), Password: make([]byte, MaxPassword)}); err != nil || len(ct) > 1024 {
		t.Errorf("the largest credential: %d bytes, %v (the store keeps 1024)", len(ct), err)
	}
}

func FuzzOpenCredential(f *testing.F) {
	b := testBox(f)
	for _, c := range []Credential{{AuthUser: "1001", Password: []byte("pw")}, {Password: []byte("x")}} {
		ct, err := b.SealCredential("acme", "p1", c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ct)
	}
	old, _ := b.Seal("acme", "p1", []byte("hunter2"))
	f.Add(old)
	f.Add([]byte{2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, ct []byte) {
		c, err := b.OpenCredential("acme", "p1", ct)
		if err != nil {
			return
		}
		if len(c.Password) == 0 || len(c.Password) > MaxPassword || len(c.AuthUser) > MaxAuthUser {
			t.Fatalf("opened %+v", c)
		}
	})
}
