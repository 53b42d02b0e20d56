package sippeer

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// DefaultDomain is the SIP domain (and digest realm) when none is given.
const DefaultDomain = "dialtone.test"

const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
)

//go:embed kamailio.cfg.tmpl
var kamailioCfg string

var kamailioTmpl = template.Must(template.New("kamailio.cfg").Parse(kamailioCfg))

// KamailioOptions configures StartKamailio.
type KamailioOptions struct {
	// Users maps user names to digest passwords. REGISTER always needs
	// credentials; other requests need them when their From user is one of
	// Users and the From domain is Domain. Names and passwords may not hold
	// quotes, backslashes, '$' or control characters.
	Users map[string]string
	// Domain is the SIP domain Kamailio serves and the digest realm;
	// DefaultDomain if empty.
	Domain string
	// CertFile and KeyFile are the TLS server certificate (with an IP SAN
	// 127.0.0.1, e.g. from testutil.PKI.Issue(t, "127.0.0.1", true)) and its
	// key. Required.
	CertFile, KeyFile string
	// CAFile, if set, is the CA that client certificates must chain to when
	// VerifyClients is set.
	CAFile string
	// VerifyClients makes the TLS listener require a client certificate
	// issued by CAFile.
	VerifyClients bool
	// RequireTLS leaves out the UDP and TCP listeners.
	RequireTLS bool
	// Debug is Kamailio's log level (-1 errors, 0 warnings, 1 notices,
	// 2 info, 3 debug); 0 means 2, with a line per request and reply.
	Debug int
	// Log, if set, also receives Kamailio's log as it is written.
	Log io.Writer
}

// Kamailio is a running Kamailio registrar/proxy.
type Kamailio struct {
	// TLSAddr, TCPAddr and UDPAddr are the listeners on 127.0.0.1; TCPAddr
	// and UDPAddr are invalid when RequireTLS was set.
	TLSAddr, TCPAddr, UDPAddr netip.AddrPort
	// Domain is the served domain and digest realm.
	Domain string
	// Dir holds the generated configuration.
	Dir string

	ctl    string
	kamcmd string
	logs   testutil.SyncBuffer
	proc   *proc
}

type kamUser struct{ Name, Password string }

type kamConfig struct {
	Debug                     int
	Domain                    string
	UDPPort, TCPPort, TLSPort uint16
	RequireTLS                bool
	TLSConfig, CtlSocket      string
	Users                     []kamUser
}

