package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec is one load run: conns keep-alive connections, each with one
// request in flight at a time (what wrk does without a script), repeating
// req until the run ends. Requests answered during warmup are not counted.
type loadSpec struct {
	addr string
	// tls, when set, makes every connection TLS (HTTP/1.1 by ALPN).
	tls        *tls.Config
	req        []byte
	wantStatus int
	conns      int
	warmup     time.Duration
	duration   time.Duration
	// cpu, when set, returns the CPU time used so far by the server
	// process; it is read at the start and end of the measured window.
	cpu func() (time.Duration, error)
}

type loadResult struct {
	ok, bad   int64 // measured responses with the wanted status, and any other
	all       int64 // every response, warm-up and stop included
	elapsed   time.Duration
	serverCPU time.Duration // -1 when unknown
	clientCPU time.Duration
	firstBad  string
}

func (r loadResult) rps() float64 { return float64(r.ok) / r.elapsed.Seconds() }

// cpuPerReq is the server's CPU time per answered request, in µs.
func (r loadResult) cpuPerReq() float64 {
	if r.serverCPU < 0 || r.ok == 0 {
		return -1
	}
	return float64(r.serverCPU.Microseconds()) / float64(r.ok)
}

// Phases of a run, shared by every connection.
const (
	phaseWarmup = iota
	phaseMeasure
	phaseStop
)

// runLoad drives the load. It speaks raw HTTP/1.1 on TCP (or TLS) sockets and
// parses only the status line and Content-Length, so that the client costs
// far less CPU than the server it measures: both share this machine's cores.
func runLoad(s loadSpec) (loadResult, error) {
	var phase atomic.Int32
	var ok, bad, all atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	errc := make(chan error, s.conns)
	ready := make(chan struct{})
	var connected sync.WaitGroup
	for range s.conns {
		wg.Add(1)
		connected.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialConn(s.addr, s.tls, 10*time.Second)
			connected.Done()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			<-ready
			br := bufio.NewReaderSize(c, 32<<10)
			var nOK, nBad, nAll int64
			for phase.Load() != phaseStop {
				if _, err := c.Write(s.req); err != nil {
					errc <- err
					return
				}
				status, err := readResponse(br)
				if err != nil {
					errc <- err
					return
				}
				nAll++
				if phase.Load() == phaseMeasure {
					if status == s.wantStatus {
						nOK++
					} else {
						nBad++
						firstBad.CompareAndSwap(nil, fmt.Sprintf("status %d, want %d", status, s.wantStatus))
					}
				}
			}
			ok.Add(nOK)
			bad.Add(nBad)
			all.Add(nAll)
		}()
	}
	connected.Wait()
	close(ready)
	time.Sleep(s.warmup)

	cpu0, cpuErr := s.cpu()
	self0 := selfCPU()
	t0 := time.Now()
	phase.Store(phaseMeasure)
	time.Sleep(s.duration)
	phase.Store(phaseStop)
	elapsed := time.Since(t0)
	cpu1, err := s.cpu()
	if cpuErr == nil {
		cpuErr = err
	}
	self1 := selfCPU()
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return loadResult{}, fmt.Errorf("load on %s: %w", s.addr, err)
	}
	res := loadResult{ok: ok.Load(), bad: bad.Load(), all: all.Load(), elapsed: elapsed, serverCPU: cpu1 - cpu0, clientCPU: self1 - self0}
	if cpuErr != nil {
		res.serverCPU = -1
	}
	if v, _ := firstBad.Load().(string); v != "" {
		res.firstBad = v
	}
	return res, nil
}

// dialConn opens a keep-alive connection: plain TCP, or TLS with cfg (the
// handshake done before the load starts, and speaking HTTP/1.1).
func dialConn(addr string, cfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	if cfg == nil {
		return net.DialTimeout("tcp", addr, timeout)
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

var errChunked = errors.New("response without Content-Length (chunked?): not supported by the load generator")

// readResponse reads one response and returns its status code. A 304 (or
// 204) has no body; any other response must carry a Content-Length.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("reading status line: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length := int64(-1)
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, fmt.Errorf("reading headers: %w", err)
		}
		if len(line) <= 2 { // "\r\n": end of the header
			break
		}
		if k, v, found := bytes.Cut(line, []byte(":")); found {
			switch {
			case bytes.EqualFold(k, []byte("Content-Length")):
				length, err = strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("bad Content-Length %q", v)
				}
			case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(bytes.TrimSpace(v), []byte("close")):
				return 0, errors.New("server closes the connection: keep-alive is required")
			}
		}
	}
	if status == 304 || status == 204 || (status >= 100 && status < 200) {
		return status, nil
	}
	if length < 0 {
		return 0, errChunked
	}
	if _, err := br.Discard(int(length)); err != nil {
		return 0, fmt.Errorf("reading body: %w", err)
	}
	return status, nil
}

// getOnce sends one request on a fresh connection and returns the status
// and the header lines, to learn a server's validators (ETag,
// Last-Modified) before the load.
func getOnce(addr string, tlsc *tls.Config, req []byte) (int, map[string]string, []byte, error) {
	c, err := dialConn(addr, tlsc, 5*time.Second)
	if err != nil {
		return 0, nil, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		return 0, nil, nil, err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, nil, nil, err
	}
	if len(line) < 12 {
		return 0, nil, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(line[9:12])
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bad status line %q", line)
	}
	hdr := map[string]string{}
	length := int64(0)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return 0, nil, nil, err
		}
		if len(l) <= 2 {
			break
		}
		k, v, _ := bytes.Cut([]byte(l), []byte(":"))
		key := string(bytes.ToLower(bytes.TrimSpace(k)))
		hdr[key] = string(bytes.TrimSpace(v))
		if key == "content-length" {
			length, _ = strconv.ParseInt(hdr[key], 10, 64)
		}
	}
	var body []byte
	if status != 304 && length > 0 {
		body = make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			return 0, nil, nil, err
		}
	}
	return status, hdr, body, nil
}

// buildRequest writes a GET for path with extra header lines.
func buildRequest(addr, path string, extra ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dialtone-bench\r\nAccept: */*\r\n", path, addr)
	for _, h := range extra {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}
