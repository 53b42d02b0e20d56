package tufrepo

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Handler serves the repository: GET /metadata/... and /targets/... relative
// to where it is mounted (strip the mount prefix before it). Versioned files
// are immutable and say so; timestamp.json may be cached only briefly.
// http.ServeContent gives Range (206) and If-None-Match (304) handling to
// metadata and to target files in the default targets/ folder; target files
// in another bucket get the same from serveBucketTarget. A target file's
// ETag is the SHA-256 its name carries.
func (r *Repo) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := strings.TrimPrefix(req.URL.Path, "/")
		top, rest, _ := strings.Cut(p, "/")
		if (top != metadataDir && top != targetsDir) || !safeRel(rest) {
			http.NotFound(w, req)
			return
		}
		st := r.current()
		if top == metadataDir && rest == "timestamp.json" {
			h := w.Header()
			h.Set("Cache-Control", "public, max-age=10")
			h.Set("Content-Type", "application/json")
			etag := fmt.Sprintf(`"ts-%d"`, st.timestamp.Signed.Version)
			h.Set("ETag", etag)
			if req.Header.Get("Range") != "" {
				http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(st.timestampJSON))
				return
			}
			// The hot path of every phone's update check: answer it with
			// one write (ServeContent sends headers and body separately).
			if inm := req.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			h.Set("Content-Length", strconv.Itoa(len(st.timestampJSON)))
			w.WriteHeader(http.StatusOK)
			if req.Method != http.MethodHead {
				_, _ = w.Write(st.timestampJSON)
			}
			return
		}
		if top == targetsDir {
			etag, ok := targetETag(rest)
			if !ok {
				http.NotFound(w, req)
				return
			}
			if r.localTargets != "" {
				r.serveLocalTarget(w, req, rest, etag)
			} else {
				r.serveBucketTarget(w, req, rest, etag)
			}
			return
		}
		// A root version newer than the installed state is not served yet:
		// it may be mid-push, and a client must not see it before the
		// targets metadata it vouches for.
		if m := versionedRe.FindStringSubmatch(rest); m != nil && m[2] == "root" {
			if v, _ := strconv.ParseInt(m[1], 10, 64); v > st.root.Signed.Version {
				http.NotFound(w, req)
				return
			}
		}
		// Every versioned metadata file is immutable once written.
		serveFile(w, req, filepath.Join(r.dir, metadataDir, filepath.FromSlash(rest)), contentType(rest), func(fi os.FileInfo) string {
			return fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano())
		})
	})
}

// serveFile serves an immutable file from disk through http.ServeContent
// (Range, conditional requests, sendfile).
func serveFile(w http.ResponseWriter, req *http.Request, name, ctype string, etag func(os.FileInfo) string) {
	f, err := os.Open(name)
	if err != nil {
		http.NotFound(w, req)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, req)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", immutableCache)
	h.Set("Content-Type", ctype)
	h.Set("ETag", etag(fi))
	http.ServeContent(w, req, "", fi.ModTime(), f)
}

// etagMatch implements If-None-Match's weak comparison against one ETag.
func etagMatch(header, etag string) bool {
	for _, c := range strings.Split(header, ",") {
		c = strings.TrimSpace(c)
		if c == "*" || strings.TrimPrefix(c, "W/") == etag {
			return true
		}
	}
	return false
}
