package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

const timestampPath = "/tuf/metadata/timestamp.json"

// tufCase is one kind of update check, asked of both servers.
type tufCase struct {
	name       string
	ours, ref  []byte // the request each server gets
	wantStatus int
}

type tufSide struct {
	label string
	addr  string
	pid   int
	tls   *tls.Config
}

// benchTUF measures update-check throughput: our server process against
// http.FileServer in another process, same files, same client.
func benchTUF(cfg config) ([]row, error) {
	logf("== tuf: update-check throughput, %d keep-alive connections, %d rounds of %s (+%s warm-up) per server and case",
		cfg.conns, cfg.rounds, cfg.duration, cfg.warmup)
	dir := filepath.Join(cfg.workdir, "tuf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := startDevServer(cfg.dialtone, filepath.Join(dir, "server"), filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	// Both serve HTTPS with the dev server's certificate, the same TLS
	// configuration, to keep-alive TLS connections (HTTP/1.1).
	cert, key := srv.certFiles()
	fsProc, fsAddr, err := startFileServer(filepath.Join(srv.dataDir, "tuf"), filepath.Join(dir, "fileserver.log"), cert, key)
	if err != nil {
		return nil, err
	}
	defer fsProc.stop()
	tlsc, err := srv.tlsConfig()
	if err != nil {
		return nil, err
	}
	ours := tufSide{"dialtone server --dev", srv.addr, srv.pid(), tlsc}
	ref := tufSide{"http.FileServer", fsAddr, fsProc.pid(), tlsc}

	// Learn each server's validator and check that both serve the same
	// bytes and answer the conditional request with 304.
	st, oh, obody, err := getOnce(ours.addr, ours.tls, buildRequest(ours.addr, timestampPath))
	if err != nil || st != 200 {
		return nil, fmt.Errorf("GET %s from our server: status %d, %v", timestampPath, st, err)
	}
	st, rh, rbody, err := getOnce(ref.addr, ref.tls, buildRequest(ref.addr, timestampPath))
	if err != nil || st != 200 {
		return nil, fmt.Errorf("GET %s from the FileServer: status %d, %v", timestampPath, st, err)
	}
	if !bytes.Equal(obody, rbody) {
		return nil, fmt.Errorf("the two servers serve different timestamp.json")
	}
	etag, lastMod := oh["etag"], rh["last-modified"]
	if etag == "" || lastMod == "" {
		return nil, fmt.Errorf("missing validator: our ETag %q, FileServer Last-Modified %q", etag, lastMod)
	}
	logf("   timestamp.json: %d bytes; our ETag %s; http.FileServer sets no ETag, so it is asked If-Modified-Since: %s", len(obody), etag, lastMod)
	cases := []tufCase{
		{"304", buildRequest(ours.addr, timestampPath, "If-None-Match: "+etag), buildRequest(ref.addr, timestampPath, "If-Modified-Since: "+lastMod), 304},
		{"200", buildRequest(ours.addr, timestampPath), buildRequest(ref.addr, timestampPath), 200},
	}
	for _, c := range cases {
		for _, s := range []struct {
			side tufSide
			req  []byte
		}{{ours, c.ours}, {ref, c.ref}} {
			st, _, _, err := getOnce(s.side.addr, s.side.tls, s.req)
			if err != nil || st != c.wantStatus {
				return nil, fmt.Errorf("%s: %s answered %d (%v), want %d", c.name, s.side.label, st, err, c.wantStatus)
			}
		}
	}

	type series struct{ ours, ref, ratio, oursCPU, refCPU, clientCPU []float64 }
	res := make([]series, len(cases))
	var bad []string
	for round := range cfg.rounds {
		for i, c := range cases {
			run := func(side tufSide, req []byte) (loadResult, error) {
				pid := side.pid
				r, err := runLoad(loadSpec{
					addr: side.addr, tls: side.tls, req: req, wantStatus: c.wantStatus, conns: cfg.conns,
					warmup: cfg.warmup, duration: cfg.duration,
					cpu: func() (time.Duration, error) { return procCPU(pid) },
				})
				if err == nil && r.bad > 0 {
					bad = append(bad, fmt.Sprintf("%s %s: %d unexpected answers (%s)", side.label, c.name, r.bad, r.firstBad))
				}
				return r, err
			}
			var o, f loadResult
			var err error
			// Alternate which server goes first, so that a drift in the
			// machine's load favours neither.
			if round%2 == 0 {
				if o, err = run(ours, c.ours); err == nil {
					f, err = run(ref, c.ref)
				}
			} else {
				if f, err = run(ref, c.ref); err == nil {
					o, err = run(ours, c.ours)
				}
			}
			if err != nil {
				return nil, err
			}
			s := &res[i]
			s.ours = append(s.ours, o.rps())
			s.ref = append(s.ref, f.rps())
			s.ratio = append(s.ratio, o.rps()/f.rps())
			s.oursCPU = append(s.oursCPU, o.cpuPerReq())
			s.refCPU = append(s.refCPU, f.cpuPerReq())
			s.clientCPU = append(s.clientCPU, float64((o.clientCPU+f.clientCPU).Microseconds())/float64(o.ok+f.ok))
			logf("   round %d %s: ours %8.0f req/s (%.1f µs CPU/req)   FileServer %8.0f req/s (%.1f µs CPU/req)   ratio %.3f",
				round+1, c.name, o.rps(), o.cpuPerReq(), f.rps(), f.cpuPerReq(), o.rps()/f.rps())
		}
	}
	for _, b := range bad {
		logf("   ERROR: %s", b)
	}
	var rows []row
	for i, c := range cases {
		s := res[i]
		what := "GET timestamp.json -> 200"
		if c.wantStatus == 304 {
			what = "GET timestamp.json, If-None-Match -> 304"
		}
		logf("   %s: ours %s req/s (spread %.0f%%), FileServer %s req/s (spread %.0f%%); server CPU per request: ours %.1f µs, FileServer %.1f µs (ratio %.2f); load generator %.1f µs/req",
			c.name, fmtSeries(s.ours, "%.0f"), spread(s.ours), fmtSeries(s.ref, "%.0f"), spread(s.ref),
			median(s.oursCPU), median(s.refCPU), median(s.oursCPU)/median(s.refCPU), median(s.clientCPU))
		r := row{name: "tuf " + what, value: median(s.ours), ref: median(s.ref), unit: "req/s", refName: "FileServer",
			ratio: median(s.ratio), min: 0.8, rounds: s.ratio}
		if len(bad) > 0 {
			r.failNote = "unexpected status"
		}
		rows = append(rows, r)
		// CPU per request is less sensitive to other tenants than
		// throughput; printed to explain a ratio, not judged.
		rows = append(rows, row{name: "  server CPU per request (" + c.name + ")", value: median(s.oursCPU), ref: median(s.refCPU),
			unit: "µs", refName: "FileServer", ratio: median(s.refCPU) / median(s.oursCPU), target: "(FileServer/ours)"})
	}
	return rows, nil
}
