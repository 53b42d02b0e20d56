package tufrepo

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// newConfigFixture is newFixture with the config role as `tuf init` makes
// it: the publisher role for firmware and the config role for profiles,
// each with its own key.
func newConfigFixture(t *testing.T) (*fixture, signature.Signer) {
	t.Helper()
	f := &fixture{t: t, dir: filepath.Join(t.TempDir(), "repo"), keyDir: t.TempDir(), clock: time.Now().UTC()}
	f.pub = signer(t, f.keyDir, "publisher")
	cfg := signer(t, f.keyDir, "config")
	pubKey, _ := f.pub.PublicKey()
	cfgKey, _ := cfg.PublicKey()
	err := Init(context.Background(), InitOptions{
		Dir: f.dir, RootSigners: []signature.Signer{signer(t, f.keyDir, "root")}, RootThreshold: 1,
		TargetsSigners: []signature.Signer{signer(t, f.keyDir, "targets")}, TargetsThreshold: 1,
		Snapshot: signer(t, f.keyDir, "snapshot"), Timestamp: signer(t, f.keyDir, "timestamp"),
		Delegations: []Delegation{
			{Role: "publisher", Paths: []string{"firmware/*/*"}, Keys: []crypto.PublicKey{pubKey}, Threshold: 1, Signers: []signature.Signer{f.pub}},
			{Role: ConfigRole, Paths: ConfigPaths, Keys: []crypto.PublicKey{cfgKey}, Threshold: 1, Signers: []signature.Signer{cfg}},
		},
		Now: f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.reopen()
	f.srv = httptest.NewServer(f.repo.Handler())
	t.Cleanup(f.srv.Close)
	return f, cfg
}

// testCAPEM is a CA certificate, as a profile's ca_pem holds.
func testCAPEM(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "SIP test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func testProfile(t testing.TB, user string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"proxy": "sip.example.net:5061", "domain": "example.net", "user": user, "ca_pem": testCAPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func configPath(t testing.TB, tenant, scope, name string) string {
	t.Helper()
	p, err := wire.ConfigPath(tenant, scope, name, wire.ConfigSIPProfile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stage makes the config role's next metadata with target set to file,
// signed by key.
func (f *fixture) stageConfig(key signature.Signer, target string, file []byte) []byte {
	f.t.Helper()
	role, raw, err := f.repo.ConfigDelegation(target)
	if err != nil {
		f.t.Fatal(err)
	}
	if role != ConfigRole {
		f.t.Fatalf("ConfigDelegation(%s) = role %s", target, role)
	}
	md, err := StageConfig(raw, role, target, file, key, time.Hour, f.now())
	if err != nil {
		f.t.Fatal(err)
	}
	return md
}

// editConfig makes the config role's next metadata by edit, signed by key:
// for requests StageConfig would not make.
func (f *fixture) editConfig(key signature.Signer, edit func(t map[string]*metadata.TargetFiles)) []byte {
	f.t.Helper()
	_, raw, err := f.repo.Delegation(configPath(f.t, "acme", wire.ConfigDevices, "x"))
	if err != nil {
		f.t.Fatal(err)
	}
	var zero metadata.Metadata[metadata.TargetsType]
	md, err := zero.FromBytes(raw)
	if err != nil {
		f.t.Fatal(err)
	}
	edit(md.Signed.Targets)
	md.Signed.Version++
	md.Signed.Expires = f.now().Add(time.Hour)
	md.ClearSignatures()
	if _, err := md.Sign(key); err != nil {
		f.t.Fatal(err)
	}
	b, err := md.ToBytes(true)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func entry(path string, file []byte) *metadata.TargetFiles {
	s := sha256.Sum256(file)
	return &metadata.TargetFiles{Length: int64(len(file)), Hashes: metadata.Hashes{"sha256": s[:]}, Path: path}
}

func TestPublishConfig(t *testing.T) {
	f, cfg := newConfigFixture(t)
	ctx := context.Background()
	dev := configPath(t, "acme", wire.ConfigDevices, "p1")
	grp := configPath(t, "acme", wire.ConfigGroups, "sales")
	devFile, grpFile := testProfile(t, "1001"), testProfile(t, "sales")

	res, err := f.repo.PublishConfig(ctx, ConfigPublishRequest{Role: ConfigRole, Metadata: f.stageConfig(cfg, dev, devFile), File: devFile, Tenants: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(devFile)
	if res.Target != dev || res.Role != ConfigRole || res.Length != int64(len(devFile)) || res.SHA256 != hex.EncodeToString(sum[:]) || res.Version != 2 || res.Snapshot != 2 {
		t.Fatalf("result %+v", res)
	}
	if _, err := f.repo.PublishConfig(ctx, ConfigPublishRequest{Role: ConfigRole, Metadata: f.stageConfig(cfg, grp, grpFile), File: grpFile}); err != nil {
		t.Fatal(err)
	}
	// Replacing the device's profile leaves the group's.
	devFile2 := testProfile(t, "1002")
	res, err = f.repo.PublishConfig(ctx, ConfigPublishRequest{Role: ConfigRole, Metadata: f.stageConfig(cfg, dev, devFile2), File: devFile2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 4 {
		t.Errorf("version %d after three publishes, want 4", res.Version)
	}

	// A TUF client from 1.root.json gets both files, the current ones.
	u := f.client(f.now())
	for p, want := range map[string][]byte{dev: devFile2, grp: grpFile} {
		info, err := u.GetTargetInfo(p)
		if err != nil {
			t.Fatalf("GetTargetInfo(%s): %v", p, err)
		}
		_, got, err := u.DownloadTarget(info, filepath.Join(t.TempDir(), "x"), "")
		if err != nil {
			t.Fatalf("DownloadTarget(%s): %v", p, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the client got another file", p)
		}
	}
	// Config targets are not firmware.
	if _, ok := f.repo.FirmwareBySHA256("acme", hex.EncodeToString(sum[:])); ok {
		t.Error("a config file found as firmware")
	}
	// A restart reads the same state.
	f.reopen()
	if _, raw, err := f.repo.ConfigDelegation(dev); err != nil || !bytes.Contains(raw, []byte(grp)) {
		t.Fatalf("after reopening: %v", err)
	}
}

func TestPublishConfigRejectsAndChangesNothing(t *testing.T) {
	f, cfg := newConfigFixture(t)
	ctx := context.Background()
	dev := configPath(t, "acme", wire.ConfigDevices, "p1")
	other := configPath(t, "acme", wire.ConfigDevices, "p2")
	good := testProfile(t, "1001")
	if _, err := f.repo.PublishConfig(ctx, ConfigPublishRequest{Role: ConfigRole, Metadata: f.stageConfig(cfg, other, good), File: good}); err != nil {
		t.Fatal(err)
	}
	stranger := signer(t, t.TempDir(), "stranger")
	bad := []byte(`{"proxy":"sip.example.net:5061","domain":"example.net","user":"1001","transport":"udp"}`)
	newer := testProfile(t, "2002")

	tests := []struct {
		name  string
		req   func() ConfigPublishRequest
		check string
		text  string // in the refusal
	}{
		{"path outside config/", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(m map[string]*metadata.TargetFiles) {
				m["firmware/m1/m1-1.0.0.tar"] = entry("firmware/m1/m1-1.0.0.tar", good)
			})}
		}, "path", "not a config target path"},
		{"config path of an unknown scope", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(m map[string]*metadata.TargetFiles) {
				m["config/acme/users/p1/sip.json"] = entry("config/acme/users/p1/sip.json", good)
			})}
		}, "path", "not a config target path"},
		{"malformed profile", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: bad, Metadata: f.stageConfig(cfg, dev, bad)}
		}, "profile", "allow_insecure_transport"},
		{"not JSON", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: []byte("proxy=x"), Metadata: f.stageConfig(cfg, dev, []byte("proxy=x"))}
		}, "profile", "decoding"},
		{"also changes another target", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(m map[string]*metadata.TargetFiles) {
				m[dev] = entry(dev, good)
				m[other] = entry(other, newer)
			})}
		}, "targets", "exactly one target"},
		{"removes another target", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(m map[string]*metadata.TargetFiles) {
				delete(m, other)
				m[dev] = entry(dev, good)
			})}
		}, "targets", "removed"},
		{"changes nothing", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(map[string]*metadata.TargetFiles) {})}
		}, "targets", "found 0"},
		{"signed by a wrong key", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(stranger, func(m map[string]*metadata.TargetFiles) { m[dev] = entry(dev, good) })}
		}, "metadata-signature", ""},
		{"signed by the firmware publisher's key", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(f.pub, func(m map[string]*metadata.TargetFiles) { m[dev] = entry(dev, good) })}
		}, "metadata-signature", ""},
		{"file other than signed", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: newer[:len(good)], Metadata: f.stageConfig(cfg, dev, good)}
		}, "file", "sha256"},
		{"file of another length", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: append(bytes.Clone(good), ' '), Metadata: f.stageConfig(cfg, dev, good)}
		}, "file", "metadata says"},
		{"another tenant's config", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.stageConfig(cfg, dev, good), Tenants: []string{"beta"}}
		}, "scope", "not of acme"},
		{"custom metadata", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(m map[string]*metadata.TargetFiles) {
				e := entry(dev, good)
				c := json.RawMessage(`{"x":1}`)
				e.Custom = &c
				m[dev] = e
			})}
		}, "targets", "custom"},
		{"a second hash", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: good, Metadata: f.editConfig(cfg, func(m map[string]*metadata.TargetFiles) {
				e := entry(dev, good)
				e.Hashes["sha512"] = make([]byte, 64)
				m[dev] = e
			})}
		}, "targets", "sha256 hash alone"},
		{"the firmware role", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: "publisher", File: good, Metadata: f.stageConfig(cfg, dev, good)}
		}, "metadata-signature", ""},
		{"no such role", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: "nosuch", File: good, Metadata: f.stageConfig(cfg, dev, good)}
		}, "role", "tuf stage targets --delegate config"},
		{"empty file", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: nil, Metadata: f.stageConfig(cfg, dev, good)}
		}, "file", ""},
		{"oversized file", func() ConfigPublishRequest {
			return ConfigPublishRequest{Role: ConfigRole, File: make([]byte, MaxConfigBytes+1), Metadata: f.stageConfig(cfg, dev, good)}
		}, "file", ""},
	}
	_, _, snap0, ts0 := f.repo.Versions()
	_, raw0, _ := f.repo.ConfigDelegation(dev)
	files0 := tree(t, filepath.Join(f.dir, targetsDir))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.repo.PublishConfig(ctx, tc.req())
			var rej *RejectedError
			if !errors.As(err, &rej) || rej.Check != tc.check || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("PublishConfig = %v, want a refusal by check %s saying %q", err, tc.check, tc.text)
			}
			_, _, snap, ts := f.repo.Versions()
			_, raw, _ := f.repo.ConfigDelegation(dev)
			if snap != snap0 || ts != ts0 || !bytes.Equal(raw, raw0) || tree(t, filepath.Join(f.dir, targetsDir)) != files0 {
				t.Fatal("a refused publish changed the repository")
			}
		})
	}
	// The same publish, made right, is accepted.
	if _, err := f.repo.PublishConfig(ctx, ConfigPublishRequest{Role: ConfigRole, Metadata: f.stageConfig(cfg, dev, good), File: good}); err != nil {
		t.Fatal(err)
	}
}

