package e2e

// The TUF attack suite (threats A9, A10, A12 and the specification's list of
// attacks on update clients), end to end: the real dev server, real agents,
// and the attack delivered by a hostile mirror in front of the server (the
// agent is pointed at it with --server) or by metadata forged into the
// server's repository directory followed by a restart.
//
// Attack                          Where it is tested
// ------------------------------  --------------------------------------------------------------
// rollback attack                 TestAttackHostileMirror: rollback/* (timestamp, snapshot,
//                                 delegated targets); below-floor images: agent/update TestPick,
//                                 TestRestoredStateDirCannotLowerTheFloor (floor_test.go)
// indefinite freeze               TestAttackHostileMirror: freeze/* (expired timestamp, snapshot,
//                                 delegated targets, all validly signed); replay of the trusted
//                                 metadata and a withheld timestamp: TestAttackFrozenMirror
// mix-and-match                   TestAttackHostileMirror: mix-and-match/*
// key compromise (online keys)    TestAttackHostileMirror: online-keys/* (threat A12)
// key compromise (offline keys)   TestKeyCeremonies (ceremony_test.go): root and targets key
//                                 rotation, revocation, a per-model publisher role
// wrong software (other model,    TestAttackWrongSoftware
// other hardware revision)
// arbitrary software              TestTamperedBundleIsRefused (e2e_test.go): bundle changed at
//                                 rest → TUF hash; TestAgentChecksPublisherSignature
//                                 (forge_test.go): bundle signed by an unpinned key ("wrong
//                                 key"), signature target missing ("missing signature")
// endless data                    TestHostileMirror/endless_data (mirror_test.go)
// slow retrieval                  TestSlowRetrieval (mirror_test.go)
// malicious mirrors               this file and mirror_test.go
// fast-forward                    not tested: see the online-keys cases below; recovery needs
//                                 the online keys rotated in root (TUF 5.3.11)
// extraneous dependencies         not applicable: a bundle is one target with no dependencies
//
// Every refused attack must end with exit 20, the slots (boot.json
// included) and the anti-rollback floor exactly as before, a security
// event for it on the server, and no target file fetched. After every
// attack, refused or not, the phone's report must carry the versions of
// the metadata it trusts (threat A9: the fleet sees a phone held back).

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// attackEnv is the repository at three moments: s0 right after the server
// created it, s1 after 1.1.0 was published (what every phone trusts: it
// installed 1.1.0 from it), s2 after 1.2.0 was published (the honest,
// current state the attacks hide).
type attackEnv struct {
	s          *systest.Server
	s0, s1, s2 repoFiles
}

// onlineChain is what an attacker holding the online keys serves: a
// snapshot naming roles, and a timestamp over it, both one version past
// the honest ones so that the phone takes them as new.
func (e *attackEnv) onlineChain(t *testing.T, roles map[string]int64, snapshotExpires time.Time) map[string][]byte {
	t.Helper()
	v := e.s2.snapshot(t).Signed.Version + 1
	snap := signSnapshot(t, serverKey(t, e.s, "snapshot"), v, snapshotExpires, roles)
	ts := signTimestamp(t, serverKey(t, e.s, "timestamp"), e.s2.timestamp(t).Signed.Version+1, time.Now().Add(24*time.Hour), snap)
	return map[string][]byte{
		"metadata/timestamp.json":                   ts,
		fmt.Sprintf("metadata/%d.snapshot.json", v): snap,
	}
}

func (e *attackEnv) roles(t *testing.T) map[string]int64 { return snapshotRoles(e.s2.snapshot(t)) }

type mirrorAttack struct {
	name string
	// files are what the mirror serves instead of the server, by path
	// below /tuf/.
	files func(t *testing.T, e *attackEnv) map[string][]byte
	// reasons: one of them is in the agent's error and in the security
	// event.
	reasons []string
	// recovers: nothing the attack sent was persisted as trusted, so the
	// phone takes 1.2.0 from the honest server right after. When the
	// attacker holds the online keys, the phone trusts the forged
	// timestamp (its signature is valid) and stays behind until the
	// server's versions pass the attacker's: a freeze, which is what a
	// compromised server can do (A12), visible in the phone's reported
	// TUF versions (A9).
	recovers bool
}

