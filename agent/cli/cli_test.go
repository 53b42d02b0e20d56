package cli

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// TestServerCA: --server-ca makes the agent trust a server whose
// certificate no system root issued; a missing or empty bundle is an
// error, and without the flag the agent keeps update's default client.
func TestServerCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if hc, err := (&runOptions{}).serverHTTPClient(); hc != nil || err != nil {
		t.Fatalf("without --server-ca: %v, %v", hc, err)
	}
	hc, err := (&runOptions{ServerCA: ca}).serverHTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatalf("with --server-ca: %v", err)
	}
	resp.Body.Close()
	if _, err := (&http.Client{}).Get(srv.URL); err == nil {
		t.Fatal("the test server's certificate is trusted without its CA")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("no certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{empty, filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := (&runOptions{ServerCA: bad}).serverHTTPClient(); err == nil {
			t.Errorf("--server-ca %s: no error", bad)
		}
	}
}
