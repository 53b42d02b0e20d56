package cli_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" driver, to tamper with the file

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/cli"
	"github.com/dialtone-dev/dialtone/server/store"
)

// auditStore is a store the API serves, and a way to run SQL on its
// database behind the store's back.
type auditStore struct {
	st interface {
		api.Devices
		api.TokenStore
		store.Audit
	}
	tamper func(t *testing.T, query string)
}

func sqliteAuditStore(t *testing.T) auditStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dialtone.db")
	st, err := store.OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	db, err := sql.Open("sqlite", path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return auditStore{st: st, tamper: func(t *testing.T, q string) {
		t.Helper()
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("tampering with SQLite: %s: %v", q, err)
		}
	}}
}

// postgresDSN is the test server of server/store's tests (postgres_test.go).
func postgresDSN() string {
	if dsn := os.Getenv("DIALTONE_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

func postgresAuditStore(t *testing.T) auditStore {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "dialtone_test_" + hex.EncodeToString(b)
	st, err := store.OpenPostgres(t.Context(), postgresDSN(), store.WithSchema(schema))
	if err != nil {
		t.Fatalf("PostgreSQL at %s (set DIALTONE_TEST_POSTGRES): %v", postgresDSN(), err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, err := pgx.ParseConfig(postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := conn.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
		_ = conn.Close(context.Background())
	})
	return auditStore{st: st, tamper: func(t *testing.T, q string) {
		t.Helper()
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatalf("tampering with PostgreSQL: %s: %v", q, err)
		}
	}}
}

// auditServer serves the real API over as, its log holding six entries:
// five appended to the store, the sixth a token created through the API.
func auditServer(t *testing.T, as auditStore) {
	t.Helper()
	for i := 1; i <= 5; i++ {
		tenant := "acme"
		if i%2 == 0 {
			tenant = "globex"
		}
		_, err := as.st.AppendAudit(t.Context(), audit.Entry{Actor: "session:alice", ActorKind: "session", Tenant: tenant,
			Action: "PUT /v1/devices/{id}/desired", Target: fmt.Sprintf("id=phone%d", i), Remote: "192.0.2.1:5000", Status: 200,
			Before: json.RawMessage(`{"version":"1.0.0"}`), After: json.RawMessage(fmt.Sprintf(`{"version":"1.%d.0"}`, i))})
		if err != nil {
			t.Fatal(err)
		}
	}
	h, err := api.New(api.Options{Repo: noRepo{}, Devices: as.st, Tokens: as.st, Audit: as.st, AdminToken: apiToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/v1/tokens",
		strings.NewReader(`{"tenant":"acme","role":"viewer","ttl":3600000000000}`))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating a token: %s", resp.Status)
	}
	conf := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DIALTONE_CONFIG", conf)
	t.Setenv("DIALTONE_SERVER", srv.URL)
	t.Setenv("DIALTONE_TOKEN", apiToken)
}

// TestAuditTampering edits, deletes, reorders and inserts rows of the
// audit log directly in SQLite and PostgreSQL, and checks that `dialtone
// audit verify` reports each with its seq and kind.
func TestAuditTampering(t *testing.T) {
	const (
		cols    = `time, actor, actor_kind, tenant, action, target, before, after, remote, status, prev_hash, hash`
		swap2_3 = `UPDATE audit_log SET seq = 100 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 100`
	)
	cases := []struct {
		name  string
		query string
		want  []string // problem lines' starts, in order
	}{
		{"intact", "", nil},
		{"edited tenant", `UPDATE audit_log SET tenant = 'initech' WHERE seq = 3`, []string{"seq 3: edited:"}},
		{"edited after", `UPDATE audit_log SET after = '{"version":"6.6.6"}' WHERE seq = 2`, []string{"seq 2: edited:"}},
		{"edited into not JSON", `UPDATE audit_log SET before = 'not JSON' WHERE seq = 1`, []string{"seq 1: edited:"}},
		{"edited token entry", `UPDATE audit_log SET actor = 'session:mallory' WHERE seq = 6`, []string{"seq 6: edited:"}},
		{"deleted", `DELETE FROM audit_log WHERE seq = 4`, []string{"seq 4: removed:"}},
		{"deleted first", `DELETE FROM audit_log WHERE seq = 1`, []string{"seq 1: removed:"}},
		{"deleted last", `DELETE FROM audit_log WHERE seq >= 5`, []string{"seq 5: truncated:"}},
		{"deleted all", `DELETE FROM audit_log`, []string{"seq 1: truncated:"}},
		{"reordered", swap2_3, []string{"seq 2: reordered:", "seq 3: reordered:"}},
		{"inserted", `INSERT INTO audit_log (seq, ` + cols + `) SELECT 7, ` + cols + ` FROM audit_log WHERE seq = 6`, []string{"seq 7: inserted:"}},
	}
	for _, db := range []struct {
		name string
		open func(t *testing.T) auditStore
	}{
		{"SQLite", sqliteAuditStore},
		{"PostgreSQL", postgresAuditStore},
	} {
		t.Run(db.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					as := db.open(t)
					auditServer(t, as)
					if tc.query != "" {
						for q := range strings.SplitSeq(tc.query, "; ") {
							as.tamper(t, q)
						}
					}
					code, stdout, stderr := run(t, "audit", "verify")
					var problems []string
					for l := range strings.SplitSeq(stdout, "\n") {
						if strings.HasPrefix(l, "seq ") {
							problems = append(problems, l)
						}
					}
					if len(problems) != len(tc.want) {
						t.Fatalf("exit %d, problems:\n%s\nwant %q\n%s", code, stdout, tc.want, stderr)
					}
					for i, w := range tc.want {
						if !strings.HasPrefix(problems[i], w) {
							t.Errorf("problem %d = %q, want %q…", i, problems[i], w)
						}
					}
					wantCode := cli.ExitOK
					if tc.want != nil {
						wantCode = cli.ExitRejected
					}
					if code != wantCode {
						t.Errorf("exit %d, want %d\n%s%s", code, wantCode, stdout, stderr)
					}
					if tc.want == nil && !strings.Contains(stdout, "6 entries, head seq 6 hash ") {
						t.Errorf("intact log reads:\n%s", stdout)
					}
				})
			}
		})
	}
}

