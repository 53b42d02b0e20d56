package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// SwtpmHint tells how to install the software TPM.
const SwtpmHint = "make deps (apt-get install swtpm swtpm-tools)"

// Swtpm is a software TPM 2.0 run for one test. Its state directory survives
// Restart, as a phone's TPM survives a reboot.
type Swtpm struct {
	// Addr is the command socket, "127.0.0.1:PORT"; Spec is the agent's
	// --tpm value for it.
	Addr, Spec string
	// StateDir holds the TPM's persistent state.
	StateDir string

	t    testing.TB
	bin  string
	ctrl string
	logs SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// ManufacturedSwtpm is a software TPM with an EK certificate, as a
// manufacturer ships it: swtpm_setup --create-ek-cert, signed by a local CA
// made for the test.
type ManufacturedSwtpm struct {
	*Swtpm
	// CARoot and CAIssuer are the local CA's root and the intermediate
	// that signed the EK certificates (PEM).
	CARoot, CAIssuer string
}

// StartManufacturedSwtpm runs swtpm_setup with a CA of its own, then
// starts swtpm on that state.
func StartManufacturedSwtpm(t testing.TB) *ManufacturedSwtpm {
	t.Helper()
	setup := RequireBinary(t, "swtpm_setup", SwtpmHint)
	localca := RequireBinary(t, "swtpm_localca", SwtpmHint)
	dir := t.TempDir()
	ca, state := filepath.Join(dir, "ca"), t.TempDir()
	files := map[string]string{
		"localca.conf":    fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca),
		"localca.options": "",
		"setup.conf": fmt.Sprintf("create_certs_tool= %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			localca, filepath.Join(dir, "localca.conf"), filepath.Join(dir, "localca.options")),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(ca, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(setup, "--tpm2", "--tpmstate", state, "--create-ek-cert", "--config", filepath.Join(dir, "setup.conf"), "--overwrite").CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	s := &Swtpm{t: t, bin: RequireBinary(t, "swtpm", SwtpmHint), StateDir: state}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("swtpm %s log:\n%s", s.Addr, s.logs.String())
		}
	})
	s.Addr, s.ctrl = freePortPair(t)
	s.Spec = "swtpm:" + s.Addr
	s.Start()
	return &ManufacturedSwtpm{Swtpm: s, CARoot: filepath.Join(ca, "swtpm-localca-rootca-cert.pem"), CAIssuer: filepath.Join(ca, "issuercert.pem")}
}

// StartSwtpm starts `swtpm socket --tpm2` on free ports with a fresh state
// directory, already started up (TPM2_Startup(CLEAR)), and kills it in
// t.Cleanup.
func StartSwtpm(t testing.TB) *Swtpm {
	t.Helper()
	s := &Swtpm{t: t, bin: RequireBinary(t, "swtpm", SwtpmHint), StateDir: t.TempDir()}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("swtpm %s log:\n%s", s.Addr, s.logs.String())
		}
	})
	// tpm2-tools' swtpm TCTI finds the control channel at the command
	// port + 1: take two neighbouring free ports.
	s.Addr, s.ctrl = freePortPair(t)
	s.Spec = "swtpm:" + s.Addr
	s.Start()
	return s
}

// Start starts the TPM again (after Kill) on the same ports and state.
func (s *Swtpm) Start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	_, ctrlPort, _ := net.SplitHostPort(s.ctrl)
	s.cmd = exec.Command(s.bin, "socket", "--tpm2",
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+port,
		"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+ctrlPort,
		"--tpmstate", "dir="+s.StateDir,
		"--flags", "not-need-init,startup-clear",
		"--log", "level=1,file="+filepath.Join(s.StateDir, "swtpm.log"))
	s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting swtpm: %v", err)
	}
	s.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("swtpm exited at start: %s", s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("swtpm not listening on %s after %s: %v", s.Addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the TPM abruptly and waits for it to exit.
func (s *Swtpm) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.t.Errorf("swtpm did not exit: %s", fmt.Sprint(s.cmd.Process.Pid))
	}
	s.cmd = nil
}

// freePortPair finds two free neighbouring ports, PORT and PORT+1.
func freePortPair(t testing.TB) (cmd, ctrl string) {
	t.Helper()
	p := FreePorts(t, 2)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1))
}

// TCTI is the TPM2TOOLS_TCTI value that points tpm2-tools at this TPM.
func (s *Swtpm) TCTI() string {
	_, port, _ := net.SplitHostPort(s.Addr)
	return "swtpm:host=127.0.0.1,port=" + port
}
