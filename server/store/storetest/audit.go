package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/store"
)

// RunAudit runs the behaviour tests of store.Audit, each in a subtest with a
// database of its own. open must return n handles (n ≥ 1) on one new, empty
// database, as n replicas of the server would hold them, and close them
// with t.Cleanup.
func RunAudit(t *testing.T, open func(t *testing.T, n int) []store.Audit) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T, n int) []store.Audit)
	}{
		{"Empty", testAuditEmpty},
		{"Append", testAuditAppend},
		{"Filter", testAuditFilter},
		{"Invalid", testAuditInvalid},
		{"Concurrent", testAuditConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func auditEntry(i int, tenant string) audit.Entry {
	return audit.Entry{
		Actor: "token:ab12", ActorKind: "token", Tenant: tenant,
		Action: "PUT /v1/devices/{id}/desired", Target: fmt.Sprintf("id=phone%d", i),
		Before: json.RawMessage(`{"version": "1.0.0", "a": 1}`), After: json.RawMessage(fmt.Sprintf(`{"version":"1.0.%d"}`, i)),
		Remote: "192.0.2.7:50000", Status: 200,
	}
}

// listAll pages through the whole log.
func listAll(t *testing.T, s store.Audit, limit int) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	var after uint64
	for {
		page, err := s.ListAudit(context.Background(), store.AuditFilter{AfterSeq: after, Limit: limit})
		if err != nil {
			t.Fatalf("ListAudit(after %d): %v", after, err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].Seq
	}
}

func head(t *testing.T, s store.Audit) audit.Head {
	t.Helper()
	h, err := s.AuditHead(context.Background())
	if err != nil {
		t.Fatalf("AuditHead: %v", err)
	}
	return h
}

func testAuditEmpty(t *testing.T, open func(t *testing.T, n int) []store.Audit) {
	s := open(t, 1)[0]
	if h := head(t, s); h.Seq != 0 || !bytes.Equal(h.Hash, audit.Genesis) {
		t.Errorf("empty head = %d %x, want 0 and genesis", h.Seq, h.Hash)
	}
	es, err := s.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil || es == nil || len(es) != 0 {
		t.Errorf("ListAudit = %v, %v; want an empty, non-nil list", es, err)
	}
}

func testAuditAppend(t *testing.T, open func(t *testing.T, n int) []store.Audit) {
	s := open(t, 1)[0]
	ctx := context.Background()
	var appended []audit.Entry
	for i := 1; i <= 3; i++ {
		in := auditEntry(i, "acme")
		if i == 2 {
			in.Time = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
			in.Before = nil
		}
		if i == 3 {
			in.After = json.RawMessage(`null`)
		}
		e, err := s.AppendAudit(ctx, in)
		if err != nil {
			t.Fatalf("AppendAudit %d: %v", i, err)
		}
		if e.Seq != uint64(i) || len(e.Hash) != 32 || e.Time.IsZero() || e.Time.Location() != time.UTC {
			t.Fatalf("AppendAudit %d = seq %d hash %x time %v", i, e.Seq, e.Hash, e.Time)
		}
		appended = append(appended, e)
	}
	if !appended[1].Time.Equal(time.Date(2026, 11, 25, 9, 0, 0, 123456000, time.UTC)) {
		t.Errorf("given time stored as %v, want it in UTC at microseconds", appended[1].Time)
	}
	if string(appended[0].Before) != `{"a":1,"version":"1.0.0"}` || appended[1].Before != nil || appended[2].After != nil {
		t.Errorf("documents not canonical: %s %s %s", appended[0].Before, appended[1].Before, appended[2].After)
	}
	got := listAll(t, s, 2)
	if len(got) != 3 {
		t.Fatalf("listed %d entries, want 3", len(got))
	}
	for i, e := range got {
		a := appended[i]
		if e.Seq != a.Seq || !e.Time.Equal(a.Time) || e.Time.Location() != time.UTC || e.Actor != a.Actor || e.ActorKind != a.ActorKind ||
			e.Tenant != a.Tenant || e.Action != a.Action || e.Target != a.Target || !bytes.Equal(e.Before, a.Before) ||
			!bytes.Equal(e.After, a.After) || e.Remote != a.Remote || e.Status != a.Status ||
			!bytes.Equal(e.PrevHash, a.PrevHash) || !bytes.Equal(e.Hash, a.Hash) {
			t.Errorf("listed %+v\nappended %+v", e, a)
		}
	}
	if p := audit.Verify(got); p != nil {
		t.Errorf("Verify = %v", p)
	}
	h := head(t, s)
	if p := audit.CheckHead(got, h, h); p != nil || h.Seq != 3 || !bytes.Equal(h.Hash, got[2].Hash) {
		t.Errorf("head %d %x: %v", h.Seq, h.Hash, p)
	}
}

func testAuditFilter(t *testing.T, open func(t *testing.T, n int) []store.Audit) {
	s := open(t, 1)[0]
	ctx := context.Background()
	for i := 1; i <= 6; i++ {
		tenant := "acme"
		if i%2 == 0 {
			tenant = "globex"
		}
		if _, err := s.AppendAudit(ctx, auditEntry(i, tenant)); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(f store.AuditFilter) []uint64 {
		t.Helper()
		es, err := s.ListAudit(ctx, f)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", f, err)
		}
		out := []uint64{}
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		f    store.AuditFilter
		want string
	}{
		{store.AuditFilter{}, "[1 2 3 4 5 6]"},
		{store.AuditFilter{AfterSeq: 4}, "[5 6]"},
		{store.AuditFilter{Limit: 2, AfterSeq: 1}, "[2 3]"},
		{store.AuditFilter{Tenant: "globex"}, "[2 4 6]"},
		{store.AuditFilter{Tenant: "globex", AfterSeq: 2, Limit: 1}, "[4]"},
		{store.AuditFilter{Tenant: "initech"}, "[]"},
		{store.AuditFilter{Tenants: []string{"globex", "initech"}}, "[2 4 6]"},
		{store.AuditFilter{Tenants: []string{"acme", "globex"}, Limit: 3}, "[1 2 3]"},
		{store.AuditFilter{Tenants: []string{}}, "[]"},
		{store.AuditFilter{Tenant: "acme", Tenants: []string{"globex"}}, "[]"},
		{store.AuditFilter{AfterSeq: 1 << 63}, "[]"},
		{store.AuditFilter{AfterSeq: ^uint64(0)}, "[]"},
	} {
		if got := fmt.Sprint(seqs(tc.f)); got != tc.want {
			t.Errorf("ListAudit(%+v) = %s, want %s", tc.f, got, tc.want)
		}
	}
	for _, l := range []int{-1, store.MaxAuditLimit + 1} {
		if _, err := s.ListAudit(ctx, store.AuditFilter{Limit: l}); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("limit %d: %v, want wire.ErrInvalid", l, err)
		}
	}
}

func testAuditInvalid(t *testing.T, open func(t *testing.T, n int) []store.Audit) {
	s := open(t, 1)[0]
	ctx := context.Background()
	if _, err := s.AppendAudit(ctx, auditEntry(1, "acme")); err != nil {
		t.Fatal(err)
	}
	before := head(t, s)
	for name, mod := range map[string]func(e *audit.Entry){
		"no actor":        func(e *audit.Entry) { e.Actor = "" },
		"no action":       func(e *audit.Entry) { e.Action = "" },
		"NUL in target":   func(e *audit.Entry) { e.Target = "a\x00b" },
		"bad UTF-8":       func(e *audit.Entry) { e.Tenant = "\xff" },
		"before not JSON": func(e *audit.Entry) { e.Before = json.RawMessage(`{`) },
		"after too big": func(e *audit.Entry) {
			e.After = json.RawMessage(`"` + string(bytes.Repeat([]byte("x"), store.MaxAuditDocBytes)) + `"`)
		},
	} {
		e := auditEntry(2, "acme")
		mod(&e)
		if _, err := s.AppendAudit(ctx, e); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("%s: AppendAudit = %v, want wire.ErrInvalid", name, err)
		}
	}
	if h := head(t, s); h.Seq != before.Seq || !bytes.Equal(h.Hash, before.Hash) {
		t.Errorf("refused appends moved the head from %d to %d", before.Seq, h.Seq)
	}
	if es := listAll(t, s, 0); len(es) != 1 {
		t.Errorf("refused appends left %d entries, want 1", len(es))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.AppendAudit(cctx, auditEntry(3, "acme")); err == nil {
		t.Error("AppendAudit with a canceled context succeeded")
	}
}

// testAuditConcurrent appends from many goroutines over several handles on
// the same database (replicas): the chain must come out whole, without
// forks or gaps.
func testAuditConcurrent(t *testing.T, open func(t *testing.T, n int) []store.Audit) {
	const replicas, workers, each = 3, 12, 15
	ss := open(t, replicas)
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			s := ss[w%len(ss)]
			for i := range each {
				if _, err := s.AppendAudit(context.Background(), auditEntry(w*each+i, "acme")); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent AppendAudit: %v", err)
	}
	got := listAll(t, ss[0], store.MaxAuditLimit)
	if len(got) != workers*each {
		t.Fatalf("%d entries, want %d", len(got), workers*each)
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
	}
	if p := audit.Verify(got); p != nil {
		t.Fatalf("Verify after concurrent appends: %v", p)
	}
	h := head(t, ss[len(ss)-1])
	if p := audit.CheckHead(got, h, h); p != nil || h.Seq != workers*each {
		t.Fatalf("head %d: %v", h.Seq, p)
	}
}
