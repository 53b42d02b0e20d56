package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	agentattest "github.com/dialtone-dev/dialtone/agent/attest"
	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/systest"
	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/attest"
)

// attestLab is one server and one phone with a manufactured swtpm, as a
// test of issue 5 drives them.
type attestLab struct {
	t      *testing.T
	s      *systest.Server
	tpm    *testutil.ManufacturedSwtpm
	phone  string
	state  string
	bundle map[string]string // version → bundle
	token  string            // the phone's enrollment token
}

func (l *attestLab) env() []string { return l.s.ClientEnv() }

// once runs one agent cycle on the phone's TPM.
func (l *attestLab) once(extra ...string) systest.Result {
	l.t.Helper()
	args := append([]string{"--once", "--server", l.s.URL(), "--server-ca", l.s.CA, "--broker", l.s.Broker(),
		"--state-dir", l.state, "--model", model, "--hardware", hw, "--tpm", l.tpm.Spec}, extra...)
	return systest.Run(l.t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, args...)
}

// history is the phone's verdicts, newest first.
func (l *attestLab) history() []map[string]string {
	l.t.Helper()
	r := systest.MustRun(l.t, l.env(), bins.Server, "devices", "attestations", l.phone, "-o", "json")
	var out struct {
		Attestations []map[string]any `json:"attestations"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		l.t.Fatalf("attestations: %v\n%s", err, r.Stdout)
	}
	var h []map[string]string
	for _, a := range out.Attestations {
		m := map[string]string{}
		for k, v := range a {
			m[k] = fmt.Sprint(v)
		}
		h = append(h, m)
	}
	return h
}

// device is the phone as `dialtone devices show` has it.
func (l *attestLab) device() map[string]any {
	l.t.Helper()
	r := systest.MustRun(l.t, l.env(), bins.Server, "devices", "show", l.phone, "-o", "json")
	var d map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil {
		l.t.Fatalf("devices show: %v\n%s", err, r.Stdout)
	}
	if dev, ok := d["device"].(map[string]any); ok {
		return dev
	}
	return d
}

func (l *attestLab) attestation() string {
	l.t.Helper()
	v, _ := l.device()["attestation"].(string)
	return v
}

// client opens the phone's TPM with the agent's attestation client, on the
// agent's own state (measurement log, enrollment): for the attacks that
// need a hand on the exchange. The agent must not be running.
func (l *attestLab) client() (*agentattest.Client, *tpm.Shared) {
	l.t.Helper()
	t, err := tpm.Open(context.Background(), l.tpm.Spec)
	if err != nil {
		l.t.Fatal(err)
	}
	sh := tpm.NewShared(t)
	cl, err := agentattest.New(context.Background(), agentattest.Config{HTTP: l.s.HTTPClient(l.t), Server: l.s.URL(), Device: l.phone,
		Model: model, TPM: sh, Dir: filepath.Join(l.state, "attest"), Logger: testutil.Logger(l.t)})
	if err != nil {
		sh.Close()
		l.t.Fatal(err)
	}
	return cl, sh
}

// attestToken is the phone's attestation token, unsealed from its state.
func (l *attestLab) attestToken() string {
	l.t.Helper()
	cl, sh := l.client()
	defer sh.Close()
	tok, err := cl.AttestToken(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	return tok
}

// post sends a device request to the API and decodes the answer.
func (l *attestLab) post(path string, in, out any) int {
	l.t.Helper()
	b, _ := json.Marshal(in)
	resp, err := l.s.HTTPClient(l.t).Post(l.s.URL()+path, "application/json", bytes.NewReader(b))
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(rb, out); err != nil {
			l.t.Fatalf("%s: %v\n%s", path, err, rb)
		}
	}
	if resp.StatusCode != http.StatusOK {
		l.t.Logf("%s: %s: %s", path, resp.Status, rb)
	}
	return resp.StatusCode
}

// quoteWith quotes the measurement PCR on a TPM over a fresh nonce for the
// phone: the parts of an attestation, for requests the tests forge.
func (l *attestLab) quoteWith(spec string) (nonce []byte, q wire.Quote, pcr [32]byte) {
	l.t.Helper()
	var nr wire.NonceResponse
	if code := l.post("/v1/attest/nonce", wire.NonceRequest{Device: l.phone, Token: l.attestToken()}, &nr); code != http.StatusOK {
		l.t.Fatalf("nonce: %d", code)
	}
	t, err := tpm.Open(context.Background(), spec)
	if err != nil {
		l.t.Fatal(err)
	}
	defer t.Close()
	a, err := tpm.NewAttestor(t)
	if err != nil {
		l.t.Fatal(err)
	}
	defer a.Close()
	tq, err := a.Quote(nr.Nonce, tpm.DefaultPCR)
	if err != nil {
		l.t.Fatal(err)
	}
	if pcr, err = tpm.ReadPCR(t, tpm.DefaultPCR); err != nil {
		l.t.Fatal(err)
	}
	return nr.Nonce, wire.Quote{Attest: tq.Attest, Signature: tq.Signature}, pcr
}

func (l *attestLab) log() []byte {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.state, "attest", "measurements.cel"))
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

// reboot power-cycles the phone's TPM: the PCRs start again from zero, as
// after a reboot, and the agent's next start begins a new log.
func (l *attestLab) reboot() {
	l.t.Helper()
	l.tpm.Kill()
	l.tpm.Start()
}

// connectsAsPhone reports whether the embedded broker lets the phone in.
func (l *attestLab) connectsAsPhone() bool {
	c, err := testutil.TryConnectMQTT(l.s.MQTT, l.phone, func(o *mqtt.ClientOptions) { o.SetUsername(l.phone) })
	if err != nil {
		return false
	}
	c.Disconnect(100)
	return true
}

func (l *attestLab) alerts(kind string) int {
	l.t.Helper()
	r := systest.MustRun(l.t, l.env(), bins.Server, "alerts", "list", "-o", "json")
	return strings.Count(r.Stdout, `"`+kind+`"`)
}

func newAttestLab(t *testing.T, extraCAs ...string) *attestLab {
	buildBinaries(t)
	mfg := testutil.StartManufacturedSwtpm(t)
	args := []string{"--ek-ca", mfg.CARoot, "--ek-ca", mfg.CAIssuer}
	for _, ca := range extraCAs {
		args = append(args, "--ek-ca", ca)
	}
	s := systest.StartServerIn(t, bins, filepath.Join(t.TempDir(), "server"), args...)
	l := &attestLab{t: t, s: s, tpm: mfg, phone: "phone-1", bundle: map[string]string{}}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		b, _ := buildSigned(t, s, v)
		l.bundle[v] = b
	}
	if r := publish(t, s, l.bundle["1.0.0"]); r.Code != 0 {
		t.Fatalf("publishing the factory image: %d", r.Code)
	}
	l.state = filepath.Join(t.TempDir(), l.phone)
	systest.MustRun(t, nil, bins.Agent, "provision", "--root", s.RootPath(), "--state-dir", l.state, "--model", model,
		"--factory-version", "1.0.0", "--factory-bundle", l.bundle["1.0.0"], "--device-id", l.phone)
	return l
}

// enroll makes a token, runs the agent on it, and expects a trusted boot.
func (l *attestLab) enroll() {
	l.t.Helper()
	r := systest.MustRun(l.t, l.env(), bins.Server, "devices", "enroll-token", "--tenant", "default", "--device", l.phone, "-o", "json")
	var g struct{ Token string }
	if err := json.Unmarshal([]byte(r.Stdout), &g); err != nil || !strings.HasPrefix(g.Token, "dte_") {
		l.t.Fatalf("enroll-token: %v\n%s", err, r.Stdout)
	}
	l.token = g.Token
	if r := l.once("--enroll-token", l.token); r.Code != 10 {
		l.t.Fatalf("agent exited %d, want 10 (no update)", r.Code)
	}
	if a := l.attestation(); a != attest.Trusted {
		l.t.Fatalf("attestation after enrollment = %q, want trusted\n%s", a, l.s.Log.String())
	}
}

// TestAttestationStory: a phone with a manufactured TPM is refused
// enrollment without a grant, enrolls with a token, attests trusted at
// boot, after installing and after the reboot into the new image, gets its
// TPM-backed device certificate, and its evidence passes tpm2_checkquote.
func TestAttestationStory(t *testing.T) {
	l := newAttestLab(t)
	check := testutil.RequireBinary(t, "tpm2_checkquote", "make deps (apt-get install tpm2-tools)")

	// A genuine TPM, but nobody said this phone may enroll.
	if r := l.once(); r.Code != 10 {
		t.Fatalf("agent exited %d, want 10", r.Code)
	}
	if a := l.attestation(); a != "" {
		t.Fatalf("attestation without enrollment = %q", a)
	}
	if n := l.alerts("enrollment-refused"); n == 0 {
		t.Fatal("no enrollment-refused alert")
	}
	if !strings.Contains(l.s.Log.String(), "not on the serial allowlist") {
		t.Fatalf("the refusal does not say why:\n%s", l.s.Log.String())
	}

	l.enroll()
	h := l.history()
	if len(h) != 1 || h[0]["outcome"] != attest.Trusted || h[0]["booted"] != "1.0.0" {
		t.Fatalf("history after enrollment = %v", h)
	}
	crt, err := os.ReadFile(filepath.Join(l.state, "attest", "device.crt"))
	if err != nil {
		t.Fatalf("no device certificate after a trusted boot: %v", err)
	}
	blk, _ := pem.Decode(crt)
	if blk == nil {
		t.Fatal("device.crt holds no PEM")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || leaf.Subject.CommonName != l.phone || leaf.NotAfter.Sub(leaf.NotBefore) > 25*time.Hour {
		t.Fatalf("device certificate %v (err %v)", leaf.Subject, err)
	}

	// The token is spent: it enrolls nothing else.
	var ch wire.EnrollChallenge
	if code := l.post("/v1/enroll", wire.EnrollRequest{Device: "phone-9", Model: model, EKPublic: []byte{1}, AKPublic: []byte{1}, Token: l.token}, &ch); code == http.StatusOK {
		t.Fatal("a spent token was accepted")
	}

	// Update: installed, measured, attested; rebooted into it, attested.
	if r := publish(t, l.s, l.bundle["1.1.0"]); r.Code != 0 {
		t.Fatal("publish 1.1.0")
	}
	if r := l.once(); r.Code != 0 {
		t.Fatalf("update exited %d", r.Code)
	}
	h = l.history()
	// enrollment's boot, this run's boot, after the install, after the
	// reboot into 1.1.0
	if len(h) != 4 || h[0]["outcome"] != attest.Trusted || h[0]["booted"] != "1.1.0" || h[1]["outcome"] != attest.Trusted || h[1]["booted"] != "1.0.0" {
		t.Fatalf("history after the update = %v", h)
	}

	// The last quote, checked by tpm2-tools rather than by Dialtone.
	dir := t.TempDir()
	systest.MustRun(t, l.env(), bins.Server, "devices", "evidence", l.phone, "--out", dir)
	nonce, _ := os.ReadFile(filepath.Join(dir, attest.EvidenceNonce))
	cmd := exec.Command(check, "-u", filepath.Join(dir, attest.EvidenceAK), "-m", filepath.Join(dir, attest.EvidenceMessage),
		"-s", filepath.Join(dir, attest.EvidenceSignature), "-f", filepath.Join(dir, attest.EvidencePCRs), "-g", "sha256", "-q", strings.TrimSpace(string(nonce)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_checkquote refused the exported evidence: %v\n%s", err, out)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "eventlog.cel"))
	recs, err := cel.Decode(log)
	if err != nil || len(recs) != 3 || recs[0].Firmware.Kind != cel.KindBooted || recs[1].Firmware.Kind != cel.KindInstalled || recs[2].Firmware.Version != "1.1.0" {
		t.Fatalf("exported log = %+v, %v; want booted 1.0.0, installed 1.1.0, booted 1.1.0", recs, err)
	}
}

// TestAttestationAttacks: each attack ends untrusted with its reason, and
// nothing else about the device changes; the consequences (alert, off the
// broker, no certificate renewal) apply, and a good attestation brings the
// phone back without manual steps.
func TestAttestationAttacks(t *testing.T) {
	other := testutil.StartManufacturedSwtpm(t) // a genuine TPM of a known manufacturer
	l := newAttestLab(t, other.CARoot, other.CAIssuer)
	l.enroll()
	if !l.connectsAsPhone() {
		t.Fatal("a trusted phone is refused by the broker")
	}
	enrolled := l.device()
	alertsBefore := l.alerts("attestation-untrusted")

	// expect checks the verdict, the consequences, and that nothing else
	// changed; then brings the phone back with a genuine boot.
	expect := func(t *testing.T, reason string, recover func()) {
		t.Helper()
		h := l.history()
		if len(h) == 0 || h[0]["outcome"] != attest.Untrusted || h[0]["reason"] != reason {
			t.Fatalf("latest verdict = %v, want untrusted (%s)", h[0], reason)
		}
		d := l.device()
		if d["attestation"] != attest.Untrusted {
			t.Fatalf("devices show says %v", d["attestation"])
		}
		for _, k := range []string{"version", "slot", "tenant", "model", "update_state"} {
			if d[k] != enrolled[k] {
				t.Errorf("%s changed: %v → %v", k, enrolled[k], d[k])
			}
		}
		if n := l.alerts("attestation-untrusted"); n <= alertsBefore {
			t.Error("no attestation-untrusted alert")
		}
		if l.connectsAsPhone() {
			t.Error("the broker lets an untrusted phone in")
		}
		cl, sh := l.client()
		err := cl.RenewCertificate(context.Background())
		sh.Close()
		if err == nil || !strings.Contains(err.Error(), "not trusted") {
			t.Errorf("certificate renewal of an untrusted phone: %v", err)
		}
		recover()
		if a := l.attestation(); a != attest.Trusted {
			t.Fatalf("after recovery: %s", a)
		}
		if !l.connectsAsPhone() {
			t.Fatal("the broker still refuses the phone after a good attestation")
		}
	}
	genuineBoot := func() {
		l.reboot()
		if r := l.once(); r.Code != 10 {
			t.Fatalf("agent exited %d", r.Code)
		}
	}
	genuine := func() {
		cl, sh := l.client()
		defer sh.Close()
		if v, err := cl.Attest(context.Background(), "1.0.0"); err != nil || v.Outcome != attest.Trusted {
			t.Fatalf("genuine attestation: %+v, %v", v, err)
		}
	}

	t.Run("PCRExtendedOutOfBand", func(t *testing.T) {
		extend := testutil.RequireBinary(t, "tpm2_pcrextend", "make deps (apt-get install tpm2-tools)")
		sum := sha256.Sum256([]byte("an implant"))
		cmd := exec.Command(extend, fmt.Sprintf("%d:sha256=%x", tpm.DefaultPCR, sum))
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+l.tpm.TCTI())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tpm2_pcrextend: %v\n%s", err, out)
		}
		if r := l.once(); r.Code != 10 {
			t.Fatalf("agent exited %d", r.Code)
		}
		expect(t, attest.ReasonReplay, genuineBoot)
	})

	t.Run("ReplayedQuote", func(t *testing.T) {
		var ev struct {
			Nonce, Quote, Signature, Log []byte
		}
		r := systest.MustRun(t, l.env(), bins.Server, "devices", "evidence", l.phone, "--out", t.TempDir(), "-o", "json")
		if err := json.Unmarshal([]byte(r.Stdout), &ev); err != nil {
			t.Fatal(err)
		}
		var v wire.Verdict
		l.post("/v1/attest", wire.AttestRequest{Device: l.phone, Token: l.attestToken(), Nonce: ev.Nonce, Quote: wire.Quote{Attest: ev.Quote, Signature: ev.Signature}, Log: ev.Log}, &v)
		expect(t, attest.ReasonNonce, genuine)
	})

	t.Run("QuoteByAnotherTPMsAK", func(t *testing.T) {
		nonce, q, _ := l.quoteWith(other.Spec)
		var v wire.Verdict
		l.post("/v1/attest", wire.AttestRequest{Device: l.phone, Token: l.attestToken(), Nonce: nonce, Quote: q, Log: l.log()}, &v)
		expect(t, attest.ReasonSignature, genuine)
	})

	// Someone who knows the phone's ID but not its attestation token gets
	// no nonce and cannot have a verdict recorded: nothing changes.
	t.Run("SomeoneWithoutTheToken", func(t *testing.T) {
		before, alerted := len(l.history()), l.alerts("attestation-untrusted")
		for _, tok := range []string{"", wire.AttestTokenPrefix + "guessed", l.attestToken() + "x"} {
			if code := l.post("/v1/attest/nonce", wire.NonceRequest{Device: l.phone, Token: tok}, nil); code != http.StatusUnauthorized {
				t.Errorf("nonce with token %q: %d, want 401", tok, code)
			}
			nonce, q, _ := l.quoteWith(other.Spec)
			if code := l.post("/v1/attest", wire.AttestRequest{Device: l.phone, Token: tok, Nonce: nonce, Quote: q, Log: l.log()}, nil); code != http.StatusUnauthorized {
				t.Errorf("attestation with token %q: %d, want 401", tok, code)
			}
		}
		if n := len(l.history()); n != before {
			t.Errorf("history grew from %d to %d verdicts", before, n)
		}
		if a := l.attestation(); a != attest.Trusted {
			t.Errorf("attestation = %q, want still trusted", a)
		}
		if n := l.alerts("attestation-untrusted"); n != alerted {
			t.Errorf("alerts: %d, want %d", n, alerted)
		}
		if !l.connectsAsPhone() {
			t.Error("the broker refuses the phone")
		}
	})

	t.Run("LogEntryRemoved", func(t *testing.T) {
		// Measure an install, then send the log without it: the quoted PCR
		// holds a measurement the log no longer explains.
		cl, sh := l.client()
		err := cl.Measure(context.Background(), cel.Firmware{Kind: cel.KindInstalled, Version: "1.1.0", Target: "slot:b", SHA256: sha256.Sum256([]byte("1.1.0"))})
		sh.Close()
		if err != nil {
			t.Fatal(err)
		}
		nonce, q, _ := l.quoteWith(l.tpm.Spec)
		recs, err := cel.Decode(l.log())
		if err != nil || len(recs) < 2 {
			t.Fatalf("log: %d records, %v", len(recs), err)
		}
		var short []byte
		for _, r := range recs[:len(recs)-1] {
			short = cel.Append(short, r)
		}
		var v wire.Verdict
		l.post("/v1/attest", wire.AttestRequest{Device: l.phone, Token: l.attestToken(), Nonce: nonce, Quote: q, Log: short}, &v)
		expect(t, attest.ReasonReplay, genuineBoot)
	})

	t.Run("LogEntryEdited", func(t *testing.T) {
		nonce, q, _ := l.quoteWith(l.tpm.Spec)
		log := l.log()
		edited := bytes.Replace(log, []byte("1.0.0"), []byte("1.0.9"), 1)
		if bytes.Equal(edited, log) {
			t.Fatal("the log names no 1.0.0 to edit")
		}
		var v wire.Verdict
		l.post("/v1/attest", wire.AttestRequest{Device: l.phone, Token: l.attestToken(), Nonce: nonce, Quote: q, Log: edited}, &v)
		expect(t, attest.ReasonLog, genuine)
	})

	t.Run("BootedImageNotATarget", func(t *testing.T) {
		cl, sh := l.client()
		var sum [32]byte
		rand.Read(sum[:])
		err := cl.Measure(context.Background(), cel.Firmware{Kind: cel.KindBooted, Version: "1.0.0", Target: "firmware/dt100/evil.tar", SHA256: sum})
		if err == nil {
			_, err = cl.Attest(context.Background(), "1.0.0")
		}
		sh.Close()
		if err != nil {
			t.Fatal(err)
		}
		expect(t, attest.ReasonUnknown, genuineBoot)
	})

	t.Run("ReportedVersionContradicted", func(t *testing.T) {
		// The phone's state claims 1.1.0 while its measurements show 1.0.0
		// booted: a device lying about what it runs.
		c, err := testutil.TryConnectMQTT(l.s.MQTT, l.phone, func(o *mqtt.ClientOptions) { o.SetUsername(l.phone) })
		if err != nil {
			t.Fatal(err)
		}
		st := wire.State{Schema: wire.SchemaVersion, Tenant: "default", Device: l.phone, Model: model, Hardware: hw, Version: "1.1.0",
			Slot: "a", UpdateState: wire.UpdateIdle, Time: time.Now().UTC(), Online: true}
		b, _ := json.Marshal(st)
		if tok := c.Publish(wire.Topic("default", l.phone, wire.KindState), 1, true, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publishing the state: %v", tok.Error())
		}
		c.Disconnect(100)
		systest.Eventually(t, "the lying state stored", func() (bool, string) {
			v := l.device()["version"]
			return v == "1.1.0", fmt.Sprint(v)
		})
		enrolled["version"] = "1.1.0" // what the device said; the verdict must not change it
		cl, sh := l.client()
		_, err = cl.Attest(context.Background(), "1.0.0")
		sh.Close()
		if err != nil {
			t.Fatal(err)
		}
		expect(t, attest.ReasonVersion, func() {
			// The genuine agent reports its real version at start, then
			// attests at boot.
			genuineBoot()
			enrolled["version"] = "1.0.0"
		})
	})

	t.Run("RevokedImage", func(t *testing.T) {
		kdir := filepath.Join(l.s.DataDir, "keys")
		systest.MustRun(t, l.env(), bins.Server, "firmware", "revoke", "firmware/"+model+"/"+model+"-1.0.0.tar",
			"--key", filepath.Join(kdir, "publisher.key"), "--reason", "a key leaked")
		cl, sh := l.client()
		_, err := cl.Attest(context.Background(), "1.0.0")
		sh.Close()
		if err != nil {
			t.Fatal(err)
		}
		h := l.history()
		if h[0]["outcome"] != attest.Untrusted || h[0]["reason"] != attest.ReasonRevoked {
			t.Fatalf("verdict on a revoked image: %v", h[0])
		}
	})
}

// TestEnrollmentRefusals: an EK certificate from an unknown manufacturer
// CA is refused; another TPM under an enrolled device ID is refused and
// alerted as a hijack; an unapproved TPM without a certificate is refused
// until an operator approves its EK.
func TestEnrollmentRefusals(t *testing.T) {
	known := testutil.StartManufacturedSwtpm(t)
	l := newAttestLab(t, known.CARoot, known.CAIssuer)
	l.enroll()
	unknown := testutil.StartManufacturedSwtpm(t) // its CA is nobody's allowlist
	bare := testutil.StartSwtpm(t)                // no EK certificate at all

	enroll := func(spec, device, token string) (int, wire.EnrollRequest) {
		t.Helper()
		tp, err := tpm.Open(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		a, err := tpm.NewAttestor(tp)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		req := wire.EnrollRequest{Device: device, Model: model, EKPublic: a.EKPublic(), AKPublic: a.AKPublic(), Token: token}
		req.EKCert, _ = a.EKCertificate()
		var ch wire.EnrollChallenge
		code := l.post("/v1/enroll", req, &ch)
		if code != http.StatusOK {
			return code, req
		}
		secret, err := a.ActivateCredential(ch.Challenge.CredBlob, ch.Challenge.EncSecret)
		if err != nil {
			t.Fatal(err)
		}
		return l.post("/v1/enroll/"+ch.ID, wire.EnrollActivate{Secret: secret}, nil), req
	}
	token := func(device string) string {
		r := systest.MustRun(t, l.env(), bins.Server, "devices", "enroll-token", "--tenant", "default", "--device", device, "-o", "json")
		var g struct{ Token string }
		_ = json.Unmarshal([]byte(r.Stdout), &g)
		return g.Token
	}

	t.Run("UnknownManufacturer", func(t *testing.T) {
		if code, _ := enroll(unknown.Spec, "phone-2", token("phone-2")); code != http.StatusForbidden {
			t.Fatalf("EK certificate of an unknown CA: %d, want 403", code)
		}
		if !strings.Contains(l.s.Log.String(), "unknown authority") {
			t.Error("the refusal does not name the unknown authority")
		}
	})

	t.Run("Hijack", func(t *testing.T) {
		before := l.device()
		if code, _ := enroll(known.Spec, l.phone, token(l.phone)); code != http.StatusConflict {
			t.Fatalf("another TPM for %s: %d, want 409", l.phone, code)
		}
		if n := l.alerts("device-hijack"); n == 0 {
			t.Fatal("no device-hijack alert")
		}
		if after := l.device(); after["attestation"] != before["attestation"] {
			t.Fatalf("the refused hijack changed the device: %v → %v", before["attestation"], after["attestation"])
		}
		// The real phone still attests.
		cl, sh := l.client()
		v, err := cl.Attest(context.Background(), "1.0.0")
		sh.Close()
		if err != nil || v.Outcome != attest.Trusted {
			t.Fatalf("the real phone after a hijack attempt: %+v, %v", v, err)
		}
	})

	t.Run("NoCertificateNeedsApproval", func(t *testing.T) {
		code, req := enroll(bare.Spec, "phone-3", token("phone-3"))
		if code != http.StatusForbidden {
			t.Fatalf("a TPM without an EK certificate, unapproved: %d, want 403", code)
		}
		ek := hex.EncodeToString(attest.EKHash(req.EKPublic))
		systest.MustRun(t, l.env(), bins.Server, "devices", "approve", "phone-3", "--ek", ek, "--tenant", "default")
		if code, _ := enroll(bare.Spec, "phone-3", ""); code != http.StatusOK {
			t.Fatalf("an approved EK: %d, want 200", code)
		}
		// The approval was for phone-3 only, and is spent.
		if code, _ := enroll(bare.Spec, "phone-4", ""); code == http.StatusOK {
			t.Fatal("an approved EK enrolled a second device")
		}
	})
}

// TestAttestationGoesStale: a verdict is only good for the period. After a
// server restart past it the device shows stale, never trusted; a device
// that stops attesting turns stale on its own; a good attestation brings
// it back.
func TestAttestationGoesStale(t *testing.T) {
	l := newAttestLab(t)
	l.enroll()
	l.s.Stop()
	time.Sleep(3 * time.Second)
	os.Remove(filepath.Join(l.s.DataDir, "server.json"))
	l.s = systest.StartServerIn(t, bins, l.s.DataDir, "--ek-ca", l.tpm.CARoot, "--ek-ca", l.tpm.CAIssuer, "--attest-period", "2s")
	if a := l.attestation(); a != attest.Stale {
		t.Fatalf("after a restart past the period: %q, want stale", a)
	}
	if h := l.history(); h[0]["outcome"] != attest.Stale {
		t.Fatalf("history after the restart: %v", h)
	}
	cl, sh := l.client()
	v, err := cl.Attest(context.Background(), "1.0.0")
	sh.Close()
	if err != nil || v.Outcome != attest.Trusted || l.attestation() != attest.Trusted {
		t.Fatalf("re-attesting: %+v, %v", v, err)
	}
	// The phone goes quiet.
	systest.Eventually(t, "the quiet phone turns stale", func() (bool, string) {
		a := l.attestation()
		return a == attest.Stale, a
	})
}

// TestAttestationFleetMinimum: an image that is still a TUF target but
// below the fleet's minimum for its model attests untrusted once the
// operator raises the minimum (DESIGN.md §5), and trusted again when it is
// lowered.
func TestAttestationFleetMinimum(t *testing.T) {
	l := newAttestLab(t)
	l.enroll()
	restart := func(extra ...string) {
		l.s.Stop()
		os.Remove(filepath.Join(l.s.DataDir, "server.json"))
		l.s = systest.StartServerIn(t, bins, l.s.DataDir, append([]string{"--ek-ca", l.tpm.CARoot, "--ek-ca", l.tpm.CAIssuer}, extra...)...)
	}
	attestNow := func() wire.Verdict {
		cl, sh := l.client()
		defer sh.Close()
		v, err := cl.Attest(context.Background(), "1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	restart("--attest-min-version", model+"=1.1.0")
	if v := attestNow(); v.Outcome != attest.Untrusted || v.Reason != attest.ReasonMinimum {
		t.Fatalf("1.0.0 under a 1.1.0 minimum: %+v, want untrusted (%s)", v, attest.ReasonMinimum)
	}
	if a := l.attestation(); a != attest.Untrusted {
		t.Fatalf("devices show says %q", a)
	}
	restart("--attest-min-version", model+"=1.0.0")
	if v := attestNow(); v.Outcome != attest.Trusted {
		t.Fatalf("1.0.0 under a 1.0.0 minimum: %+v, want trusted", v)
	}
}
