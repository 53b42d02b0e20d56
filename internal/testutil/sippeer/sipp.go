package sippeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/testutil"
)

// Scenarios shipped with the package (scenarios/*.xml); pass one as
// SippOptions.Scenario. Besides sipp's own keywords they use the keys
// domain, caller and crypto_key, which RunSipp fills with defaults, and
// rtcp_port: sipp does not listen for RTCP, and the ICMP errors a peer's
// RTCP would draw make baresip end the call, so the SDP points RTCP at a
// socket the harness drains.
const (
	// ScenarioRegister: REGISTER [service]@[domain], answering the 401 with
	// -au/-ap; success on 200, failure on anything else (403 for a wrong
	// password).
	ScenarioRegister = "register.xml"
	// ScenarioInviteSRTP: INVITE [service]@[domain] offering RTP/SAVP with
	// a=crypto AES_CM_128_HMAC_SHA1_80 inline:[crypto_key]; success on 200,
	// then ACK, SippOptions.Hold, BYE, 200.
	ScenarioInviteSRTP = "invite_srtp.xml"
	// ScenarioInviteRTP: the downgrade attempt, INVITE offering plain
	// RTP/AVP; success only on 488.
	ScenarioInviteRTP = "invite_rtp.xml"
	// ScenarioUASSRTP: answers an INVITE with 200 and RTP/SAVP SDP carrying
	// [crypto_key], then waits for ACK and BYE.
	ScenarioUASSRTP = "uas_srtp.xml"
	// ScenarioInviteFlood: one INVITE per call, any final response or 2 s
	// of silence counts as success; run with a high Rate.
	ScenarioInviteFlood = "invite_flood.xml"
)

//go:embed scenarios/*.xml
var scenarios embed.FS

// ErrSippFailed is wrapped by RunSipp and Sipp.Wait when sipp exited with a
// non-zero status: some calls failed (status 1), none were processed (99)
// or sipp could not run the scenario.
var ErrSippFailed = errors.New("sipp failed")

// SippOptions configures a sipp run.
type SippOptions struct {
	// Scenario is "uac" or "uas" (sipp's built-ins), one of the Scenario*
	// constants, or the path of a scenario XML file.
	Scenario string
	// Target is where a UAC sends its requests ("127.0.0.1:5060", e.g.
	// Kamailio's UDPAddr.String()). Empty for a UAS.
	Target string
	// Transport is "u1" (UDP, the default) or "t1" (TCP). Debian's sipp has
	// no TLS: reach TLS peers through Kamailio.
	Transport string
	// Service is the user part of the Request-URI ([service]); sipp uses
	// "service" if empty.
	Service string
	// Calls is how many calls to make or answer before exiting (-m); 1 if 0.
	Calls int
	// Rate is the call rate in calls per second (-r); sipp's 10 if 0.
	Rate int
	// Limit caps simultaneous calls (-l); sipp's default if 0.
	Limit int
	// AuthUser and AuthPassword answer digest challenges (-au, -ap).
	AuthUser, AuthPassword string
	// Keys sets scenario keywords (-key name value). RunSipp adds defaults
	// for domain (DefaultDomain), caller ("sipp") and crypto_key (a random
	// SDES key, base64 of 30 bytes).
	Keys map[string]string
	// Hold is how long a call lasts where the scenario pauses (-d); 500 ms
	// if 0.
	Hold time.Duration
	// Timeout bounds the whole run (-timeout, counted as failure); 30 s if 0.
	Timeout time.Duration
	// Extra arguments for sipp, appended last.
	Extra []string
}

// SippResult is what a sipp run did.
type SippResult struct {
	// ExitCode is sipp's exit status: 0 all calls succeeded, 1 some failed,
	// 97 stopped by a command, 99 no call processed, 255 fatal error.
	ExitCode int
	// Successful, Failed and Created are the cumulative call counters
	// (SuccessfulCall(C), FailedCall(C), TotalCallCreated).
	Successful, Failed, Created int
	// Stats is the last row of sipp's statistics file, by column name.
	Stats map[string]string
	// Keys are the scenario keywords used, defaults included.
	Keys map[string]string
	// Dir holds the scenario, statistics, message trace (messages.log) and
	// unexpected-message log (errors.log).
	Dir string
}

// Sipp is a sipp process running in the background (a UAS).
type Sipp struct {
	// Addr is where sipp listens for SIP.
	Addr netip.AddrPort
	// Keys are the scenario keywords used, defaults included.
	Keys map[string]string

	transport string
	run       *sippRun
	done      chan struct{} // closed once res and err are set
	res       SippResult
	err       error
}

type sippRun struct {
	t    testing.TB
	dir  string
	keys map[string]string
	cmd  *exec.Cmd
	out  testutil.SyncBuffer
}

