package tufrepo

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// Handler serves the repository: GET /metadata/... and /targets/... relative
// to where it is mounted (strip the mount prefix before it). Versioned files
// are immutable and say so; timestamp.json may be cached only briefly.
// http.ServeContent gives Range (206) and If-None-Match (304) handling.
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
		name := filepath.Join(r.dir, top, filepath.FromSlash(rest))
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
		if top == metadataDir && rest == "timestamp.json" {
			h.Set("Cache-Control", "public, max-age=10")
		} else {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		if strings.HasSuffix(rest, ".json") {
			h.Set("Content-Type", "application/json")
		} else {
			h.Set("Content-Type", "application/octet-stream")
		}
		// Size and modification time change whenever the file is replaced
		// (timestamp.json) and never otherwise (immutable files).
		h.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
		http.ServeContent(w, req, "", fi.ModTime(), f)
	})
}
