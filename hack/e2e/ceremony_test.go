package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/tufstage"
)

func genKey(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".key")
	systest.MustRun(t, nil, bins.Server, "keys", "generate", "--out", p)
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

func tufStatus(t *testing.T, s *systest.Server) map[string]roleStatus {
	t.Helper()
	r := systest.MustRun(t, s.ClientEnv(), bins.Server, "tuf", "status", "-o", "json")
	var st struct {
		Roles       []roleStatus
		Revocations []struct{ Target, Reason string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("tuf status: %v\n%s", err, r.Stdout)
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
	s := systest.StartServer(t, bins)
	env := s.ClientEnv()
	staged := t.TempDir()
	kdir := filepath.Join(s.DataDir, "keys")

	for _, v := range []string{"1.1.0", "1.2.0"} {
		b, _ := buildSigned(t, s, v)
		if r := publish(t, s, b); r.Code != 0 {
			t.Fatalf("publish %s: %d", v, r.Code)
		}
	}
	// 1.2.0 is withdrawn before any phone takes it.
	systest.MustRun(t, env, bins.Server, "firmware", "revoke", "firmware/"+model+"/"+model+"-1.2.0.tar",
		"--key", filepath.Join(kdir, "publisher.key"), "--reason", "breaks SRTP rekeying")
	p := systest.Provision(t, s, "phone-1", model)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("install exited %d", r.Code)
	}
	if v := p.BootState(t)["slots"].(map[string]any)["b"].(map[string]any)["version"]; v != "1.1.0" {
		t.Fatalf("phone installed %v, want 1.1.0 (1.2.0 is revoked)", v)
	}
	if st := systest.MustRun(t, env, bins.Server, "tuf", "status"); !strings.Contains(st.Stdout, "breaks SRTP rekeying") {
		t.Fatalf("tuf status does not show the revocation:\n%s", st.Stdout)
	}

	// Root v2: three root keys, two needed. A push signed only by the new
	// keys is refused (the old root's threshold is not met).
	r2, r3 := genKey(t, "root2"), genKey(t, "root3")
	systest.MustRun(t, env, bins.Server, "tuf", "stage", "root", "--out-dir", staged, "--add-key", "root="+r2+".pub", "--add-key", "root="+r3+".pub", "--threshold", "root=2")
	root2 := filepath.Join(staged, "2.root.json")
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", r2, root2)
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", r3, root2)
	if r := systest.Run(t, env, bins.Server, "tuf", "push", root2); r.Code != 3 || !strings.Contains(r.Stderr, "root-signature") {
		t.Fatalf("push without the old root key exited %d: %s", r.Code, r.Stderr)
	}
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", filepath.Join(kdir, "root.key"), root2)
	systest.MustRun(t, env, bins.Server, "tuf", "push", root2)
	if st := tufStatus(t, s)["root"]; st.Version != 2 || st.Threshold != 2 || len(st.KeyIDs) != 3 {
		t.Fatalf("root after rotation: %+v", st)
	}

	// Root v3 swaps the targets key; targets v2 signed by the new key goes
	// in the same push.
	t2 := genKey(t, "targets2")
	oldTargets := keyIDOf(t, filepath.Join(kdir, "targets.key.pub"))
	systest.MustRun(t, env, bins.Server, "tuf", "stage", "root", "--out-dir", staged, "--add-key", "targets="+t2+".pub", "--remove-key", "targets="+oldTargets[:16])
	systest.MustRun(t, env, bins.Server, "tuf", "stage", "targets", "--out-dir", staged)
	root3, targets2 := filepath.Join(staged, "3.root.json"), filepath.Join(staged, "2.targets.json")
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", r2, root3)
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", r3, root3)
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", t2, targets2)
	systest.MustRun(t, env, bins.Server, "tuf", "push", root3, targets2)

	// A per-model role for dt100 with its own publisher key.
	p2 := genKey(t, "dt100-publisher")
	systest.MustRun(t, env, bins.Server, "tuf", "stage", "targets", "--out-dir", staged, "--delegate", "dt100", "--paths", "firmware/"+model+"/*", "--delegation-key", p2+".pub")
	systest.MustRun(t, env, bins.Server, "tuf", "stage", "dt100", "--new", "--out-dir", staged)
	targets3, role1 := filepath.Join(staged, "3.targets.json"), filepath.Join(staged, "1.dt100.json")
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", t2, targets3)
	systest.MustRun(t, nil, bins.Server, "tuf", "sign", "--key", p2, role1)
	systest.MustRun(t, env, bins.Server, "tuf", "push", targets3, role1)

	// The old publisher key can no longer publish dt100; the new one can.
	b, _ := buildSigned(t, s, "1.3.0")
	if r := publish(t, s, b); r.Code == 0 {
		t.Fatal("the old publisher key still publishes dt100 after its delegation moved")
	}
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", p2, b)
	systest.MustRun(t, env, bins.Server, "firmware", "publish", "--key", p2, "--no-progress", b)

	// The phone, still provisioned with 1.root.json, follows the chain.
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("update after the ceremonies exited %d", r.Code)
	}
	if v := p.BootState(t)["slots"].(map[string]any)["a"].(map[string]any)["version"]; v != "1.3.0" {
		t.Fatalf("phone installed %v, want 1.3.0", v)
	}
}