// StartKamailio writes a configuration for o to a temporary directory,
// starts Kamailio in the foreground on free loopback ports and waits until
// its listeners and control socket answer. It is killed in t.Cleanup and its
// log goes to the test log if the test failed.
func StartKamailio(t testing.TB, o KamailioOptions) *Kamailio {
	t.Helper()
	bin := testutil.RequireBinary(t, "kamailio", Hint)
	k := &Kamailio{
		Domain: o.Domain,
		Dir:    t.TempDir(),
		kamcmd: testutil.RequireBinary(t, "kamcmd", Hint),
	}
	if k.Domain == "" {
		k.Domain = DefaultDomain
	}
	if o.CertFile == "" || o.KeyFile == "" {
		t.Fatal("sippeer: KamailioOptions needs CertFile and KeyFile")
	}
	if o.VerifyClients && o.CAFile == "" {
		t.Fatal("sippeer: VerifyClients needs CAFile")
	}
	// A unix socket path is limited to 108 bytes; test temp dirs can be longer.
	ctlDir, err := os.MkdirTemp("", "kamctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(ctlDir) })
	k.ctl = filepath.Join(ctlDir, "ctl")

	cfg := kamConfig{
		Debug:      o.Debug,
		Domain:     k.Domain,
		RequireTLS: o.RequireTLS,
		TLSConfig:  filepath.Join(k.Dir, "tls.cfg"),
		CtlSocket:  k.ctl,
	}
	if cfg.Debug == 0 {
		cfg.Debug = 2
	}
	for _, s := range []string{k.Domain, o.CertFile, o.KeyFile, o.CAFile, k.Dir} {
		if !cfgSafe(s) {
			t.Fatalf("sippeer: %q cannot go into a Kamailio configuration", s)
		}
	}
	for name, pw := range o.Users {
		if !cfgSafe(name) || !cfgSafe(pw) || name == "" || strings.ContainsAny(name, "=>") {
			t.Fatalf("sippeer: user %q or its password cannot go into a Kamailio configuration", name)
		}
		cfg.Users = append(cfg.Users, kamUser{name, pw})
	}
	if err := os.WriteFile(cfg.TLSConfig, []byte(tlsConfig(o)), 0o600); err != nil {
		t.Fatal(err)
	}

	var w io.Writer = &k.logs
	if o.Log != nil {
		w = io.MultiWriter(&k.logs, o.Log)
	}
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			t.Logf("kamailio %s log:\n%s", k.TLSAddr, k.logs.String())
		}
	})
	const attempts = 3
	for i := 1; ; i++ {
		cfg.TLSPort = freeTCPPort(t)
		k.TLSAddr = loopback(cfg.TLSPort)
		if !o.RequireTLS {
			cfg.TCPPort, cfg.UDPPort = freeTCPPort(t), freeUDPPort(t)
			k.TCPAddr, k.UDPAddr = loopback(cfg.TCPPort), loopback(cfg.UDPPort)
		}
		var b bytes.Buffer
		if err := kamailioTmpl.Execute(&b, cfg); err != nil {
			t.Fatalf("sippeer: kamailio config: %v", err)
		}
		conf := filepath.Join(k.Dir, "kamailio.cfg")
		if err := os.WriteFile(conf, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		err := k.start(bin, conf, w)
		if err == nil {
			return k
		}
		if i == attempts || strings.Contains(k.logs.String(), "bad config file") {
			t.Fatalf("sippeer: starting kamailio: %v\n%s", err, k.logs.String())
		}
		t.Logf("starting kamailio: %v; retrying on other ports", err)
	}
}

func tlsConfig(o KamailioOptions) string {
	verify := "no"
	if o.VerifyClients {
		verify = "yes"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[server:default]\nmethod = TLSv1.2+\nverify_certificate = %s\nrequire_certificate = %s\n", verify, verify)
	fmt.Fprintf(&b, "certificate = %s\nprivate_key = %s\n", o.CertFile, o.KeyFile)
	if o.CAFile != "" {
		fmt.Fprintf(&b, "ca_list = %s\n", o.CAFile)
	}
	// Kamailio never opens connections to phones (set_forward_no_connect),
	// but the tls module wants a client profile.
	b.WriteString("\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")
	return b.String()
}

// cfgSafe reports whether s can be placed in a double-quoted Kamailio
// string without escaping (and without being read as a variable).
func cfgSafe(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' || r == '$' {
			return false
		}
	}
	return true
}

func (k *Kamailio) start(bin, conf string, log io.Writer) error {
	_ = os.Remove(k.ctl)
	cmd := exec.Command(bin, "-DD", "-E", "-f", conf, "-Y", k.Dir, "-P", filepath.Join(k.Dir, "kamailio.pid"), "-m", "32", "-M", "8")
	p, err := startProc(cmd, log)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	addrs := []netip.AddrPort{k.TLSAddr}
	if k.TCPAddr.IsValid() {
		addrs = append(addrs, k.TCPAddr)
	}
	for {
		err := k.ready(addrs)
		if err == nil {
			k.proc = p
			return nil
		}
		select {
		case <-p.exited:
			p.stop() // workers it may have left
			return fmt.Errorf("kamailio exited early: %s", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("kamailio not ready after %s: %w", readyTimeout, err)
		}
	}
}

func (k *Kamailio) ready(addrs []netip.AddrPort) error {
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a.String(), 200*time.Millisecond)
		if err != nil {
			return err
		}
		_ = c.Close()
	}
	c, err := net.DialTimeout("unix", k.ctl, 200*time.Millisecond)
	if err != nil {
		return err
	}
	return c.Close()
}

