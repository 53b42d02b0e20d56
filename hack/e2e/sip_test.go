package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/agent/sipcred"
	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/sipprofile"
	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/testutil/sippeer"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// sipLab is an attestation lab with a SIP registrar: Kamailio over TLS
// with digest auth for the phone and a second user, bob, who calls it.
type sipLab struct {
	*attestLab
	k     *sippeer.Kamailio
	caPEM string
	// bobCert, bobKey: bob's client certificate for Kamailio, which
	// requires one (the phone presents its TPM-backed device certificate).
	bobCert, bobKey string
	m               *testutil.Mosquitto
	watch           *testutil.Collector // everything the phone publishes
}

func newSIPLab(t *testing.T, users map[string]string) *sipLab {
	l := &sipLab{attestLab: newAttestLab(t)}
	pki := testutil.NewPKI(t, t.TempDir(), "sip-ca")
	cert, key, _ := pki.Issue(t, "127.0.0.1", true)
	l.bobCert, l.bobKey, _ = pki.Issue(t, "bob", false)
	b, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	l.caPEM = string(b)
	// Kamailio requires a client certificate from the server's device CA
	// (phones) or the lab's CA (bob).
	devCA, err := os.ReadFile(filepath.Join(l.s.DataDir, "devca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := filepath.Join(t.TempDir(), "client-cas.pem")
	if err := os.WriteFile(clientCAs, append(devCA, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	l.k = sippeer.StartKamailio(t, sippeer.KamailioOptions{Users: users, CertFile: cert, KeyFile: key, RequireTLS: true,
		CAFile: clientCAs, VerifyClients: true})
	// The phone reports to its own Mosquitto, where the test may listen
	// to its topics (the embedded broker lets devices see only their own
	// commands).
	l.m = testutil.NewMosquitto(t, "")
	l.watch = testutil.Subscribe(t, testutil.ConnectMQTT(t, l.m.Addr, "sip-watcher", nil), wire.Topic("default", l.phone, "#"))
	return l
}

// profileFile writes user's SIP profile for Kamailio; expires is its
// registration lifetime (0: the default).
func (l *sipLab) profileFile(user string, expires ...int) string {
	l.t.Helper()
	p := sipprofile.Profile{Proxy: l.k.TLSAddr.String(), Domain: l.k.Domain, User: user, CAPEM: l.caPEM}
	if len(expires) > 0 {
		p.RegisterExpires = expires[0]
	}
	b, err := json.Marshal(p)
	if err != nil {
		l.t.Fatal(err)
	}
	f := filepath.Join(l.t.TempDir(), user+"-sip.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		l.t.Fatal(err)
	}
	return f
}

// publishProfile publishes a SIP profile for the device as a config
// target, signed with the dev server's config key.
func (l *sipLab) publishProfile(device, file string) {
	l.t.Helper()
	systest.MustRun(l.t, l.env(), bins.Server, "config", "publish", "--key", filepath.Join(l.s.DataDir, "keys", "config.key"),
		"--tenant", "default", "--device", device, file)
}

// setPassword sets the device's SIP password on the server.
func (l *sipLab) setPassword(device, pw string) {
	l.t.Helper()
	f := filepath.Join(l.t.TempDir(), "pw")
	if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
		l.t.Fatal(err)
	}
	systest.MustRun(l.t, l.env(), bins.Server, "devices", "sip-password", device, "--password-file", f)
}

// daemon starts the agent as a daemon with the SIP line; stop sends it
// SIGTERM and waits.
func (l *sipLab) daemon(extra ...string) (logs *testutil.SyncBuffer, stop func()) {
	l.t.Helper()
	args := append([]string{"--server", l.s.URL(), "--server-ca", l.s.CA, "--broker", "mqtt://" + l.m.Addr, "--state-dir", l.state,
		"--model", model, "--hardware", hw, "--tpm", l.tpm.Spec, "--interval", "1h", "--log-level", "debug", "--sip"}, extra...)
	logs = &testutil.SyncBuffer{}
	cmd := exec.Command(bins.Agent, args...)
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			l.t.Error("the agent did not stop within 20s of SIGTERM")
		}
	}
	l.t.Cleanup(func() {
		stop()
		if l.t.Failed() {
			l.t.Logf("agent log:\n%s", systest.Indent(logs.String()))
		}
	})
	return logs, stop
}

// sipStates decodes the SIP lines of the phone's state messages so far.
func (l *sipLab) sipStates(msgs []testutil.Message) []wire.SIPState {
	var out []wire.SIPState
	for _, m := range msgs {
		if !strings.HasSuffix(m.Topic, "/"+wire.KindState) {
			continue
		}
		s, err := wire.DecodeState(m.Payload)
		if err != nil {
			l.t.Errorf("invalid state: %v", err)
			continue
		}
		if s.SIP != nil {
			out = append(out, *s.SIP)
		}
	}
	return out
}

func (l *sipLab) waitSIP(what string, cond func(wire.SIPState) bool) wire.SIPState {
	l.t.Helper()
	var got wire.SIPState
	l.watch.WaitFor(l.t, 90*time.Second, what, func(msgs []testutil.Message) bool {
		ss := l.sipStates(msgs)
		if len(ss) > 0 && cond(ss[len(ss)-1]) {
			got = ss[len(ss)-1]
			return true
		}
		return false
	})
	return got
}

// TestSIPLineStory: the operator publishes the phone's SIP profile as a
// TUF config target and sets its password; the attested phone's agent
// (--tpm --sip) fetches both, keeps the password sealed to its TPM,
// registers with Kamailio over TLS, reports its line in the retained
// state, answers a call from another phone, and reports the call's
// quality as telemetry. Once its attestation is untrusted (a PCR extended
// out of band), the server releases no password and the line waits.
func TestSIPLineStory(t *testing.T) {
	const phonePW, bobPW = "phone-1-S1P-pw", "bob-S1P-pw"
	l := newSIPLab(t, map[string]string{"phone-1": phonePW, "bob": bobPW})
	l.enroll()
	devicePath, err := wire.ConfigPath("default", wire.ConfigDevices, l.phone, wire.ConfigSIPProfile)
	if err != nil {
		t.Fatal(err)
	}

	// Before anything is published the line waits, and says why.
	_, stop := l.daemon()
	l.waitSIP("waiting for a profile", func(s wire.SIPState) bool {
		return s.Status == wire.SIPWaiting && strings.Contains(s.Reason, "profile")
	})
	stop()

	l.publishProfile(l.phone, l.profileFile(l.phone))
	l.setPassword(l.phone, phonePW)
	rec := t.TempDir()
	logs, stop := l.daemon("--sip-answer", "--sip-tone", "1000", "--sip-record-dir", rec, "--sip-check-interval", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := l.k.WaitRegistered(ctx, l.phone); err != nil {
		t.Fatal(err)
	}
	reg := l.waitSIP("registered in the retained state", func(s wire.SIPState) bool {
		return s.Status == wire.SIPRunning && s.Registration == "registered"
	})
	if reg.Profile != devicePath || reg.Proxy != l.k.TLSAddr.String() || reg.ProfileSHA256 == "" {
		t.Errorf("SIP line = %+v; want profile %s on proxy %s", reg, devicePath, l.k.TLSAddr)
	}

	// The password is on the phone only sealed to its TPM.
	blob := filepath.Join(l.state, "sip", sipcred.PasswordFile)
	if _, err := tpm.ReadSealedBlob(blob); err != nil {
		t.Fatalf("sealed password: %v", err)
	}
	testutil.NoFileHolds(t, l.state, phonePW)
	if strings.Contains(logs.String(), phonePW) {
		t.Error("the agent logged the SIP password")
	}

	// Bob calls the phone; it answers with its tone.
	bobWAV := filepath.Join(t.TempDir(), "bob.wav")
	pwFile := filepath.Join(t.TempDir(), "bob-pw")
	if err := os.WriteFile(pwFile, []byte(bobPW), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without a client certificate Kamailio does not let bob in.
	if r := systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, "call", l.k.URI(l.phone), "--profile", l.profileFile("bob"),
		"--password-file", pwFile, "--duration", "1s"); r.Code == 0 {
		t.Fatalf("a call without a client certificate went through:\n%s", r.Stdout)
	}
	r := systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, "call", l.k.URI(l.phone), "--profile", l.profileFile("bob"),
		"--password-file", pwFile, "--tls-cert", l.bobCert, "--tls-key", l.bobKey, "--duration", "3s", "--tone", "440", "--wav-out", bobWAV)
	if r.Code != 0 || !strings.Contains(r.Stdout, "answered") {
		t.Fatalf("bob's call exited %d:\n%s", r.Code, r.Stdout)
	}
	msgs := l.watch.WaitFor(t, 30*time.Second, "call-quality telemetry", func(msgs []testutil.Message) bool {
		for _, m := range msgs {
			if strings.HasSuffix(m.Topic, "/"+wire.KindTelemetry) {
				return true
			}
		}
		return false
	})
	var q *wire.CallQuality
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, "/"+wire.KindTelemetry) {
			tel, err := wire.DecodeTelemetry(m.Payload)
			if err != nil {
				t.Fatalf("telemetry: %v", err)
			}
			q = tel.Call
		}
	}
	if q.Direction != "in" || q.PacketsReceived == 0 || q.PacketsSent == 0 || q.MOS <= 1 || q.Suite == "" || q.DurationMS < 1000 {
		t.Errorf("call quality = %+v", q)
	}
	active := false
	for _, s := range l.sipStates(l.watch.Messages()) {
		if s.Call == "active" && s.Direction == "in" && s.Suite != "" {
			active = true
		}
	}
	if !active {
		t.Error("the retained state never showed the call active")
	}
	for _, f := range []string{bobWAV, filepath.Join(rec, "call-1.wav")} {
		if fi, err := os.Stat(f); err != nil || fi.Size() < 8000 {
			t.Errorf("recording %s: %v, %v; want some audio", f, fi, err)
		}
	}

	// A new version of the profile: the line restarts with it.
	l.publishProfile(l.phone, l.profileFile(l.phone, 300))
	next := l.waitSIP("registered with the new profile", func(s wire.SIPState) bool {
		return s.Status == wire.SIPRunning && s.Registration == "registered" && s.ProfileSHA256 != reg.ProfileSHA256
	})
	if next.Profile != devicePath {
		t.Errorf("new profile = %s, want %s", next.Profile, devicePath)
	}

	stop()
	if ok, err := l.k.Registered(ctx, l.phone); ok || err != nil {
		t.Errorf("after the agent stopped the phone is still registered (%v)", err)
	}

	// An implant: the PCR no longer matches what booted. The next boot's
	// attestation is untrusted and the server keeps the password.
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	extend := testutil.RequireBinary(t, "tpm2_pcrextend", "make deps (apt-get install tpm2-tools)")
	sum := sha256.Sum256([]byte("an implant"))
	cmd := exec.Command(extend, fmt.Sprintf("%d:sha256=%x", tpm.DefaultPCR, sum))
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+l.tpm.TCTI())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrextend: %v\n%s", err, out)
	}
	n := len(l.watch.Messages())
	_, stop = l.daemon()
	l.watch.WaitFor(t, 90*time.Second, "the line waits: attestation untrusted", func(msgs []testutil.Message) bool {
		ss := l.sipStates(msgs[n:])
		return len(ss) > 0 && ss[len(ss)-1].Status == wire.SIPWaiting && strings.Contains(ss[len(ss)-1].Reason, wire.SIPUntrusted)
	})
	stop()
	if a := l.attestation(); a == "trusted" {
		t.Fatalf("attestation after the implant = %q", a)
	}
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("an untrusted phone got a sealed password: %v", err)
	}
	if ok, _ := l.k.Registered(ctx, l.phone); ok {
		t.Error("an untrusted phone registered")
	}
}