// RunSipp runs a sipp UAC (or any scenario that ends by itself) to
// completion and reports its statistics. The error wraps ErrSippFailed when
// sipp's exit status is not 0; it carries the unexpected-message log, and
// sipp's message trace goes to the test log if the test failed.
func RunSipp(ctx context.Context, t testing.TB, o SippOptions) (SippResult, error) {
	t.Helper()
	if o.Target == "" {
		t.Fatal("sippeer: RunSipp needs a Target")
	}
	r := newSippRun(ctx, t, o, 0)
	if err := r.cmd.Start(); err != nil {
		return SippResult{}, fmt.Errorf("running sipp: %w", err)
	}
	return r.wait()
}

// StartSippUAS starts sipp as a UAS on a free loopback port (o.Target is
// ignored) answering o.Calls calls; Wait collects the result, Stop ends it
// early. It is stopped in t.Cleanup.
func StartSippUAS(t testing.TB, o SippOptions) *Sipp {
	t.Helper()
	if o.Scenario == "" {
		o.Scenario = ScenarioUASSRTP
	}
	o.Target = ""
	var port uint16
	if o.Transport == "t1" {
		port = freeTCPPort(t)
	} else {
		port = freeUDPPort(t)
	}
	r := newSippRun(context.Background(), t, o, port)
	s := &Sipp{Addr: loopback(port), Keys: r.keys, transport: o.Transport, run: r, done: make(chan struct{})}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("sippeer: running sipp: %v", err)
	}
	go func() {
		s.res, s.err = r.wait()
		close(s.done)
	}()
	t.Cleanup(s.Stop)
	// sipp opens its socket right after parsing the scenario; there is no
	// readiness signal, so wait until the port is taken.
	deadline := time.Now().Add(readyTimeout)
	for !portTaken(o.Transport, port) {
		if s.exited() {
			t.Fatalf("sippeer: sipp UAS exited at start (status %d): %v\n%s", s.res.ExitCode, s.err, r.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("sippeer: sipp UAS not listening on %s after %s\n%s", s.Addr, readyTimeout, r.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// URI is a SIP URI for user at the UAS's address, with its transport, to
// dial it (baresip otherwise adds its account's transport).
func (s *Sipp) URI(user string) string {
	tr := "udp"
	if s.transport == "t1" {
		tr = "tcp"
	}
	return "sip:" + user + "@" + s.Addr.String() + ";transport=" + tr
}

// Wait waits until the UAS has answered its calls and exited, or ctx is
// done (the UAS keeps running then).
func (s *Sipp) Wait(ctx context.Context) (SippResult, error) {
	select {
	case <-s.done:
		return s.res, s.err
	case <-ctx.Done():
		return SippResult{}, fmt.Errorf("waiting for sipp: %w", ctx.Err())
	}
}

// Stop ends sipp (SIGUSR1 asks it to finish; SIGKILL after a few seconds)
// and waits for it to exit.
func (s *Sipp) Stop() {
	if s.exited() {
		return
	}
	_ = s.run.cmd.Process.Signal(syscall.SIGUSR1)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.run.cmd.Process.Kill()
		<-s.done
	}
}

func (s *Sipp) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func newSippRun(ctx context.Context, t testing.TB, o SippOptions, port uint16) *sippRun {
	t.Helper()
	bin := testutil.RequireBinary(t, "sipp", Hint)
	r := &sippRun{t: t, dir: t.TempDir(), keys: map[string]string{}}
	for k, v := range o.Keys {
		r.keys[k] = v
	}
	defaults := map[string]string{"domain": DefaultDomain, "caller": "sipp"}
	for k, v := range defaults {
		if _, ok := r.keys[k]; !ok {
			r.keys[k] = v
		}
	}
	if _, ok := r.keys["rtcp_port"]; !ok {
		r.keys["rtcp_port"] = strconv.Itoa(rtcpSink(t))
	}
	if _, ok := r.keys["crypto_key"]; !ok {
		k := make([]byte, 30)
		_, _ = rand.Read(k)
		r.keys["crypto_key"] = base64.StdEncoding.EncodeToString(k)
	}
	if o.Transport == "" {
		o.Transport = "u1"
	}
	if o.Calls == 0 {
		o.Calls = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Hold == 0 {
		o.Hold = 500 * time.Millisecond
	}
	args := []string{"-i", "127.0.0.1", "-t", o.Transport, "-nostdin",
		"-m", strconv.Itoa(o.Calls), "-d", strconv.Itoa(int(o.Hold.Milliseconds())),
		"-timeout", strconv.Itoa(int(o.Timeout.Seconds()+0.999)) + "s", "-timeout_error",
		// The media and remote-control ports default to fixed numbers
		// (6000, 8888) that concurrent runs would share.
		"-mp", strconv.Itoa(int(freeUDPPort(t))), "-cp", strconv.Itoa(int(freeUDPPort(t))),
		"-trace_stat", "-stf", filepath.Join(r.dir, "stats.csv"), "-fd", "1",
		"-trace_err", "-error_file", filepath.Join(r.dir, "errors.log"),
		"-trace_msg", "-message_file", filepath.Join(r.dir, "messages.log"),
	}
	// sipp's own choice of local port starts at the standard 5060.
	if port == 0 {
		if o.Transport == "t1" {
			port = freeTCPPort(t)
		} else {
			port = freeUDPPort(t)
		}
	}
	args = append(args, "-p", strconv.Itoa(int(port)))
	switch o.Scenario {
	case "uac", "uas":
		args = append(args, "-sn", o.Scenario)
	default:
		path := o.Scenario
		if b, err := scenarios.ReadFile("scenarios/" + o.Scenario); err == nil {
			path = filepath.Join(r.dir, o.Scenario)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		args = append(args, "-sf", path)
	}
	if o.Service != "" {
		args = append(args, "-s", o.Service)
	}
	if o.Rate != 0 {
		args = append(args, "-r", strconv.Itoa(o.Rate))
	}
	if o.Limit != 0 {
		args = append(args, "-l", strconv.Itoa(o.Limit))
	}
	if o.AuthUser != "" {
		args = append(args, "-au", o.AuthUser)
	}
	if o.AuthPassword != "" {
		args = append(args, "-ap", o.AuthPassword)
	}
	names := make([]string, 0, len(r.keys))
	for k := range r.keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		args = append(args, "-key", k, r.keys[k])
	}
	args = append(args, o.Extra...)
	if o.Target != "" {
		args = append(args, o.Target)
	}
	r.cmd = exec.CommandContext(ctx, bin, args...)
	r.cmd.Dir = r.dir
	// sipp redraws its statistics screen on stdout; keep it for failures.
	r.cmd.Stdout = &r.out
	r.cmd.Stderr = &r.out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sipp %s in %s:\n%s\nmessages:\n%s", o.Scenario, r.dir, tail(r.out.String(), 4000), readTail(filepath.Join(r.dir, "messages.log"), 16000))
		}
	})
	return r
}

func (r *sippRun) wait() (SippResult, error) {
	err := r.cmd.Wait()
	res := SippResult{ExitCode: r.cmd.ProcessState.ExitCode(), Keys: r.keys, Dir: r.dir}
	if f, ferr := os.Open(filepath.Join(r.dir, "stats.csv")); ferr == nil {
		res.Stats, _ = ParseSippStats(io.LimitReader(f, 16<<20))
		_ = f.Close()
	}
	res.Successful = atoiOr0(res.Stats["SuccessfulCall(C)"])
	res.Failed = atoiOr0(res.Stats["FailedCall(C)"])
	res.Created = atoiOr0(res.Stats["TotalCallCreated"])
	var ee *exec.ExitError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &ee):
		return res, fmt.Errorf("%w: exit status %d (%d successful, %d failed calls): %s",
			ErrSippFailed, res.ExitCode, res.Successful, res.Failed, sippDiagnosis(r))
	default:
		return res, fmt.Errorf("running sipp: %w", err)
	}
}