// TestPublishConfigWithoutConfigRole: a repository made before the config
// role refuses, saying how to add one.
func TestPublishConfigWithoutConfigRole(t *testing.T) {
	f := newFixture(t, targetStore{"file", nil})
	dev := configPath(t, "acme", wire.ConfigDevices, "p1")
	if _, _, err := f.repo.ConfigDelegation(dev); !errors.Is(err, ErrNoConfigRole) || !strings.Contains(err.Error(), "tuf stage config --new") {
		t.Fatalf("ConfigDelegation = %v, want ErrNoConfigRole with the hint", err)
	}
	_, err := f.repo.PublishConfig(context.Background(), ConfigPublishRequest{Role: ConfigRole, Metadata: []byte(`{}`), File: testProfile(t, "1")})
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.Check != "role" || !strings.Contains(err.Error(), "tuf stage targets --delegate config") {
		t.Fatalf("PublishConfig = %v, want a role refusal with the hint", err)
	}
}

func TestStageConfigRefusesForeignMetadata(t *testing.T) {
	f, cfg := newConfigFixture(t)
	dev := configPath(t, "acme", wire.ConfigDevices, "p1")
	_, raw, err := f.repo.ConfigDelegation(dev)
	if err != nil {
		t.Fatal(err)
	}
	stranger := signer(t, t.TempDir(), "stranger")
	if _, err := StageConfig(raw, ConfigRole, dev, []byte("{}"), stranger, time.Hour, time.Now()); !errors.Is(err, ErrForeignConfigMetadata) {
		t.Fatalf("StageConfig with another key = %v, want ErrForeignConfigMetadata", err)
	}
	if _, err := StageConfig(raw, ConfigRole, "firmware/m1/x.tar", []byte("{}"), cfg, time.Hour, time.Now()); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("StageConfig of a firmware path = %v, want wire.ErrInvalid", err)
	}
	if _, err := StageConfig(raw, ConfigRole, dev, nil, cfg, time.Hour, time.Now()); err == nil {
		t.Fatal("StageConfig of an empty file accepted")
	}
}