func TestAuditVerifyJSON(t *testing.T) {
	as := sqliteAuditStore(t)
	auditServer(t, as)
	as.tamper(t, `DELETE FROM audit_log WHERE seq = 2`)
	code, stdout, stderr := run(t, "audit", "verify", "-o", "json")
	if code != cli.ExitRejected {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep cli.AuditReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if rep.Entries != 5 || rep.Head.Seq != 6 || len(rep.Problems) != 1 || rep.Problems[0].Seq != 2 || rep.Problems[0].Kind != audit.Removed {
		t.Errorf("report %+v", rep)
	}
}

func TestAuditList(t *testing.T) {
	as := sqliteAuditStore(t)
	auditServer(t, as)

	code, stdout, stderr := run(t, "audit", "list", "--limit", "4")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[1], "session:alice") ||
		!strings.Contains(lines[1], "PUT /v1/devices/{id}/desired") || !strings.Contains(lines[1], "id=phone1") {
		t.Errorf("table:\n%s", stdout)
	}
	if !strings.Contains(stderr, "--after 4") {
		t.Errorf("no next page hint: %q", stderr)
	}

	code, stdout, stderr = run(t, "audit", "list", "--tenant", "acme", "--after", "1", "--all", "--limit", "1", "-o", "json")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var es []audit.Entry
	if err := json.Unmarshal([]byte(stdout), &es); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	var seqs []uint64
	for _, e := range es {
		seqs = append(seqs, e.Seq)
	}
	if fmt.Sprint(seqs) != "[3 5 6]" || es[2].Actor != "bootstrap:bootstrap" || es[2].Action != "POST /v1/tokens" || len(es[2].After) == 0 {
		t.Errorf("acme entries after 1: %v %+v", seqs, es)
	}
	if p := audit.Verify(es); p == nil {
		t.Error("a tenant's entries alone verified as a whole chain")
	}

	for _, args := range [][]string{{"--limit", "0"}, {"--limit", "1001"}, {"--tenant", "a b"}, {"-o", "yaml"}} {
		if code, _, _ := run(t, append([]string{"audit", "list"}, args...)...); code != cli.ExitUsage {
			t.Errorf("audit list %v: exit %d, want %d", args, code, cli.ExitUsage)
		}
	}
}
