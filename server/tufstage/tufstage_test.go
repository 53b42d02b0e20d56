package tufstage

import (
	"context"
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/keys"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func newKey(t *testing.T) (signature.SignerVerifier, crypto.PublicKey) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "k.key")
	if err := keys.Generate(p); err != nil {
		t.Fatal(err)
	}
	s, err := keys.LoadSigner(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := s.PublicKey()
	return s, pub
}

func rootWith(t *testing.T, s signature.Signer, pub crypto.PublicKey) []byte {
	t.Helper()
	m := metadata.Root(time.Now().Add(time.Hour))
	k, _ := metadata.KeyFromPublicKey(pub)
	for _, r := range metadata.TOP_LEVEL_ROLE_NAMES {
		if err := m.Signed.AddKey(k, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Sign(s); err != nil {
		t.Fatal(err)
	}
	b, _ := m.ToBytes(true)
	return b
}

func TestStageRoot(t *testing.T) {
	s, pub := newKey(t)
	_, pub2 := newKey(t)
	cur := rootWith(t, s, pub)
	id, _ := KeyID(pub)
	now := time.Now()
	tests := []struct {
		name    string
		edit    RootEdit
		wantErr string
	}{
		{"threshold above keys", RootEdit{Thresholds: map[string]int{"root": 2}}, "threshold 2 with 1 keys"},
		{"unknown role", RootEdit{Thresholds: map[string]int{"mirror": 1}}, "no role"},
		{"remove last key", RootEdit{RemoveKeys: map[string][]string{"root": {id[:8]}}}, "threshold 1 with 0 keys"},
		{"unknown key", RootEdit{RemoveKeys: map[string][]string{"root": {"ffff"}}}, "matches 0 keys"},
		{"add and raise", RootEdit{AddKeys: map[string][]crypto.PublicKey{"root": {pub2}}, Thresholds: map[string]int{"root": 2}, Expires: 48 * time.Hour}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := StageRoot(cur, tt.edit, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Signed.Version != 2 || len(m.Signatures) != 0 || m.Signed.Roles["root"].Threshold != 2 || !m.Signed.Expires.After(now.Add(47*time.Hour)) {
				t.Fatalf("staged root: version %d, %d signatures, threshold %d", m.Signed.Version, len(m.Signatures), m.Signed.Roles["root"].Threshold)
			}
		})
	}
}

func TestSignRules(t *testing.T) {
	s, pub := newKey(t)
	dir := t.TempDir()
	m, err := StageRoot(rootWith(t, s, pub), RootEdit{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Write(dir, "root", m)
	if err != nil || filepath.Base(p) != "2.root.json" {
		t.Fatalf("Write = %s, %v", p, err)
	}
	sum, err := Sign(p, s)
	if err != nil || len(sum.Signatures) != 1 || sum.Version != 2 {
		t.Fatalf("Sign = %+v, %v", sum, err)
	}
	if _, err := Sign(p, s); err == nil || !strings.Contains(err.Error(), "already signed") {
		t.Fatalf("second signature by the same key: %v", err)
	}
	bad := filepath.Join(dir, "root.json")
	os.WriteFile(bad, []byte("{}"), 0o644)
	if _, err := Sign(bad, s); err == nil {
		t.Fatal("signing a badly named file succeeded")
	}
	snap := metadata.Snapshot(time.Now().Add(time.Hour))
	sp, _ := Write(dir, "snapshot", snap)
	if _, err := Sign(sp, s); err == nil || !strings.Contains(err.Error(), "not \"snapshot\"") {
		t.Fatalf("signing snapshot offline: %v", err)
	}
}

func FuzzDescribe(f *testing.F) {
	f.Add([]byte(`{"signed":{"_type":"root","version":1},"signatures":[]}`))
	f.Add([]byte(`{"signed":{"_type":"targets","version":1,"targets":{}},"signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sum, err := Describe("x", "r", b)
		if err == nil && sum == nil {
			t.Fatal("nil summary without error")
		}
	})
}
