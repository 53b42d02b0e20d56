package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/dialtone-dev/dialtone/server/daemon"
)

// tufProfMain is `bench tufprof`: the whole server as daemon.Run builds it
// (`dialtone server --dev` without the process boundary) and the
// FileServer reference, both in this process on real loopback listeners,
// each loaded in turn with a CPU profile and an allocation count. The
// load generator runs in the same process and allocates nothing per
// request, so allocations per request are the server's; in the profiles,
// look under net/http.(*conn).serve. Allocation profiles are written
// before and after each run (NAME.allocs.base, NAME.allocs).
func tufProfMain(args []string) error {
	fs := flag.NewFlagSet("tufprof", flag.ExitOnError)
	out := fs.String("out", ".", "directory for the .pprof files")
	dur := fs.Duration("duration", 5*time.Second, "measured time of each run")
	conns := fs.Int("conns", 64, "concurrent keep-alive connections")
	_ = fs.Parse(args)
	// Sample allocations finely: the profiles are diffed per run
	// (go tool pprof -sample_index=alloc_objects -diff_base X.allocs.base X.allocs).
	runtime.MemProfileRate = 4096
	dataDir, err := os.MkdirTemp("", "dialtone-tufprof-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan daemon.Addrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- daemon.Run(ctx, daemon.Options{DataDir: dataDir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", Dev: true,
			Ready: func(a daemon.Addrs) { ready <- a }})
	}()
	var oursAddr string
	select {
	case a := <-ready:
		oursAddr = a.HTTP
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	}
	defer func() {
		cancel()
		<-errc
	}()
	repoDir := filepath.Join(dataDir, daemon.RepoDir)
	serve := func(h http.Handler) (string, func(), error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		srv := newHTTPServer(h)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintln(os.Stderr, "serve:", err)
			}
		}()
		return ln.Addr().String(), func() { _ = srv.Close() }, nil
	}
	refAddr, stopRef, err := serve(referenceHandler(repoDir))
	if err != nil {
		return err
	}
	defer stopRef()

	_, oh, _, err := getOnce(oursAddr, nil, buildRequest(oursAddr, timestampPath))
	if err != nil {
		return err
	}
	_, rh, _, err := getOnce(refAddr, nil, buildRequest(refAddr, timestampPath))
	if err != nil {
		return err
	}
	for _, c := range []struct {
		name, addr string
		req        []byte
		want       int
	}{
		{"ours-304", oursAddr, buildRequest(oursAddr, timestampPath, "If-None-Match: "+oh["etag"]), 304},
		{"fileserver-304", refAddr, buildRequest(refAddr, timestampPath, "If-Modified-Since: "+rh["last-modified"]), 304},
		{"ours-200", oursAddr, buildRequest(oursAddr, timestampPath), 200},
		{"fileserver-200", refAddr, buildRequest(refAddr, timestampPath), 200},
	} {
		pf, err := os.Create(filepath.Join(*out, "tuf-"+c.name+".pprof"))
		if err != nil {
			return err
		}
		var m0, m1 runtime.MemStats
		runtime.GC()
		if err := writeAllocs(filepath.Join(*out, "tuf-"+c.name+".allocs.base")); err != nil {
			return err
		}
		runtime.ReadMemStats(&m0)
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		r, err := runLoad(loadSpec{addr: c.addr, req: c.req, wantStatus: c.want, conns: *conns, warmup: 200 * time.Millisecond,
			duration: *dur, cpu: func() (time.Duration, error) { return selfCPU(), nil }})
		pprof.StopCPUProfile()
		pf.Close()
		runtime.ReadMemStats(&m1)
		if err != nil {
			return err
		}
		runtime.GC()
		if err := writeAllocs(filepath.Join(*out, "tuf-"+c.name+".allocs")); err != nil {
			return err
		}
		total := float64(r.all) // allocations are counted over the whole run
		fmt.Printf("%-16s %8.0f req/s  %6.1f µs CPU/req (server and client)  %5.1f allocs/req  %6.0f B/req  bad %d\n",
			c.name, r.rps(), r.cpuPerReq(), float64(m1.Mallocs-m0.Mallocs)/total, float64(m1.TotalAlloc-m0.TotalAlloc)/total, r.bad)
	}
	return nil
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
