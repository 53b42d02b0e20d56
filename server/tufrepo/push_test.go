package tufrepo

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// current reads the repository's current metadata of a role.
func currentRoot(t *testing.T, f *fixture) *metadata.Metadata[metadata.RootType] {
	t.Helper()
	v, _, _, _ := f.repo.Versions()
	m, err := readMeta[metadata.RootType](f.dir, metaName(metadata.ROOT, v))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func currentTargets(t *testing.T, f *fixture, role string) *metadata.Metadata[metadata.TargetsType] {
	t.Helper()
	st := f.repo.current()
	m := st.targets
	if role != metadata.TARGETS {
		m = st.delegated[role]
	}
	b, err := m.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	var zero metadata.Metadata[metadata.TargetsType]
	c, err := zero.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyID(t *testing.T, s signature.Signer) (*metadata.Key, string) {
	t.Helper()
	k, id, err := signerKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func encode[T metadata.Roles](t *testing.T, m *metadata.Metadata[T], signers ...signature.Signer) []byte {
	t.Helper()
	m.ClearSignatures()
	for _, s := range signers {
		if _, err := m.Sign(s); err != nil {
			t.Fatal(err)
		}
	}
	b, err := m.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantReject(t *testing.T, err error, check string) {
	t.Helper()
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.Check != check {
		t.Fatalf("err = %v, want a rejection by check %q", err, check)
	}
}

// TestRotationsSeenByAFreshClient: a go-tuf client that starts from
// 1.root.json follows a chain of root versions (a raised threshold, then a
// targets key rotation), sees revoked targets disappear and promoted ones
// change channel.
func TestRotationsSeenByAFreshClient(t *testing.T) { forEachStore(t, testRotationsSeenByAFreshClient) }

func testRotationsSeenByAFreshClient(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	ctx := context.Background()
	f.publish("m1", "1.0.0")
	f.publish("m1", "1.1.0")
	oldRoot := signer(t, f.keyDir, "root")
	r2, r3 := signer(t, f.keyDir, "root2"), signer(t, f.keyDir, "root3")

	// Root v2: three root keys, threshold 2. Signed by the old threshold
	// (old key) and the new one (two of the three).
	root := currentRoot(t, f)
	for _, s := range []signature.Signer{r2, r3} {
		k, _ := keyID(t, s)
		if err := root.Signed.AddKey(k, metadata.ROOT); err != nil {
			t.Fatal(err)
		}
	}
	root.Signed.Roles[metadata.ROOT].Threshold = 2
	root.Signed.Version = 2

	// Only the new keys: the old root's threshold is not met.
	_, err := f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": encode(t, root, r2, r3)}})
	wantReject(t, err, "root-signature")
	// Only the old key: the new root's own threshold of 2 is not met.
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": encode(t, root, oldRoot)}})
	wantReject(t, err, "root-signature")
	if _, err := f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": encode(t, root, oldRoot, r2)}}); err != nil {
		t.Fatalf("root v2: %v", err)
	}

	// Root v3 rotates the targets key; targets metadata signed by the new
	// key must come in the same push.
	newTargets := signer(t, f.keyDir, "targets2")
	oldTargetsKey, oldTargetsID := keyID(t, signer(t, f.keyDir, "targets"))
	_ = oldTargetsKey
	root = currentRoot(t, f)
	if err := root.Signed.RevokeKey(oldTargetsID, metadata.TARGETS); err != nil {
		t.Fatal(err)
	}
	k, _ := keyID(t, newTargets)
	if err := root.Signed.AddKey(k, metadata.TARGETS); err != nil {
		t.Fatal(err)
	}
	root.Signed.Version = 3
	rootBytes := encode(t, root, r2, r3)
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": rootBytes}})
	wantReject(t, err, "targets-signature")
	tg := currentTargets(t, f, metadata.TARGETS)
	tg.Signed.Version++
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": rootBytes, "targets": encode(t, tg, signer(t, f.keyDir, "targets"))}})
	wantReject(t, err, "targets-signature")
	if _, err := f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"root": rootBytes, "targets": encode(t, tg, newTargets)}}); err != nil {
		t.Fatalf("root v3 with targets: %v", err)
	}

	// Revoke 1.0.0 and promote 1.1.0 to beta, by the publisher.
	pub := currentTargets(t, f, "publisher")
	delete(pub.Signed.Targets, "firmware/m1/m1-1.0.0.tar")
	delete(pub.Signed.Targets, "firmware/m1/m1-1.0.0.tar.sig")
	tf := pub.Signed.Targets["firmware/m1/m1-1.1.0.tar"]
	var custom map[string]any
	_ = json.Unmarshal(*tf.Custom, &custom)
	custom["channel"] = "beta"
	cb, _ := json.Marshal(custom)
	raw := json.RawMessage(cb)
	tf.Custom = &raw
	pub.Signed.Version++
	pubBytes := encode(t, pub, f.pub)
	_, err = f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"publisher": pubBytes}})
	wantReject(t, err, "reason")
	res, err := f.repo.Push(ctx, PushRequest{Files: map[string][]byte{"publisher": pubBytes}, Reason: "CVE-2026-0001", Actor: "release-manager"})
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if len(res.Revoked) != 1 || res.Revoked[0] != "firmware/m1/m1-1.0.0.tar" {
		t.Fatalf("revoked %v", res.Revoked)
	}
	revs, err := f.repo.Revocations()
	if err != nil || len(revs) != 1 || revs[0].Reason != "CVE-2026-0001" || revs[0].Actor != "release-manager" {
		t.Fatalf("revocation record %+v, %v", revs, err)
	}

	// A fresh client from 1.root.json follows v1 -> v2 -> v3.
	u := f.client(f.now())
	if v := u.GetTrustedMetadataSet().Root.Signed.Version; v != 3 {
		t.Fatalf("client trusts root v%d, want v3", v)
	}
	if _, err := u.GetTargetInfo("firmware/m1/m1-1.0.0.tar"); err == nil {
		t.Fatal("revoked target still visible")
	}
	info, err := u.GetTargetInfo("firmware/m1/m1-1.1.0.tar")
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Channel string }
	if err := json.Unmarshal(*info.Custom, &got); err != nil || got.Channel != "beta" {
		t.Fatalf("promoted target custom = %s", *info.Custom)
	}
	// The repository reopens to the same state (the chain verifies).
	f.reopen()
	if v, _, _, _ := f.repo.Versions(); v != 3 {
		t.Fatalf("reopened at root v%d", v)
	}
}