// TestAttackHostileMirror: a phone that trusts the repository as of 1.1.0
// is pointed at a mirror that hides 1.2.0 or offers a bundle nobody
// published, by rolling metadata back, freezing it, mixing files from
// different snapshots, or signing new metadata with the server's online
// keys. Every attempt is refused, reported, and changes nothing on the
// phone.
func TestAttackHostileMirror(t *testing.T) {
	buildBinaries(t)
	attacks := []mirrorAttack{
		// threat A9, TUF rollback: a timestamp older than the trusted one.
		{name: "rollback/timestamp", reasons: []string{"new timestamp version"}, recovers: true,
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				return map[string][]byte{"metadata/timestamp.json": e.s0.get(t, "timestamp.json")}
			}},
		// The timestamp key alone cannot roll the snapshot back: a new
		// timestamp pointing at the first snapshot (validly signed, older
		// than the trusted one).
		{name: "rollback/snapshot", reasons: []string{"new snapshot version"}, recovers: true,
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				ts := signTimestamp(t, serverKey(t, e.s, "timestamp"), e.s2.timestamp(t).Signed.Version+1,
					time.Now().Add(24*time.Hour), e.s0.get(t, e.s0.snapshotName(t)))
				return map[string][]byte{"metadata/timestamp.json": ts}
			}},
		// Both online keys cannot roll a delegated role back: a new
		// snapshot naming the first publisher.json, older than the one the
		// phone trusts (go-tuf GHSA-66x3-6cw3-v5gj).
		{name: "rollback/delegated-targets", reasons: []string{"publisher.json version"},
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				roles := e.roles(t)
				roles["publisher"] = e.s0.role(t, "publisher").Signed.Version
				return e.onlineChain(t, roles, time.Now().Add(24*time.Hour))
			}},
		// Indefinite freeze: metadata signed by the right key, expired.
		{name: "freeze/expired-timestamp", reasons: []string{"timestamp.json is expired"}, recovers: true,
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				ts := signTimestamp(t, serverKey(t, e.s, "timestamp"), e.s2.timestamp(t).Signed.Version+1,
					time.Now().Add(-time.Hour), e.s2.get(t, e.s2.snapshotName(t)))
				return map[string][]byte{"metadata/timestamp.json": ts}
			}},
		{name: "freeze/expired-snapshot", reasons: []string{"snapshot.json is expired"},
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				return e.onlineChain(t, e.roles(t), time.Now().Add(-time.Hour))
			}},
		// The publisher's own metadata, re-signed with its key but expired:
		// the phone must not keep using what it lists.
		{name: "freeze/expired-delegated-targets", reasons: []string{"new publisher is expired"},
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				pub := e.s2.role(t, "publisher")
				pub.Signed.Version++
				pub.Signed.Expires = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
				roles := e.roles(t)
				roles["publisher"] = pub.Signed.Version
				files := e.onlineChain(t, roles, time.Now().Add(24*time.Hour))
				files[fmt.Sprintf("metadata/%d.publisher.json", pub.Signed.Version)] = signedBytes(t, pub, serverKey(t, e.s, "publisher"))
				return files
			}},
		// Mix-and-match: the current timestamp and snapshot with the
		// publisher.json of the previous snapshot under the current name.
		{name: "mix-and-match/delegated-targets-from-older-snapshot", reasons: []string{"expected publisher version"}, recovers: true,
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				return map[string][]byte{"metadata/" + e.s2.roleName(t, "publisher"): e.s1.get(t, e.s1.roleName(t, "publisher"))}
			}},
		// The current timestamp with the previous snapshot under the name
		// the timestamp gives: its length or hash does not match the
		// timestamp's (ECDSA signatures vary in length, so either check
		// may be the one that fires).
		{name: "mix-and-match/snapshot-not-matching-timestamp", reasons: []string{"length/hash verification error", "metadata larger than allowed"}, recovers: true,
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				return map[string][]byte{"metadata/" + e.s2.snapshotName(t): e.s1.get(t, e.s1.snapshotName(t))}
			}},
		// Threat A12: the server's online keys sign a new snapshot and
		// timestamp over a publisher.json listing a bundle nobody
		// published; the attacker has no publisher key and signs the role
		// with what it has.
		{name: "online-keys/forged-delegated-targets", reasons: []string{"Verifying publisher failed, not enough signatures"},
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				pub := e.s2.role(t, "publisher")
				target, data := maliciousTarget(t, pub)
				pub.Signed.Version++
				roles := e.roles(t)
				roles["publisher"] = pub.Signed.Version
				files := e.onlineChain(t, roles, time.Now().Add(24*time.Hour))
				files[fmt.Sprintf("metadata/%d.publisher.json", pub.Signed.Version)] = signedBytes(t, pub, serverKey(t, e.s, "snapshot"))
				files[target] = data
				return files
			}},
		// The same attacker re-delegates the firmware paths to its own key
		// in a new top-level targets.json, which it can only sign with the
		// online keys.
		{name: "online-keys/forged-top-level-targets", reasons: []string{"Verifying targets failed, not enough signatures"},
			files: func(t *testing.T, e *attackEnv) map[string][]byte {
				attacker := strangerKey(t)
				pubKey, err := attacker.PublicKey()
				if err != nil {
					t.Fatal(err)
				}
				k, err := metadata.KeyFromPublicKey(pubKey)
				if err != nil {
					t.Fatal(err)
				}
				id, err := k.ID()
				if err != nil {
					t.Fatal(err)
				}
				top := e.s2.role(t, "targets")
				top.Signed.Version++
				top.Signed.Delegations.Keys = map[string]*metadata.Key{id: k}
				for i := range top.Signed.Delegations.Roles {
					top.Signed.Delegations.Roles[i].KeyIDs = []string{id}
				}
				pub := e.s2.role(t, "publisher")
				target, data := maliciousTarget(t, pub)
				pub.Signed.Version++
				roles := e.roles(t)
				roles["targets"], roles["publisher"] = top.Signed.Version, pub.Signed.Version
				files := e.onlineChain(t, roles, time.Now().Add(24*time.Hour))
				files[fmt.Sprintf("metadata/%d.targets.json", top.Signed.Version)] = signedBytes(t, top, serverKey(t, e.s, "snapshot"), serverKey(t, e.s, "timestamp"))
				files[fmt.Sprintf("metadata/%d.publisher.json", pub.Signed.Version)] = signedBytes(t, pub, attacker)
				files[target] = data
				return files
			}},
	}

	s := systest.StartServer(t, bins)
	e := &attackEnv{s: s, s0: captureRepo(t, s)}
	b, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, b); r.Code != 0 {
		t.Fatalf("publish 1.1.0 exited %d", r.Code)
	}
	e.s1 = captureRepo(t, s)
	// One phone per attack, each trusting the repository as of 1.1.0.
	phones := map[string]*systest.Phone{}
	for i, a := range attacks {
		p := systest.Provision(t, s, fmt.Sprintf("attack-%d", i+1), model)
		if r := p.Once(t, s, model, hw); r.Code != 0 {
			t.Fatalf("%s: installing 1.1.0 exited %d", p.ID, r.Code)
		}
		phones[a.name] = p
	}
	b2, _ := buildSigned(t, s, "1.2.0")
	if r := publish(t, s, b2); r.Code != 0 {
		t.Fatalf("publish 1.2.0 exited %d", r.Code)
	}
	e.s2 = captureRepo(t, s)

	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			p := phones[a.name]
			m := startRepoMirror(t, s, a.files(t, e))
			before := statePhone(t, p)
			r := onceVia(t, s, p, m.URL)
			expectRefused(t, s, p, r, before, a.reasons...)
			if got := m.targetsAsked(); len(got) > 0 {
				t.Errorf("the agent fetched target files on refused metadata: %v", got)
			}
			systest.Eventually(t, "the operator sees the phone refusing, still on 1.1.0", func() (bool, string) {
				d := devices(t, s)[p.ID]
				return d.Version == "1.1.0" && d.UpdateState == wire.UpdateRefused, fmt.Sprintf("%+v", d)
			})
			t.Run("reports its trusted TUF versions", func(t *testing.T) {
				expectReportsTrusted(t, s, p, wire.UpdateRefused)
			})
			if !a.recovers {
				return
			}
			// Nothing of the attack was kept as trusted: straight from the
			// server, the phone takes 1.2.0.
			if r := p.Once(t, s, model, hw); r.Code != 0 {
				t.Fatalf("update from the honest server after the attack exited %d, want 0", r.Code)
			}
			if v := p.BootState(t)["slots"].(map[string]any)["a"].(map[string]any)["version"]; v != "1.2.0" {
				t.Fatalf("after the attack the phone installed %v from the honest server, want 1.2.0", v)
			}
		})
	}
}

