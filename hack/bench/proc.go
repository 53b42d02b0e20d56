package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for every architecture's user-visible interfaces.
const userHZ = 100

// procCPU is the user+system CPU time that process pid has used so far
// (every thread), at /proc's 10 ms resolution.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// unambiguous. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatusKiB reads one "Name:   123 kB" field of /proc/PID/status.
func procStatusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		return strconv.ParseInt(v, 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// process is a child process that is stopped with SIGTERM.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

func (p *process) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		p.done <- <-p.done
	}
}

// start starts cmd with its output appended to logPath.
func start(name string, cmd *exec.Cmd, logPath string) (*process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.done <- err
	}()
	return p, nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// devServer is a running `dialtone server --dev` on free loopback ports.
type devServer struct {
	*process
	dataDir string
	addr    string // host:port of the HTTPS API
	url     string // https://addr
	ca      string // the development CA (DATA/tls/ca.pem)
	token   string
}

// Certificate and key the dev server serves the API with (its dev CA's).
func (s *devServer) certFiles() (cert, key string) {
	return filepath.Join(s.dataDir, "tls", "server.pem"), filepath.Join(s.dataDir, "tls", "server.key")
}

// tlsConfig trusts the server's development CA.
func (s *devServer) tlsConfig() (*tls.Config, error) {
	b, err := os.ReadFile(s.ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no certificate", s.ca)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func startDevServer(bin, dataDir, logPath string) (*devServer, error) {
	cmd := exec.Command(bin, "server", "--dev", "--data-dir", dataDir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	p, err := start("dialtone server", cmd, logPath)
	if err != nil {
		return nil, err
	}
	s := &devServer{process: p, dataDir: dataDir}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dataDir, "server.json"))
		if err == nil {
			var a struct{ HTTP, URL, CA string }
			if json.Unmarshal(b, &a) == nil && a.HTTP != "" {
				s.addr, s.url, s.ca = a.HTTP, a.URL, a.CA
				break
			}
		}
		if p.exited() {
			return nil, fmt.Errorf("dialtone server exited early:\n%s", tail(logPath, 20))
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("dialtone server did not start within 60s:\n%s", tail(logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		p.stop()
		return nil, err
	}
	s.token = strings.TrimSpace(string(tok))
	return s, nil
}

// clientEnv is the environment of a CLI command talking to s.
func (s *devServer) clientEnv() []string {
	return append(os.Environ(), "DIALTONE_SERVER="+s.url, "DIALTONE_TOKEN="+s.token, "DIALTONE_CA="+s.ca, "DIALTONE_CONFIG=/dev/null")
}

// startFileServer runs this program's fileserver subcommand over dir and
// returns its address; with cert and key it serves HTTPS.
func startFileServer(dir, logPath, cert, key string) (*process, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addrFile := logPath + ".addr"
	cmd := exec.Command(self, "fileserver", "-dir", dir, "-addr-file", addrFile, "-tls-cert", cert, "-tls-key", key)
	p, err := start("FileServer", cmd, logPath)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			return p, strings.TrimSpace(string(b)), nil
		}
		if p.exited() {
			return nil, "", fmt.Errorf("fileserver exited early:\n%s", tail(logPath, 20))
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, "", fmt.Errorf("fileserver did not start within 30s:\n%s", tail(logPath, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runTimed runs a command to completion and returns its wall time and
// exit state.
func runTimed(env []string, bin string, args ...string) (time.Duration, *os.ProcessState, string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, cmd.ProcessState, out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return d, cmd.ProcessState, out.String(), nil
}