// sippDiagnosis is the end of sipp's unexpected-message log, or of its
// screen output when that log is empty.
func sippDiagnosis(r *sippRun) string {
	if s := readTail(filepath.Join(r.dir, "errors.log"), 2000); strings.TrimSpace(s) != "" {
		return s
	}
	return tail(r.out.String(), 2000)
}

// ParseSippStats parses a sipp statistics file (-trace_stat): a header line
// of ';'-separated column names followed by rows. It returns the last row
// by column name.
func ParseSippStats(r io.Reader) (map[string]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading sipp stats: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(b), "\r\n", "\n")), "\n")
	if len(lines) < 2 {
		return nil, errors.New("sipp stats: no data row")
	}
	head := strings.Split(lines[0], ";")
	row := strings.Split(lines[len(lines)-1], ";")
	m := make(map[string]string, len(head))
	for i, h := range head {
		if h == "" || i >= len(row) {
			continue
		}
		m[h] = row[i]
	}
	return m, nil
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(s))
	return n
}

func portTaken(transport string, port uint16) bool {
	a := loopback(port).String()
	if transport == "t1" {
		c, err := netDial("tcp", a)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
	c, err := netListenPacket("udp4", a)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	var b bytes.Buffer
	_, _ = io.Copy(&b, io.LimitReader(f, n))
	return b.String()
}

// rtcpSink listens on a free loopback UDP port, discarding what arrives
// until the test ends, and returns the port.
func rtcpSink(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("sippeer: RTCP sink: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}
