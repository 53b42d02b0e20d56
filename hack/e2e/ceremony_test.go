package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/tufstage"
)

func genKey(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".key")
	mustRun(t, nil, bins.server, "keys", "generate", "--out", p)
	return p
}

func keyIDOf(t *testing.T, pubPath string) string {
	t.Helper()
	pub, err := keys.LoadPublic(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tufstage.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type roleStatus struct {
	Role      string
	Version   int64
	Threshold int
	KeyIDs    []string
}

func tufStatus(t *testing.T, s *server) map[string]roleStatus {
	t.Helper()
	r := mustRun(t, s.clientEnv(), bins.server, "tuf", "status", "-o", "json")
	var st struct {
		Roles       []roleStatus
		Revocations []struct{ Target, Reason string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("tuf status: %v\n%s", err, r.stdout)
	}
	out := map[string]roleStatus{}
	for _, rs := range st.Roles {
		out[rs.Role] = rs
	}
	return out
}

// TestKeyCeremonies drives the offline ceremonies through the CLI against a
// running server while a phone provisioned with 1.root.json keeps updating:
// revocation, a root rotation to 2-of-3, a targets key rotation, and a new
// per-model publisher role with its own key.
func TestKeyCeremonies(t *testing.T) {
	buildBinaries(t)
	s := startServer(t)
	env := s.clientEnv()
	staged := t.TempDir()
	kdir := filepath.Join(s.dataDir, "keys")

	for _, v := range []string{"1.1.0", "1.2.0"} {
		b, _ := buildSigned(t, s, v)
		if r := publish(t, s, b); r.code != 0 {
			t.Fatalf("publish %s: %d", v, r.code)
		}
	}
	// 1.2.0 is withdrawn before any phone takes it.
	mustRun(t, env, bins.server, "firmware", "revoke", "firmware/"+model+"/"+model+"-1.2.0.tar",
		"--key", filepath.Join(kdir, "publisher.key"), "--reason", "breaks SRTP rekeying")
	p := provision(t, s, "phone-1", model)
	if r := p.once(t, s, model, hw); r.code != 0 {
		t.Fatalf("install exited %d", r.code)
	}
	if v := p.bootState(t)["slots"].(map[string]any)["b"].(map[string]any)["version"]; v != "1.1.0" {
		t.Fatalf("phone installed %v, want 1.1.0 (1.2.0 is revoked)", v)
	}
	if st := mustRun(t, env, bins.server, "tuf", "status"); !strings.Contains(st.stdout, "breaks SRTP rekeying") {
		t.Fatalf("tuf status does not show the revocation:\n%s", st.stdout)
	}

	// Root v2: three root keys, two needed. A push signed only by the new
	// keys is refused (the old root's threshold is not met).
	r2, r3 := genKey(t, "root2"), genKey(t, "root3")
	mustRun(t, env, bins.server, "tuf", "stage", "root", "--out-dir", staged, "--add-key", "root="+r2+".pub", "--add-key", "root="+r3+".pub", "--threshold", "root=2")
	root2 := filepath.Join(staged, "2.root.json")
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", r2, root2)
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", r3, root2)
	if r := run(t, env, bins.server, "tuf", "push", root2); r.code != 3 || !strings.Contains(r.stderr, "root-signature") {
		t.Fatalf("push without the old root key exited %d: %s", r.code, r.stderr)
	}
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", filepath.Join(kdir, "root.key"), root2)
	mustRun(t, env, bins.server, "tuf", "push", root2)
	if st := tufStatus(t, s)["root"]; st.Version != 2 || st.Threshold != 2 || len(st.KeyIDs) != 3 {
		t.Fatalf("root after rotation: %+v", st)
	}

	// Root v3 swaps the targets key; targets v2 signed by the new key goes
	// in the same push.
	t2 := genKey(t, "targets2")
	oldTargets := keyIDOf(t, filepath.Join(kdir, "targets.key.pub"))
	mustRun(t, env, bins.server, "tuf", "stage", "root", "--out-dir", staged, "--add-key", "targets="+t2+".pub", "--remove-key", "targets="+oldTargets[:16])
	mustRun(t, env, bins.server, "tuf", "stage", "targets", "--out-dir", staged)
	root3, targets2 := filepath.Join(staged, "3.root.json"), filepath.Join(staged, "2.targets.json")
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", r2, root3)
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", r3, root3)
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", t2, targets2)
	mustRun(t, env, bins.server, "tuf", "push", root3, targets2)

	// A per-model role for dt100 with its own publisher key.
	p2 := genKey(t, "dt100-publisher")
	mustRun(t, env, bins.server, "tuf", "stage", "targets", "--out-dir", staged, "--delegate", "dt100", "--paths", "firmware/"+model+"/*", "--delegation-key", p2+".pub")
	mustRun(t, env, bins.server, "tuf", "stage", "dt100", "--new", "--out-dir", staged)
	targets3, role1 := filepath.Join(staged, "3.targets.json"), filepath.Join(staged, "1.dt100.json")
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", t2, targets3)
	mustRun(t, nil, bins.server, "tuf", "sign", "--key", p2, role1)
	mustRun(t, env, bins.server, "tuf", "push", targets3, role1)

	// The old publisher key can no longer publish dt100; the new one can.
	b, _ := buildSigned(t, s, "1.3.0")
	if r := publish(t, s, b); r.code == 0 {
		t.Fatal("the old publisher key still publishes dt100 after its delegation moved")
	}
	mustRun(t, nil, bins.server, "firmware", "sign", "--key", p2, b)
	mustRun(t, env, bins.server, "firmware", "publish", "--key", p2, "--no-progress", b)

	// The phone, still provisioned with 1.root.json, follows the chain.
	if r := p.once(t, s, model, hw); r.code != 0 {
		t.Fatalf("update after the ceremonies exited %d", r.code)
	}
	if v := p.bootState(t)["slots"].(map[string]any)["a"].(map[string]any)["version"]; v != "1.3.0" {
		t.Fatalf("phone installed %v, want 1.3.0", v)
	}
}

// TestPublisherToken: CI publishes with a token scoped to its model; the
// token cannot publish another model, and stops working once revoked.
func TestPublisherToken(t *testing.T) {
	buildBinaries(t)
	s := startServer(t)
	r := mustRun(t, s.clientEnv(), bins.server, "tokens", "create", "--models", model, "--ttl", "1h", "--description", "ci", "-o", "json")
	var info struct{ ID, Token string }
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || !strings.HasPrefix(info.Token, "dtp_") {
		t.Fatalf("tokens create: %v %q", err, r.stdout)
	}
	ci := []string{"DIALTONE_SERVER=" + s.url(), "DIALTONE_TOKEN=" + info.Token, "DIALTONE_CONFIG=/dev/null"}
	key := filepath.Join(s.dataDir, "keys", "publisher.key")
	b, _ := buildSigned(t, s, "1.1.0")
	mustRun(t, ci, bins.server, "firmware", "publish", "--key", key, "--no-progress", b)
	if r := run(t, ci, bins.server, "devices", "list"); r.code == 0 {
		t.Fatal("a publisher token listed devices")
	}
	other := t.TempDir()
	payload := filepath.Join(other, "rootfs.img")
	if err := os.WriteFile(payload, []byte("other model"), 0o644); err != nil {
		t.Fatal(err)
	}
	ob := filepath.Join(other, "other.tar")
	mustRun(t, nil, bins.server, "firmware", "build", "--model", "dt900", "--version", "1.0.0", "--hardware", hw, "--payload", "rootfs.img="+payload, "-o", ob)
	if r := run(t, ci, bins.server, "firmware", "publish", "--key", key, "--no-progress", ob); r.code == 0 || !strings.Contains(r.stderr, "scoped") {
		t.Fatalf("publishing another model with a scoped token exited %d: %s", r.code, r.stderr)
	}
	mustRun(t, s.clientEnv(), bins.server, "tokens", "revoke", info.ID)
	b2, _ := buildSigned(t, s, "1.2.0")
	if r := run(t, ci, bins.server, "firmware", "publish", "--key", key, "--no-progress", b2); r.code == 0 {
		t.Fatal("a revoked token still publishes")
	}
	if l := mustRun(t, s.clientEnv(), bins.server, "tokens", "list"); !strings.Contains(l.stdout, "revoked") {
		t.Fatalf("tokens list does not show the revocation:\n%s", l.stdout)
	}
}