// TestAttackFrozenMirror: freezes the phone cannot refuse on the spot.
//
// A mirror that keeps replaying the very metadata the phone already trusts
// (1.1.0's) hides 1.2.0 with nothing for the phone to detect until that
// timestamp expires (24 h): TUF treats an equal version as "nothing new"
// (spec 5.4.3.2 rejects only older ones). The phone says so (exit 10) and
// keeps reporting its trusted timestamp version, so that the fleet sees it
// lag behind the server's (threat A9). Once the timestamp has expired the
// same replay is refused (freeze/expired-timestamp in
// TestAttackHostileMirror).
//
// A mirror that withholds timestamp.json looks like a network failure:
// exit 1 with a failed event, nothing installed, and again the phone's
// reported versions show the lag.
func TestAttackFrozenMirror(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	b, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, b); r.Code != 0 {
		t.Fatalf("publish 1.1.0 exited %d", r.Code)
	}
	frozen := captureRepo(t, s)
	trustedTS := frozen.timestamp(t).Signed.Version
	replay := map[string][]byte{}
	for name, data := range frozen {
		replay["metadata/"+name] = data
	}
	tests := []struct {
		name    string
		files   map[string][]byte // nil: timestamp.json answers 503
		code    int
		message string // in the agent's log and the event of type event
		event   string
		state   string // the update state the phone reports after
	}{
		{"replay of the trusted metadata", replay, 10, "no newer firmware", wire.EventUpToDate, wire.UpdateIdle},
		{"timestamp withheld", nil, 1, "503", wire.EventFailed, wire.UpdateFailed},
	}
	phones := map[string]*systest.Phone{}
	for i, tc := range tests {
		p := systest.Provision(t, s, fmt.Sprintf("frozen-%d", i+1), model)
		if r := p.Once(t, s, model, hw); r.Code != 0 {
			t.Fatalf("installing 1.1.0 exited %d", r.Code)
		}
		phones[tc.name] = p
	}
	b2, _ := buildSigned(t, s, "1.2.0")
	if r := publish(t, s, b2); r.Code != 0 {
		t.Fatalf("publish 1.2.0 exited %d", r.Code)
	}
	serverTS := tufStatus(t, s)["timestamp"].Version
	if serverTS <= trustedTS {
		t.Fatalf("server timestamp v%d is not ahead of the frozen v%d", serverTS, trustedTS)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := phones[tc.name]
			url := ""
			if tc.files != nil {
				url = startRepoMirror(t, s, tc.files).URL
			} else {
				url = startMirror(t, s, func(w http.ResponseWriter, r *http.Request) bool {
					if r.URL.Path != "/tuf/metadata/timestamp.json" {
						return false
					}
					http.Error(w, "maintenance", http.StatusServiceUnavailable)
					return true
				})
			}
			before := statePhone(t, p)
			r := onceVia(t, s, p, url)
			if r.Code != tc.code || !strings.Contains(r.Stderr, tc.message) {
				t.Errorf("agent behind the mirror exited %d, want %d (%s)", r.Code, tc.code, tc.message)
			}
			expectUntouched(t, p, before)
			systest.Eventually(t, "the server has the phone's report", func() (bool, string) {
				evs := systest.Events(t, s, p.ID)
				return systest.HasEvent(evs, tc.event, "", tc.message), fmt.Sprint(evs)
			})
			t.Run("reports its trusted TUF versions", func(t *testing.T) {
				if got := trustedTUF(t, p).Timestamp; got != trustedTS {
					t.Fatalf("the phone trusts timestamp v%d, want the frozen v%d", got, trustedTS)
				}
				expectReportsTrusted(t, s, p, tc.state)
			})
			if evs := systest.Events(t, s, p.ID); systest.HasEvent(evs, wire.EventSecurity, "", "") {
				t.Errorf("security event although nothing failed verification: %v", evs)
			}
		})
	}
}

