package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Helpers of attack_test.go: copies of the server's repository at given
// moments, metadata signed with the dev server's keys (DATA/keys/ROLE.key;
// in dev mode the offline keys sit there too), a hostile mirror that serves
// forged files and records what the agent asked for, and the checks every
// refused attack must pass.

// repoFiles is a copy of the server's metadata/ folder at one moment, by
// file name (timestamp.json, 3.snapshot.json, 2.publisher.json, ...).
type repoFiles map[string][]byte

// captureRepo copies the server's metadata folder as it is now.
func captureRepo(t *testing.T, s *systest.Server) repoFiles {
	t.Helper()
	dir := filepath.Join(s.DataDir, "tuf", "metadata")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := repoFiles{}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func (f repoFiles) get(t *testing.T, name string) []byte {
	t.Helper()
	b, ok := f[name]
	if !ok {
		t.Fatalf("the captured repository has no %s", name)
	}
	return b
}

// timestamp is the repository's timestamp.json.
func (f repoFiles) timestamp(t *testing.T) *metadata.Metadata[metadata.TimestampType] {
	t.Helper()
	var z metadata.Metadata[metadata.TimestampType]
	m, err := z.FromBytes(f.get(t, "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// snapshotName is the file name of the snapshot the timestamp points at.
func (f repoFiles) snapshotName(t *testing.T) string {
	t.Helper()
	return strconv.FormatInt(f.timestamp(t).Signed.Meta["snapshot.json"].Version, 10) + ".snapshot.json"
}

// snapshot is the snapshot the timestamp points at.
func (f repoFiles) snapshot(t *testing.T) *metadata.Metadata[metadata.SnapshotType] {
	t.Helper()
	var z metadata.Metadata[metadata.SnapshotType]
	m, err := z.FromBytes(f.get(t, f.snapshotName(t)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// roleName is the file name of the version of a targets role ("targets",
// "publisher") that the snapshot names.
func (f repoFiles) roleName(t *testing.T, role string) string {
	t.Helper()
	mf, ok := f.snapshot(t).Signed.Meta[role+".json"]
	if !ok {
		t.Fatalf("the snapshot names no %s", role)
	}
	return strconv.FormatInt(mf.Version, 10) + "." + role + ".json"
}

// role is the targets role's metadata that the snapshot names.
func (f repoFiles) role(t *testing.T, role string) *metadata.Metadata[metadata.TargetsType] {
	t.Helper()
	var z metadata.Metadata[metadata.TargetsType]
	m, err := z.FromBytes(f.get(t, f.roleName(t, role)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// serverKey loads one of the dev server's keys: "timestamp" and "snapshot"
// are the online keys a compromised server holds; "publisher", "targets"
// and "root" are offline keys that dev mode happens to keep beside them.
func serverKey(t *testing.T, s *systest.Server, role string) signature.Signer {
	t.Helper()
	k, err := keys.LoadSigner(context.Background(), filepath.Join(s.DataDir, "keys", role+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// strangerKey is a key no metadata trusts.
func strangerKey(t *testing.T) signature.Signer {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stranger.key")
	if err := keys.Generate(p); err != nil {
		t.Fatal(err)
	}
	k, err := keys.LoadSigner(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedBytes replaces m's signatures with signers' and encodes it.
func signedBytes[T metadata.Roles](t *testing.T, m *metadata.Metadata[T], signers ...signature.Signer) []byte {
	t.Helper()
	m.ClearSignatures()
	for _, k := range signers {
		if _, err := m.Sign(k); err != nil {
			t.Fatal(err)
		}
	}
	b, err := m.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signSnapshot makes snapshot metadata of version naming roles (role →
// version, e.g. "publisher" → 3), signed by k.
func signSnapshot(t *testing.T, k signature.Signer, version int64, expires time.Time, roles map[string]int64) []byte {
	t.Helper()
	m := metadata.Snapshot(expires.UTC().Truncate(time.Second))
	m.Signed.Version = version
	m.Signed.Meta = map[string]*metadata.MetaFiles{}
	for role, v := range roles {
		m.Signed.Meta[role+".json"] = metadata.MetaFile(v)
	}
	return signedBytes(t, m, k)
}

// snapshotRoles are the role versions a snapshot names, ready to edit.
func snapshotRoles(m *metadata.Metadata[metadata.SnapshotType]) map[string]int64 {
	out := map[string]int64{}
	for name, mf := range m.Signed.Meta {
		out[strings.TrimSuffix(name, ".json")] = mf.Version
	}
	return out
}

// signTimestamp makes timestamp metadata of version that points at the
// encoded snapshot (its version, length and SHA-256), signed by k.
func signTimestamp(t *testing.T, k signature.Signer, version int64, expires time.Time, snapshot []byte) []byte {
	t.Helper()
	var z metadata.Metadata[metadata.SnapshotType]
	snap, err := z.FromBytes(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	m := metadata.Timestamp(expires.UTC().Truncate(time.Second))
	m.Signed.Version = version
	sum := sha256.Sum256(snapshot)
	m.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": {
		Version: snap.Signed.Version, Length: int64(len(snapshot)), Hashes: metadata.Hashes{"sha256": sum[:]},
	}}
	return signedBytes(t, m, k)
}

// maliciousTarget adds to role a firmware target for this phone that no
// publisher built or signed, newer than anything published, and returns
// its path below /tuf/targets/ with the bytes a mirror serves there.
func maliciousTarget(t *testing.T, role *metadata.Metadata[metadata.TargetsType]) (string, []byte) {
	t.Helper()
	const version = "6.6.6"
	data := []byte("#!/bin/sh\n# implant: reroute SIP to a rogue proxy\n")
	sum := sha256.Sum256(data)
	custom, err := json.Marshal(wire.TargetCustom{Model: model, Version: version, Hardware: []string{hw}, Channel: "stable",
		Publisher: "publisher", Signature: "firmware/" + model + "/" + model + "-" + version + ".tar.sig", Created: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	raw := json.RawMessage(custom)
	name := model + "-" + version + ".tar"
	role.Signed.Targets["firmware/"+model+"/"+name] = &metadata.TargetFiles{
		Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": sum[:]}, Custom: &raw,
	}
	return fmt.Sprintf("targets/firmware/%s/%x.%s", model, sum, name), data
}

// repoMirror is a hostile mirror in front of the server: it answers the
// paths in files (below /tuf/) itself and passes everything else through,
// and it remembers every path asked for.
type repoMirror struct {
	URL   string
	mu    sync.Mutex
	asked []string
}

func startRepoMirror(t *testing.T, s *systest.Server, files map[string][]byte) *repoMirror {
	t.Helper()
	m := &repoMirror{}
	m.URL = startMirror(t, s, func(w http.ResponseWriter, r *http.Request) bool {
		p := strings.TrimPrefix(r.URL.Path, "/tuf/")
		m.mu.Lock()
		m.asked = append(m.asked, p)
		m.mu.Unlock()
		b, ok := files[p]
		if !ok {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
		return true
	})
	return m
}

// targetsAsked are the target files (bundles, signatures) the agent asked
// the mirror for.
func (m *repoMirror) targetsAsked() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, p := range m.asked {
		if strings.HasPrefix(p, "targets/") {
			out = append(out, p)
		}
	}
	return out
}

// onceVia runs one agent cycle for p against server (a mirror's URL), with
// the real broker, so that its reports reach the server.
func onceVia(t *testing.T, s *systest.Server, p *systest.Phone, server string) systest.Result {
	t.Helper()
	return systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, "--once", "--server", server, "--broker", s.Broker(),
		"--state-dir", p.StateDir, "--model", model, "--hardware", hw, "--log-level", "debug")
}

// phoneState is what a refused update must leave exactly as it was: every
// file of the slots (boot.json included) and the anti-rollback floor.
type phoneState struct {
	slots map[string]string
	floor string
}

func statePhone(t *testing.T, p *systest.Phone) phoneState {
	t.Helper()
	fl, err := os.ReadFile(filepath.Join(p.StateDir, "floor.json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return phoneState{slots: p.SlotTree(t), floor: string(fl)}
}

// expectRefused checks a refused attack: exit 20 for one of reasons (when
// more than one check may fire first), the slots and the floor as before,
// the phone still booting 1.1.0 and a security event naming the reason on
// the server.
func expectRefused(t *testing.T, s *systest.Server, p *systest.Phone, r systest.Result, before phoneState, reasons ...string) {
	t.Helper()
	reason := ""
	for _, rs := range reasons {
		if strings.Contains(r.Stderr, rs) {
			reason = rs
			break
		}
	}
	if r.Code != 20 || reason == "" {
		t.Errorf("agent exited %d; want 20 (refused) because %q", r.Code, strings.Join(reasons, `" or "`))
	}
	expectUntouched(t, p, before)
	if reason == "" {
		reason = reasons[0]
	}
	systest.Eventually(t, "the server has a security event for the refusal", func() (bool, string) {
		evs := systest.Events(t, s, p.ID)
		var got []string
		for _, e := range evs {
			if e.Type == wire.EventSecurity {
				got = append(got, e.Message)
			}
		}
		return systest.HasEvent(evs, wire.EventSecurity, "", reason), fmt.Sprintf("security events: %q", got)
	})
}

// expectUntouched checks that the slots and the floor did not change.
func expectUntouched(t *testing.T, p *systest.Phone, before phoneState) {
	t.Helper()
	after := statePhone(t, p)
	if !reflect.DeepEqual(before.slots, after.slots) {
		var changed []string
		for k := range mergeKeys(before.slots, after.slots) {
			if before.slots[k] != after.slots[k] {
				changed = append(changed, k)
			}
		}
		t.Errorf("slots changed although nothing may be installed: %v", changed)
	}
	if before.floor != after.floor {
		t.Errorf("anti-rollback floor changed: %s -> %s", before.floor, after.floor)
	}
	if st := p.BootState(t); st["active"] != "b" || st["committed"] != "b" || st["trial"] != false {
		t.Errorf("boot state %v, want slot b (1.1.0) committed", st)
	}
}

func mergeKeys(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// noSecurityEvent checks that the server recorded no security event for p.
func noSecurityEvent(t *testing.T, s *systest.Server, p *systest.Phone) {
	t.Helper()
	if evs := systest.Events(t, s, p.ID); systest.HasEvent(evs, wire.EventSecurity, "", "") {
		t.Errorf("security event for a target that is simply not for this phone: %v", evs)
	}
}

// bundleFor builds a bundle for model, version and hardware revisions and
// signs it with the dev publisher key; it returns the bundle's path (its
// signature is path+".sig").
func bundleFor(t *testing.T, s *systest.Server, mdl, version string, hardware ...string) string {
	t.Helper()
	dir := t.TempDir()
	payload := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(payload, []byte("rootfs of "+mdl+" "+version+" for "+strings.Join(hardware, ",")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, mdl+"-"+version+".tar")
	args := []string{"firmware", "build", "--model", mdl, "--version", version}
	for _, h := range hardware {
		args = append(args, "--hardware", h)
	}
	systest.MustRun(t, nil, bins.Server, append(args, "--payload", "rootfs.img="+payload, "-o", bundle)...)
	systest.MustRun(t, nil, bins.Server, "firmware", "sign", "--key", s.PublisherKey(), bundle)
	return bundle
}

// listTarget stores a bundle and its signature in the repository's targets
// folder and lists them in targets under path (firmware/MODEL/NAME.tar)
// with custom as the bundle's custom metadata: what a publisher whose
// pipeline mislabels a bundle would sign. For forge's mutate.
func listTarget(t *testing.T, targets map[string]*metadata.TargetFiles, dir, path, bundle string, custom wire.TargetCustom) {
	t.Helper()
	put := func(p string, data []byte, custom any) {
		sum := sha256.Sum256(data)
		tf := &metadata.TargetFiles{Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": sum[:]}}
		if custom != nil {
			b, err := json.Marshal(custom)
			if err != nil {
				t.Fatal(err)
			}
			raw := json.RawMessage(b)
			tf.Custom = &raw
		}
		targets[p] = tf
		d, base := filepath.Split(filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, fmt.Sprintf("%x.%s", sum, base)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(bundle + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	custom.Signature = path + ".sig"
	put(path+".sig", sig, nil)
	put(path, data, custom)
}

// publishedCustom is the custom metadata the server gave a published target.
func publishedCustom(t *testing.T, targets map[string]*metadata.TargetFiles, path string) wire.TargetCustom {
	t.Helper()
	tf, ok := targets[path]
	if !ok || tf.Custom == nil {
		t.Fatalf("no published target %s", path)
	}
	var c wire.TargetCustom
	if err := json.Unmarshal(*tf.Custom, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// trustedTUF are the versions of the metadata the phone trusts, as its TUF
// client persisted them in STATE/tuf.
func trustedTUF(t *testing.T, p *systest.Phone) wire.TUFVersions {
	t.Helper()
	version := func(role string) int64 {
		b, err := os.ReadFile(filepath.Join(p.StateDir, "tuf", role+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Signed struct {
				Version int64 `json:"version"`
			} `json:"signed"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s.json: %v", role, err)
		}
		return m.Signed.Version
	}
	return wire.TUFVersions{Root: version("root"), Timestamp: version("timestamp"), Snapshot: version("snapshot"), Targets: version("targets")}
}

type deviceReport struct {
	ID          string           `json:"id"`
	Version     string           `json:"version"`
	UpdateState string           `json:"update_state"`
	TUF         wire.TUFVersions `json:"tuf"`
}

// reported is what the server last heard from device id.
func reported(t *testing.T, s *systest.Server, id string) deviceReport {
	t.Helper()
	r := systest.MustRun(t, s.ClientEnv(), bins.Server, "devices", "list", "-o", "json")
	var rows []deviceReport
	if err := json.Unmarshal([]byte(r.Stdout), &rows); err != nil {
		t.Fatalf("devices list output: %v\n%s", err, r.Stdout)
	}
	for _, d := range rows {
		if d.ID == id {
			return d
		}
	}
	return deviceReport{}
}

// expectReportsTrusted checks threat A9's control: the state a phone
// reports after a cycle that ended in state carries the versions of the
// metadata it trusts, also when the cycle could not refresh them, so that
// the fleet sees a phone held back by a mirror (and one that trusts a
// version the server never signed).
func expectReportsTrusted(t *testing.T, s *systest.Server, p *systest.Phone, state string) {
	t.Helper()
	want := trustedTUF(t, p)
	var d deviceReport
	systest.Eventually(t, "the phone's report of the cycle reached the server", func() (bool, string) {
		d = reported(t, s, p.ID)
		return d.UpdateState == state, fmt.Sprintf("%+v", d)
	})
	// Every run starts with a report in state idle: give the one that ends
	// the cycle a moment, not the full 15 s, so that a phone reporting the
	// wrong versions fails fast.
	for deadline := time.Now().Add(2 * time.Second); d.TUF != want && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		d = reported(t, s, p.ID)
	}
	if d.TUF != want {
		t.Errorf("the phone reported TUF versions %+v in state %s; it trusts %+v", d.TUF, d.UpdateState, want)
	}
}
