package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// forge rewrites the dev server's repository on disk as an attacker who
// holds the publisher's TUF key and the online keys would: mutate edits the
// publisher role's targets, and the role, snapshot and timestamp are
// re-signed so that the TUF chain verifies. Only checks beyond TUF (the
// publisher's bundle signature) can catch what it does. The server serves
// timestamp.json from memory, so restart it afterwards.
func forge(t *testing.T, s *systest.Server, mutate func(targets map[string]*metadata.TargetFiles, targetsDir string)) {
	t.Helper()
	ctx := context.Background()
	mdir := filepath.Join(s.DataDir, "tuf", "metadata")
	load := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(mdir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := func(role string) signature.Signer {
		k, err := keys.LoadSigner(ctx, filepath.Join(s.DataDir, "keys", role+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	var zt metadata.Metadata[metadata.TimestampType]
	ts, err := zt.FromBytes(load("timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	snapV := ts.Signed.Meta["snapshot.json"].Version
	var zs metadata.Metadata[metadata.SnapshotType]
	snap, err := zs.FromBytes(load(strconv.FormatInt(snapV, 10) + ".snapshot.json"))
	if err != nil {
		t.Fatal(err)
	}
	pubV := snap.Signed.Meta["publisher.json"].Version
	var zp metadata.Metadata[metadata.TargetsType]
	pub, err := zp.FromBytes(load(strconv.FormatInt(pubV, 10) + ".publisher.json"))
	if err != nil {
		t.Fatal(err)
	}
	mutate(pub.Signed.Targets, filepath.Join(s.DataDir, "tuf", "targets"))
	pub.Signed.Version++
	pub.ClearSignatures()
	if _, err := pub.Sign(key("publisher")); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(mdir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := pub.ToBytes(true)
	write(strconv.FormatInt(pub.Signed.Version, 10)+".publisher.json", b)
	snap.Signed.Version++
	snap.Signed.Meta["publisher.json"] = metadata.MetaFile(pub.Signed.Version)
	snap.ClearSignatures()
	if _, err := snap.Sign(key("snapshot")); err != nil {
		t.Fatal(err)
	}
	sb, _ := snap.ToBytes(true)
	write(strconv.FormatInt(snap.Signed.Version, 10)+".snapshot.json", sb)
	ts.Signed.Version++
	ts.Signed.Expires = time.Now().Add(time.Hour).UTC()
	sum := sha256.Sum256(sb)
	ts.Signed.Meta["snapshot.json"] = &metadata.MetaFiles{Version: snap.Signed.Version, Length: int64(len(sb)), Hashes: metadata.Hashes{"sha256": sum[:]}}
	ts.ClearSignatures()
	if _, err := ts.Sign(key("timestamp")); err != nil {
		t.Fatal(err)
	}
	tb, _ := ts.ToBytes(true)
	write("timestamp.json", tb)
}

// TestAgentChecksPublisherSignature: with the TUF chain intact, a bundle
// whose signature file was made by a key the delegation does not pin, or
// whose signature target is gone, is refused by the agent.
func TestAgentChecksPublisherSignature(t *testing.T) {
	buildBinaries(t)
	tests := []struct {
		name   string
		reason string
		mutate func(t *testing.T, bundle string) func(map[string]*metadata.TargetFiles, string)
	}{
		{"signature by an unpinned key", "publisher signature does not verify", func(t *testing.T, bundle string) func(map[string]*metadata.TargetFiles, string) {
			return func(targets map[string]*metadata.TargetFiles, dir string) {
				strangerKey := filepath.Join(t.TempDir(), "stranger.key")
				if err := keys.Generate(strangerKey); err != nil {
					t.Fatal(err)
				}
				st, err := keys.LoadSigner(context.Background(), strangerKey)
				if err != nil {
					t.Fatal(err)
				}
				data, err := os.ReadFile(bundle)
				if err != nil {
					t.Fatal(err)
				}
				sig, err := firmware.Sign(context.Background(), st, bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				p := "firmware/" + model + "/" + model + "-1.2.0.tar.sig"
				sum := sha256.Sum256(sig)
				targets[p] = &metadata.TargetFiles{Length: int64(len(sig)), Hashes: metadata.Hashes{"sha256": sum[:]}}
				name := filepath.Join(dir, "firmware", model, hex.EncodeToString(sum[:])+"."+model+"-1.2.0.tar.sig")
				if err := os.WriteFile(name, sig, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"signature missing", "signature target missing", func(t *testing.T, bundle string) func(map[string]*metadata.TargetFiles, string) {
			return func(targets map[string]*metadata.TargetFiles, dir string) {
				delete(targets, "firmware/"+model+"/"+model+"-1.2.0.tar.sig")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := systest.StartServer(t, bins)
			first, _ := buildSigned(t, s, "1.1.0")
			if r := publish(t, s, first); r.Code != 0 {
				t.Fatal("publish 1.1.0 failed")
			}
			p := systest.Provision(t, s, "phone-1", model)
			if r := p.Once(t, s, model, hw); r.Code != 0 {
				t.Fatalf("install 1.1.0 exited %d", r.Code)
			}
			next, _ := buildSigned(t, s, "1.2.0")
			if r := publish(t, s, next); r.Code != 0 {
				t.Fatal("publish 1.2.0 failed")
			}
			forge(t, s, tt.mutate(t, next))
			s = s.Restart(t)
			before := p.SlotTree(t)
			r := p.Once(t, s, model, hw)
			if r.Code != 20 || !strings.Contains(r.Stderr, tt.reason) {
				t.Fatalf("agent exited %d, want 20 (refused) because %q", r.Code, tt.reason)
			}
			if after := p.SlotTree(t); len(after) != len(before) || after["boot.json"] != before["boot.json"] {
				t.Fatal("slots changed although the update was refused")
			}
		})
	}
}