func TestPushRejectsAndChangesNothing(t *testing.T) {
	forEachStore(t, testPushRejectsAndChangesNothing)
}

func testPushRejectsAndChangesNothing(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	ctx := context.Background()
	f.publish("m1", "1.0.0")
	stranger := signer(t, t.TempDir(), "stranger")
	pubMeta := func(mut func(m *metadata.Metadata[metadata.TargetsType])) []byte {
		m := currentTargets(t, f, "publisher")
		m.Signed.Version++
		mut(m)
		return encode(t, m, f.pub)
	}
	tests := []struct {
		name  string
		files map[string][]byte
		check string
	}{
		{"nothing", map[string][]byte{}, "push"},
		{"unknown role", map[string][]byte{"intruder": pubMeta(func(*metadata.Metadata[metadata.TargetsType]) {})}, "role"},
		{"root signed by a stranger", func() map[string][]byte {
			r := currentRoot(t, f)
			r.Signed.Version++
			return map[string][]byte{"root": encode(t, r, stranger)}
		}(), "root-signature"},
		{"root skipping a version", func() map[string][]byte {
			r := currentRoot(t, f)
			r.Signed.Version += 2
			return map[string][]byte{"root": encode(t, r, signer(t, f.keyDir, "root"))}
		}(), "root-version"},
		{"root dropping the online keys", func() map[string][]byte {
			r := currentRoot(t, f)
			r.Signed.Version++
			_, id := keyID(t, signer(t, f.keyDir, "timestamp"))
			k, _ := keyID(t, stranger)
			_ = r.Signed.AddKey(k, metadata.TIMESTAMP)
			_ = r.Signed.RevokeKey(id, metadata.TIMESTAMP)
			return map[string][]byte{"root": encode(t, r, signer(t, f.keyDir, "root"))}
		}(), "online-keys"},
		{"expired root", func() map[string][]byte {
			r := currentRoot(t, f)
			r.Signed.Version++
			r.Signed.Expires = time.Now().Add(-time.Hour)
			return map[string][]byte{"root": encode(t, r, signer(t, f.keyDir, "root"))}
		}(), "root-expiry"},
		{"publisher adds a target by push", map[string][]byte{"publisher": pubMeta(func(m *metadata.Metadata[metadata.TargetsType]) {
			m.Signed.Targets["firmware/m1/evil.tar"] = m.Signed.Targets["firmware/m1/m1-1.0.0.tar"]
		})}, "targets"},
		{"publisher changes a hash by push", map[string][]byte{"publisher": pubMeta(func(m *metadata.Metadata[metadata.TargetsType]) {
			m.Signed.Targets["firmware/m1/m1-1.0.0.tar"].Length++
		})}, "targets"},
		{"targets with firmware of its own", func() map[string][]byte {
			m := currentTargets(t, f, metadata.TARGETS)
			m.Signed.Version++
			m.Signed.Targets["x"] = metadata.TargetFile()
			return map[string][]byte{"targets": encode(t, m, signer(t, f.keyDir, "targets"))}
		}(), "targets"},
		{"new delegation without metadata", func() map[string][]byte {
			m := currentTargets(t, f, metadata.TARGETS)
			m.Signed.Version++
			m.Signed.Delegations.Roles = append(m.Signed.Delegations.Roles, metadata.DelegatedRole{Name: "m2", KeyIDs: m.Signed.Delegations.Roles[0].KeyIDs, Threshold: 1, Terminating: true, Paths: []string{"firmware/m2/*"}})
			return map[string][]byte{"targets": encode(t, m, signer(t, f.keyDir, "targets"))}
		}(), "delegation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.state(t)
			_, err := f.repo.Push(ctx, PushRequest{Files: tt.files, Reason: "test"})
			wantReject(t, err, tt.check)
			if f.state(t) != before {
				t.Fatal("a rejected push changed the repository")
			}
		})
	}
}

// TestUnreleasedRootIsNotServed: a root version written to disk but not yet
// installed (a push in flight, or one interrupted) is not served.
func TestUnreleasedRootIsNotServed(t *testing.T) { forEachStore(t, testUnreleasedRootIsNotServed) }

func testUnreleasedRootIsNotServed(t *testing.T, store targetStore) {
	f := newFixture(t, store)
	r := currentRoot(t, f)
	r.Signed.Version = 2
	if err := os.WriteFile(filepath.Join(f.dir, metadataDir, "2.root.json"), encode(t, r, signer(t, f.keyDir, "root")), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Get(f.srv.URL + "/metadata/2.root.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unreleased root served with %d", resp.StatusCode)
	}
}
