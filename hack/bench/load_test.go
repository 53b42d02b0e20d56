package main

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadAgainstFileServer checks the load generator against the
// reference server: it counts 200 and 304 answers, reads bodies fully
// (keep-alive keeps working), and flags unexpected statuses.
func TestLoadAgainstFileServer(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "metadata"), 0o755); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 700)
	if err := os.WriteFile(filepath.Join(dir, "metadata", "timestamp.json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(referenceHandler(dir))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	st, h, got, err := getOnce(addr, nil, buildRequest(addr, timestampPath))
	if err != nil || st != 200 || string(got) != body {
		t.Fatalf("getOnce: status %d, %d bytes, %v", st, len(got), err)
	}
	lm := h["last-modified"]
	if lm == "" {
		t.Fatal("no Last-Modified")
	}
	noCPU := func() (time.Duration, error) { return 0, nil }
	for _, c := range []struct {
		req         []byte
		want        int
		expectBad   bool
		description string
	}{
		{buildRequest(addr, timestampPath), 200, false, "plain GET"},
		{buildRequest(addr, timestampPath, "If-Modified-Since: "+lm), 304, false, "conditional GET"},
		{buildRequest(addr, "/tuf/metadata/missing.json"), 200, true, "404 counted as bad"},
	} {
		r, err := runLoad(loadSpec{addr: addr, req: c.req, wantStatus: c.want, conns: 4,
			warmup: 20 * time.Millisecond, duration: 150 * time.Millisecond, cpu: noCPU})
		if err != nil {
			t.Fatalf("%s: %v", c.description, err)
		}
		if c.expectBad {
			if r.bad == 0 || r.ok != 0 || r.firstBad == "" {
				t.Errorf("%s: ok %d bad %d (%q), want only bad answers", c.description, r.ok, r.bad, r.firstBad)
			}
			continue
		}
		if r.ok == 0 || r.bad != 0 || r.all < r.ok {
			t.Errorf("%s: ok %d bad %d all %d", c.description, r.ok, r.bad, r.all)
		}
	}
}

// TestReadResponseRefusesChunked: without a length the generator cannot
// find the next response, so it must stop rather than miscount.
func TestReadResponseRefusesChunked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("a"))
		w.(http.Flusher).Flush()
		w.Write([]byte("b"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(buildRequest(ln.Addr().String(), "/")); err != nil {
		t.Fatal(err)
	}
	if _, err := readResponse(bufio.NewReader(c)); err != errChunked {
		t.Fatalf("readResponse of a chunked answer: %v, want errChunked", err)
	}
}
