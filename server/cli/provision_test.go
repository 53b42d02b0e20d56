package cli_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/keys"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/dialtone-dev/dialtone/server/rollout"
	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

const provisionToken = "provision-admin-token-0123456789"

// provisionServer serves the API over a repository `dialtone server --dev`
// bootstraps (with its config role and key) and a real SQLite store.
func provisionServer(t *testing.T, configure ...func(*api.Options)) (url, dataDir string, st *store.SQLite) {
	t.Helper()
	ctx := context.Background()
	dataDir = t.TempDir()
	if _, err := daemon.BootstrapDev(ctx, dataDir); err != nil {
		t.Fatal(err)
	}
	kdir := filepath.Join(dataDir, daemon.KeysDir)
	snap, err := keys.LoadSigner(ctx, filepath.Join(kdir, "snapshot.key"))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := keys.LoadSigner(ctx, filepath.Join(kdir, "timestamp.key"))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := tufrepo.Open(ctx, filepath.Join(dataDir, daemon.RepoDir), snap, ts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = repo.Close() })
	if st, err = store.OpenSQLite(ctx, filepath.Join(dataDir, daemon.DBFile)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	box, err := sipsecret.OpenKeyFile(filepath.Join(kdir, sipsecret.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	opts := api.Options{Repo: repo, Devices: st, Tokens: st, Audit: st, AdminToken: provisionToken,
		Config: repo, SIPCredentials: st, SIPBox: box}
	for _, c := range configure {
		c(&opts)
	}
	a, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv.URL, dataDir, st
}

func caPEM(t *testing.T) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxy CA"}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// mqttPublisher sends the rollout service's commands through a real
// broker.
type mqttPublisher struct{ c mqtt.Client }

func (p mqttPublisher) Publish(topic string, payload []byte, retain bool, qos byte) error {
	tok := p.c.Publish(topic, qos, retain, payload)
	tok.Wait()
	return tok.Error()
}

func TestConfigPublish(t *testing.T) {
	// A device profile's publish tells the device to look at it now (a
	// config command on its cmd topic, through Mosquitto).
	m := testutil.NewMosquitto(t, "")
	cmds := testutil.Subscribe(t, testutil.ConnectMQTT(t, m.Addr, "cmd-watcher", nil), wire.Topic("acme", "p1", wire.KindCmd))
	url, dataDir, st := provisionServer(t, func(o *api.Options) {
		o.Rollouts = rollout.New(o.Devices.(*store.SQLite), mqttPublisher{testutil.ConnectMQTT(t, m.Addr, "server", nil)}, nil)
	})
	now := time.Now().UTC()
	if err := st.UpsertState(t.Context(), "acme", wire.State{Schema: wire.SchemaVersion, Tenant: "acme", Device: "p1", Model: "dt100", Hardware: "r1",
		Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	profile := filepath.Join(dir, "sip.json")
	b, _ := json.Marshal(map[string]any{"proxy": "pbx.example.net:5061", "domain": "example.net", "user": "1001", "ca_pem": caPEM(t)})
	if err := os.WriteFile(profile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"proxy":"pbx.example.net:5061","domain":"example.net","user":"1001"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dataDir, daemon.KeysDir, "config.key")
	common := []string{"--server", url, "--token", provisionToken, "--tenant", "acme", "--key", key}

	code, out, errs := run(t, append([]string{"config", "publish", "--device", "p1", "-o", "json", profile}, common...)...)
	if code != cli.ExitOK {
		t.Fatalf("publish: exit %d: %s", code, errs)
	}
	var res wire.ConfigResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Target != "config/acme/devices/p1/sip.json" || res.Role != tufrepo.ConfigRole || res.Length != int64(len(b)) {
		t.Fatalf("publish answered %s (%v)", out, err)
	}
	cmds.WaitFor(t, 10*time.Second, "a config command to p1", func(msgs []testutil.Message) bool {
		for _, m := range msgs {
			if c, err := wire.DecodeCommand(m.Payload); err == nil && c.Name == wire.CmdConfig {
				return true
			}
		}
		return false
	})
	if code, out, errs := run(t, append([]string{"config", "publish", "--group", "sales", profile}, common...)...); code != cli.ExitOK || !strings.Contains(out, "config/acme/groups/sales/sip.json") {
		t.Fatalf("group publish: exit %d: %s %s", code, out, errs)
	}
	// A profile without its CA is refused here, before anything is sent.
	if code, _, errs := run(t, append([]string{"config", "publish", "--device", "p1", bad}, common...)...); code != cli.ExitRejected || !strings.Contains(errs, "ca_pem") {
		t.Fatalf("bad profile: exit %d: %s", code, errs)
	}
	// The firmware publisher's key is not the config role's.
	wrong := append([]string{"config", "publish", "--device", "p1", profile}, common...)
	wrong[len(wrong)-1] = filepath.Join(dataDir, daemon.KeysDir, "publisher.key")
	if code, _, errs := run(t, wrong...); code == cli.ExitOK || !strings.Contains(errs, "not signed by the given key") {
		t.Fatalf("wrong key: exit %d: %s", code, errs)
	}
	// Usage: one of --device and --group.
	if code, _, _ := run(t, append([]string{"config", "publish", profile}, common...)...); code != cli.ExitUsage {
		t.Fatalf("no --device or --group: exit %d", code)
	}
	// An operator of another tenant may not publish acme's config.
	tok := operatorToken(t, url, "beta")
	other := []string{"config", "publish", "--server", url, "--token", tok, "--tenant", "acme", "--key", key, "--device", "p1", profile}
	if code, _, errs := run(t, other...); code == cli.ExitOK || !strings.Contains(errs, "403") {
		t.Fatalf("operator of beta: exit %d: %s", code, errs)
	}
}

// operatorToken makes an operator API token of tenant through the API.
func operatorToken(t *testing.T, url, tenant string) string {
	t.Helper()
	code, out, errs := run(t, "tokens", "create", "--server", url, "--token", provisionToken, "--tenant", tenant, "--role", "operator", "-o", "json")
	if code != cli.ExitOK {
		t.Fatalf("tokens create: %d %s", code, errs)
	}
	var info api.TokenInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Token == "" {
		t.Fatalf("tokens create answered %s", out)
	}
	return info.Token
}

func TestDevicesSIPPassword(t *testing.T) {
	url, _, st := provisionServer(t)
	ctx := context.Background()
	now := time.Now().UTC()
	if err := st.UpsertState(ctx, "acme", wire.State{Schema: wire.SchemaVersion, Tenant: "acme", Device: "p1", Model: "dt100", Hardware: "r1",
		Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("hunter2-but-longer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"--server", url, "--token", provisionToken, "--tenant", "acme"}
	code, out, errs := run(t, append([]string{"devices", "sip-password", "p1", "--password-file", pwFile, "--auth-user", "1001"}, common...)...)
	if code != cli.ExitOK || !strings.Contains(out, "set") || strings.Contains(out+errs, "hunter2") {
		t.Fatalf("set: exit %d: %s %s", code, out, errs)
	}
	ct, _, _, err := st.SIPCredential(ctx, "p1")
	if err != nil || bytes.Contains(ct, []byte("hunter2")) {
		t.Fatalf("stored: %v", err)
	}
	// From stdin.
	root := cli.New(&bytes.Buffer{}, &bytes.Buffer{})
	root.SetIn(strings.NewReader("from-stdin-pw\r\n"))
	root.SetArgs(append([]string{"devices", "sip-password", "p1", "--password-stdin"}, common...))
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("from stdin: %v", err)
	}
	ct2, _, _, _ := st.SIPCredential(ctx, "p1")
	if bytes.Equal(ct, ct2) {
		t.Fatal("the stdin password did not replace the file's")
	}
	// Usage errors: no source, two sources, a control character, the
	// wrong tenant.
	for _, args := range [][]string{
		{"devices", "sip-password", "p1"},
		{"devices", "sip-password", "p1", "--password-file", pwFile, "--password-stdin"},
	} {
		if code, _, _ := run(t, append(args, common...)...); code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want usage", args, code)
		}
	}
	// There is no flag that takes the password itself.
	if code, _, errs := run(t, append([]string{"devices", "sip-password", "p1", "--password", "x"}, common...)...); code == cli.ExitOK || !strings.Contains(errs, "unknown flag") {
		t.Errorf("--password: exit %d: %s", code, errs)
	}
	ctl := filepath.Join(t.TempDir(), "ctl")
	_ = os.WriteFile(ctl, []byte("a\tb"), 0o600)
	if code, _, errs := run(t, append([]string{"devices", "sip-password", "p1", "--password-file", ctl}, common...)...); code != cli.ExitUsage || !strings.Contains(errs, "control") {
		t.Errorf("control character: exit %d: %s", code, errs)
	}
	wrongTenant := []string{"devices", "sip-password", "p1", "--password-file", pwFile, "--server", url, "--token", provisionToken, "--tenant", "beta"}
	if code, _, errs := run(t, wrongTenant...); code == cli.ExitOK || !strings.Contains(errs, "409") {
		t.Errorf("wrong tenant: exit %d: %s", code, errs)
	}
	// Without --tenant the device's own is used.
	if code, _, errs := run(t, "devices", "sip-password", "p1", "--password-file", pwFile, "--server", url, "--token", provisionToken); code != cli.ExitOK {
		t.Errorf("without --tenant: exit %d: %s", code, errs)
	}
	// Delete, twice.
	if code, out, errs := run(t, append([]string{"devices", "sip-password", "p1", "--delete"}, common...)...); code != cli.ExitOK || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: exit %d: %s %s", code, out, errs)
	}
	if code, _, errs := run(t, append([]string{"devices", "sip-password", "p1", "--delete"}, common...)...); code == cli.ExitOK || !strings.Contains(errs, "404") {
		t.Fatalf("delete twice: exit %d: %s", code, errs)
	}
}