func (k *Kamailio) stop() {
	if k.proc != nil {
		k.proc.stop()
	}
}

// Logs returns what Kamailio logged so far.
func (k *Kamailio) Logs() string { return k.logs.String() }

// RPC runs a Kamailio RPC command (e.g. "ul.dump") through kamcmd on the
// control socket and returns its output.
func (k *Kamailio) RPC(ctx context.Context, method string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.kamcmd, append([]string{"-s", "unixs:" + k.ctl, method}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kamcmd %s: %w: %s", method, err, bytes.TrimSpace(out))
	}
	// kamcmd exits 0 when the RPC itself failed.
	if bytes.HasPrefix(out, []byte("error:")) {
		return string(out), fmt.Errorf("kamcmd %s: %s", method, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Contacts returns the contacts user has registered (none if not
// registered), as Kamailio stored them: the Contact URI, and the received
// address when the phone is reached through its own connection.
func (k *Kamailio) Contacts(ctx context.Context, user string) ([]string, error) {
	out, err := k.RPC(ctx, "ul.lookup", "location", user)
	if err != nil {
		// usrloc answers "AOR not found" with an RPC error.
		if strings.Contains(out, "not found") {
			return nil, nil
		}
		return nil, err
	}
	var cs []string
	var cur string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch strings.TrimSuffix(f[0], ":") {
		case "Address":
			if cur != "" {
				cs = append(cs, cur)
			}
			cur = f[1]
		case "Received":
			if f[1] != "[not" && cur != "" {
				cur += " received=" + f[1]
			}
		}
	}
	if cur != "" {
		cs = append(cs, cur)
	}
	return cs, nil
}

// Registered reports whether user has at least one registered contact.
func (k *Kamailio) Registered(ctx context.Context, user string) (bool, error) {
	cs, err := k.Contacts(ctx, user)
	return len(cs) > 0, err
}

// WaitRegistered polls until user is registered or ctx is done.
func (k *Kamailio) WaitRegistered(ctx context.Context, user string) error {
	for {
		ok, err := k.Registered(ctx, user)
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("not registered")
			}
			return fmt.Errorf("waiting for %s to register: %w (%w)", user, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// URI is the SIP URI of user in Kamailio's domain, e.g.
// "sip:alice@dialtone.test".
func (k *Kamailio) URI(user string) string { return "sip:" + user + "@" + k.Domain }

func loopback(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
}

func freeTCPPort(t testing.TB) uint16 {
	t.Helper()
	return uint16(testutil.FreePorts(t, 1))
}

func freeUDPPort(t testing.TB) uint16 {
	t.Helper()
	return uint16(testutil.FreePorts(t, 1))
}

// proc is a child process run in its own process group, so that stopping
// it also stops the processes it forked (Kamailio's workers).
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
}

// startProc starts cmd with its output going to log, unless log is nil
// (the caller set cmd.Stdout and cmd.Stderr).
func startProc(cmd *exec.Cmd, log io.Writer) (*proc, error) {
	if log != nil {
		cmd.Stdout = log
		cmd.Stderr = log
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", cmd.Path, err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after stopTimeout,
// and waits for the process to exit.
func (p *proc) stop() {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		p.signal(syscall.SIGKILL)
		<-p.exited
	}
	// Workers that outlived the main process.
	p.signal(syscall.SIGKILL)
}

func (p *proc) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

func netDial(network, addr string) (net.Conn, error) {
	return net.DialTimeout(network, addr, 200*time.Millisecond)
}

func netListenPacket(network, addr string) (net.PacketConn, error) {
	return net.ListenPacket(network, addr)
}
