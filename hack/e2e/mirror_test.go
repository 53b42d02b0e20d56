package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/systest"
)

// trickler is a mirror in front of the server that, for target downloads
// without a Range header, sends a first chunk and then stalls (the TUF
// "slow retrieval" attack); Range requests pass unless stallAll is set.
type trickler struct {
	url      string
	stallAll atomic.Bool
	ranges   atomic.Int32
	stalls   atomic.Int32
}

func startTrickler(t *testing.T, s *systest.Server) *trickler {
	t.Helper()
	upstream := s.URL()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = s.Transport(t) // the server is HTTPS; the mirror plain HTTP
	hc := s.HTTPClient(t)
	tr := &trickler{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/tuf/targets/") || strings.HasSuffix(r.URL.Path, ".sig") {
			proxy.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Range") != "" {
			tr.ranges.Add(1)
			if !tr.stallAll.Load() {
				proxy.ServeHTTP(w, r)
				return
			}
		}
		tr.stalls.Add(1)
		resp, err := hc.Get(upstream + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Length", resp.Header.Get("Content-Length"))
		w.WriteHeader(http.StatusOK)
		io.CopyN(w, resp.Body, 64<<10)
		w.(http.Flusher).Flush()
		select { // then nothing, until the client gives up
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tr.url = "http://" + ln.Addr().String()
	return tr
}

// TestSlowRetrieval: a mirror that trickles a bundle cannot hold a phone.
// The stalled attempt is cut after the idle timeout, the next one resumes
// with a Range request and the install completes; when every attempt
// stalls, the cycle ends in a clear failure, the partial download is kept
// and the slots are untouched.
func TestSlowRetrieval(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	b, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, b); r.Code != 0 {
		t.Fatal("publish failed")
	}
	tr := startTrickler(t, s)
	once := func(p *systest.Phone) systest.Result {
		return systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, "--once", "--server", tr.url, "--broker", s.Broker(),
			"--state-dir", p.StateDir, "--model", model, "--hardware", hw, "--download-idle-timeout", "1s", "--download-attempts", "2")
	}

	// Every attempt stalls: a clear failure, nothing installed.
	tr.stallAll.Store(true)
	p := systest.Provision(t, s, "phone-1", model)
	before := p.SlotTree(t)
	start := time.Now()
	r := once(p)
	if r.Code != 1 || !strings.Contains(r.Stderr, "failed after 2 attempts") || !strings.Contains(r.Stderr, "no data for 1s") {
		t.Fatalf("agent against a stalling mirror exited %d; want 1 with a clear reason", r.Code)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("a stalling mirror held the agent for %s", took)
	}
	if after := p.SlotTree(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("slots changed after a failed download")
	}
	parts, _ := filepath.Glob(filepath.Join(p.StateDir, "download", "*.part"))
	if len(parts) != 1 {
		t.Fatalf("partial download not kept: %v", parts)
	}
	if fi, err := os.Stat(parts[0]); err != nil || fi.Size() == 0 {
		t.Fatalf("partial download empty: %v", err)
	}

	// The mirror recovers for range requests: the next check resumes.
	tr.stallAll.Store(false)
	ranges := tr.ranges.Load()
	if r := once(p); r.Code != 0 {
		t.Fatalf("resumed download exited %d", r.Code)
	}
	if tr.ranges.Load() == ranges {
		t.Fatal("the download did not resume with a Range request")
	}

	// A fresh phone: first attempt stalls, the second resumes, in one check.
	q := systest.Provision(t, s, "phone-2", model)
	stalls := tr.stalls.Load()
	if r := once(q); r.Code != 0 {
		t.Fatalf("stall then resume within one check exited %d", r.Code)
	}
	if tr.stalls.Load() != stalls+1 {
		t.Fatalf("%d stalled attempts, want 1", tr.stalls.Load()-stalls)
	}
}

// mirror is a hostile mirror in front of the server: it rewrites the
// answer for one path.
func startMirror(t *testing.T, s *systest.Server, rewrite func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	target, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = s.Transport(t) // the server is HTTPS; the mirror plain HTTP
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !rewrite(w, r) {
			proxy.ServeHTTP(w, r)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestHostileMirror: endless data (more bytes than the trusted length) and
// a rollback (an older timestamp than the phone has seen) are refused as
// security events, and the slots stay as they were.
func TestHostileMirror(t *testing.T) {
	buildBinaries(t)
	s := systest.StartServer(t, bins)
	// A timestamp older than any the phone will trust, whatever order the
	// subtests run in.
	oldTimestamp, err := os.ReadFile(filepath.Join(s.DataDir, "tuf", "metadata", "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := buildSigned(t, s, "1.1.0")
	if r := publish(t, s, b); r.Code != 0 {
		t.Fatal("publish failed")
	}
	p := systest.Provision(t, s, "phone-1", model)
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("install 1.1.0 exited %d", r.Code)
	}
	b2, _ := buildSigned(t, s, "1.2.0")
	if r := publish(t, s, b2); r.Code != 0 {
		t.Fatal("publish 1.2.0 failed")
	}
	once := func(server string) systest.Result {
		return systest.Run(t, []string{"DIALTONE_CONFIG=/dev/null"}, bins.Agent, "--once", "--server", server, "--broker", s.Broker(),
			"--state-dir", p.StateDir, "--model", model, "--hardware", hw)
	}
	tests := []struct {
		name    string
		rewrite func(w http.ResponseWriter, r *http.Request) bool
		reason  string
	}{
		{"endless data", func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/tuf/targets/") || strings.HasSuffix(r.URL.Path, ".sig") {
				return false
			}
			w.WriteHeader(http.StatusOK)
			chunk := make([]byte, 64<<10)
			for range 64 { // 4 MiB, far past the 800 KB target
				if _, err := w.Write(chunk); err != nil {
					break
				}
			}
			return true
		}, "more than the"},
		{"rollback to an older timestamp", func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/tuf/metadata/timestamp.json" {
				return false
			}
			w.Write(oldTimestamp)
			return true
		}, "metadata did not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := p.SlotTree(t)
			r := once(startMirror(t, s, tt.rewrite))
			if r.Code != 20 || !strings.Contains(r.Stderr, tt.reason) {
				t.Fatalf("agent behind the mirror exited %d; want 20 (refused) because %q", r.Code, tt.reason)
			}
			if after := p.SlotTree(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatal("slots changed although the update was refused")
			}
		})
	}
	// Straight from the server, the phone takes 1.2.0.
	if r := p.Once(t, s, model, hw); r.Code != 0 {
		t.Fatalf("update from the honest server exited %d", r.Code)
	}
}