// TestAttackWrongSoftware: properly signed bundles for another model and
// for another hardware revision only are not for this phone: it installs
// neither, and says "no newer firmware" (exit 10) without a security
// event, because nothing is wrong with them; the publisher addressed them
// to other phones, and a mixed fleet's repository always holds such
// targets, so raising an alarm on every check would bury real ones. A
// target that the signed metadata addresses to this phone (firmware/dt100/,
// model dt100, rev-b) but whose bundle manifest says another model or
// hardware revision contradicts itself: that is refused (exit 20) with a
// security event, after the manifest is read and before the slot is
// finished. Such metadata needs the publisher's key (a broken or
// compromised pipeline), so it is forged into the repository as forge()
// does.
func TestAttackWrongSoftware(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	b, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, b); r.Code != 0 {
		t.Fatalf("publish 1.1.0 exited %d", r.Code)
	}
	p := systest.Provision(t, s, "wrong-sw-1", model)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("installing 1.1.0 exited %d", r.Code)
	}

	for _, tc := range []struct {
		name     string
		bundle   func(t *testing.T) string
		version  string
		hardware string
	}{
		{name: "another model", version: "2.0.0", bundle: func(t *testing.T) string { return bundleFor(t, s, "dt200", "2.0.0", hw) }},
		{name: "another hardware revision", version: "1.3.0", bundle: func(t *testing.T) string { return bundleFor(t, s, model, "1.3.0", "rev-z") }},
	} {
		t.Run("not for me/"+tc.name, func(t *testing.T) {
			if r := publish(t, s, tc.bundle(t)); r.Code != 0 {
				t.Fatalf("publish exited %d", r.Code)
			}
			before := statePhone(t, p)
			r := p.Once(t, s, model, hw)
			if r.Code != 10 || !strings.Contains(r.Stderr, "no newer firmware") {
				t.Errorf("agent exited %d, want 10 (no update for this phone)", r.Code)
			}
			expectUntouched(t, p, before)
			systest.Eventually(t, "the phone's up-to-date report reached the server", func() (bool, string) {
				evs := systest.Events(t, s, p.ID)
				return systest.HasEvent(evs, wire.EventUpToDate, "1.1.0", "no newer firmware"), fmt.Sprint(evs)
			})
			noSecurityEvent(t, s, p)
		})
	}

	// Mislabelled targets: listed (and signed) for dt100 rev-b, built for
	// something else. Each replaces the previous one, so that the phone's
	// pick is the one under test.
	const bundle110 = "firmware/" + model + "/" + model + "-1.1.0.tar"
	prev := ""
	for _, tc := range []struct {
		name, version, reason string
		bundle                func(t *testing.T) string
	}{
		{name: "manifest names another model", version: "1.4.0", reason: "bundle manifest (dt200 1.4.0",
			bundle: func(t *testing.T) string { return bundleFor(t, s, "dt200", "1.4.0", hw) }},
		{name: "manifest names another hardware revision", version: "1.5.0", reason: "bundle manifest (dt100 1.5.0 [rev-z]",
			bundle: func(t *testing.T) string { return bundleFor(t, s, model, "1.5.0", "rev-z") }},
	} {
		bundle := tc.bundle(t)
		path := "firmware/" + model + "/" + model + "-" + tc.version + ".tar"
		forge(t, s, func(targets map[string]*metadata.TargetFiles, dir string) {
			if prev != "" {
				delete(targets, prev)
				delete(targets, prev+".sig")
			}
			c := publishedCustom(t, targets, bundle110)
			c.Version, c.Created = tc.version, time.Now().UTC().Truncate(time.Second)
			listTarget(t, targets, dir, path, bundle, c)
		})
		prev = path
		s = s.Restart(t)
		t.Run("refused/"+tc.name, func(t *testing.T) {
			before := statePhone(t, p)
			r := p.Once(t, s, model, hw)
			expectRefused(t, s, p, r, before, tc.reason)
		})
	}
}