// TestPublisherToken: CI publishes with a token scoped to its model; the
// token cannot publish another model, and stops working once revoked.
func TestPublisherToken(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	r := systest.MustRun(t, s.ClientEnv(), bins.Server, "tokens", "create", "--models", model, "--ttl", "1h", "--description", "ci", "-o", "json")
	var info struct{ ID, Token string }
	if err := json.Unmarshal([]byte(r.Stdout), &info); err != nil || !strings.HasPrefix(info.Token, "dtp_") {
		t.Fatalf("tokens create: %v %q", err, r.Stdout)
	}
	ci := []string{"DIALTONE_SERVER=" + s.URL(), "DIALTONE_TOKEN=" + info.Token, "DIALTONE_CA=" + s.CA, "DIALTONE_CONFIG=/dev/null"}
	key := filepath.Join(s.DataDir, "keys", "publisher.key")
	b, _ := buildSigned(t, s, "1.1.0")
	systest.MustRun(t, ci, bins.Server, "firmware", "publish", "--key", key, "--no-progress", b)
	if r := systest.Run(t, ci, bins.Server, "devices", "list"); r.Code == 0 {
		t.Fatal("a publisher token listed devices")
	}
	other := t.TempDir()
	payload := filepath.Join(other, "rootfs.img")
	if err := os.WriteFile(payload, []byte("other model"), 0o644); err != nil {
		t.Fatal(err)
	}
	ob := filepath.Join(other, "other.tar")
	systest.MustRun(t, nil, bins.Server, "firmware", "build", "--model", "dt900", "--version", "1.0.0", "--hardware", hw, "--payload", "rootfs.img="+payload, "-o", ob)
	if r := systest.Run(t, ci, bins.Server, "firmware", "publish", "--key", key, "--no-progress", ob); r.Code == 0 || !strings.Contains(r.Stderr, "scoped") {
		t.Fatalf("publishing another model with a scoped token exited %d: %s", r.Code, r.Stderr)
	}
	systest.MustRun(t, s.ClientEnv(), bins.Server, "tokens", "revoke", info.ID)
	b2, _ := buildSigned(t, s, "1.2.0")
	if r := systest.Run(t, ci, bins.Server, "firmware", "publish", "--key", key, "--no-progress", b2); r.Code == 0 {
		t.Fatal("a revoked token still publishes")
	}
	if l := systest.MustRun(t, s.ClientEnv(), bins.Server, "tokens", "list"); !strings.Contains(l.Stdout, "revoked") {
		t.Fatalf("tokens list does not show the revocation:\n%s", l.Stdout)
	}
}
