package sipsecret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, KeyFile)
	b1, err := OpenKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Fatalf("key file %v, %v; want 0600 and %d bytes", fi.Mode(), err, KeySize)
	}
	ct, err := b1.Seal("acme", "p1", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	// A restart reads the same key.
	b2, err := OpenKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if pw, err := b2.Open("acme", "p1", ct); err != nil || string(pw) != "hunter2" {
		t.Fatalf("after reopening: %q, %v", pw, err)
	}
	// Another data directory's key does not open it.
	b3, err := OpenKeyFile(filepath.Join(t.TempDir(), KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b3.Open("acme", "p1", ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("another key: %v, want ErrDecrypt", err)
	}

	for name, setup := range map[string]func(p string) error{
		"short":          func(p string) error { return os.WriteFile(p, make([]byte, KeySize-1), 0o600) },
		"long":           func(p string) error { return os.WriteFile(p, make([]byte, KeySize+1), 0o600) },
		"world-readable": func(p string) error { return os.WriteFile(p, make([]byte, KeySize), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), KeyFile)
			if err := setup(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, map[bool]os.FileMode{true: 0o644, false: 0o600}[name == "world-readable"]); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenKeyFile(p); !errors.Is(err, ErrKey) {
				t.Fatalf("OpenKeyFile = %v, want ErrKey", err)
			}
		})
	}
}

// TestKeyFileConcurrentCreate: servers starting together agree on one key.
func TestKeyFileConcurrentCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFile)
	boxes := make([]*Box, 8)
	var wg sync.WaitGroup
	for i := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := OpenKeyFile(path)
			if err != nil {
				t.Error(err)
				return
			}
			boxes[i] = b
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ct, err := boxes[0].Seal("acme", "p1", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range boxes {
		if _, err := b.Open("acme", "p1", ct); err != nil {
			t.Fatalf("box %d has another key: %v", i, err)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("%d files in the keys directory, want 1 (temporary files left?)", len(ents))
	}
}

func TestSealOpen(t *testing.T) {
	b, err := New(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	pw := []byte("correct horse battery staple")
	ct, err := b.Seal("acme", "p1", pw)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, pw) {
		t.Fatal("the ciphertext holds the password")
	}
	again, _ := b.Seal("acme", "p1", pw)
	if bytes.Equal(ct, again) {
		t.Fatal("two seals of one password are equal: no fresh nonce")
	}
	if got, err := b.Open("acme", "p1", ct); err != nil || !bytes.Equal(got, pw) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	flip := func(i int) []byte { c := bytes.Clone(ct); c[i] ^= 1; return c }
	for _, tc := range []struct {
		name, tenant, device string
		ct                   []byte
	}{
		{"another device", "acme", "p2", ct},
		{"another tenant", "beta", "p1", ct},
		{"flipped tag", "acme", "p1", flip(len(ct) - 1)},
		{"flipped nonce", "acme", "p1", flip(1)},
		{"another version", "acme", "p1", flip(0)},
		{"truncated", "acme", "p1", ct[:20]},
		{"empty", "acme", "p1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := b.Open(tc.tenant, tc.device, tc.ct); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("Open = %q, %v; want ErrDecrypt", got, err)
			}
		})
	}
	for _, p := range [][]byte{nil, {}, make([]byte, MaxPassword+1)} {
		if _, err := b.Seal("acme", "p1", p); !errors.Is(err, ErrPassword) {
			t.Errorf("sealing %d bytes: %v, want ErrPassword", len(p), err)
		}
	}
	if _, err := b.Seal("acme", "p1", make([]byte, MaxPassword)); err != nil {
		t.Errorf("sealing %d bytes: %v", MaxPassword, err)
	}
	// IDs that could blur the binding (a NUL would let "a\x00b" pose as
	// another pair) are refused.
	if _, err := b.Seal("ac\x00me", "p1", pw); err == nil {
		t.Error("a tenant with a NUL byte was accepted")
	}
	if _, err := New(make([]byte, 16)); !errors.Is(err, ErrKey) {
		t.Errorf("a 16-byte key: %v, want ErrKey", err)
	}
}
