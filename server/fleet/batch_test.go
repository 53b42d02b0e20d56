package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// The PostgreSQL server the tests use, as in package store: each test works
// in a schema of its own, dropped when it ends.
const (
	postgresEnv        = "DIALTONE_TEST_POSTGRES"
	postgresDefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// storeKinds open an empty store of each kind for one test.
var storeKinds = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// openPostgres opens a store in a fresh schema, failing (never skipping)
// with directions when there is no server: a PostgreSQL path left untested
// must not pass as one that works.
func openPostgres(t *testing.T) store.Store {
	t.Helper()
	dsn := os.Getenv(postgresEnv)
	if dsn == "" {
		dsn = postgresDefaultDSN
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "dialtone_test_fleet_" + hex.EncodeToString(b)
	st, err := store.OpenPostgres(t.Context(), dsn, store.WithSchema(schema))
	if err != nil {
		t.Fatalf("opening PostgreSQL: %v\nThese tests need a PostgreSQL server whose user may create schemas: "+
			"set %s to its URL (default %s).", err, postgresEnv, postgresDefaultDSN)
	}
	t.Cleanup(func() {
		_ = st.Close()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return st
}

// newBatching returns a batching Ingester, closed when the test ends.
func newBatching(t *testing.T, st Store, o Options) *Ingester {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ing := New(t.Context(), st, o)
	t.Cleanup(func() { _ = ing.Close() })
	return ing
}

// gatedStore holds the first batch write until release is closed, so that
// a test can queue reports behind it: they then form the next batch.
type gatedStore struct {
	Store
	entered, release chan struct{}
	once             sync.Once
}

func newGatedStore(st Store) *gatedStore {
	return &gatedStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedStore) hold() {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
}

func (g *gatedStore) UpsertStates(ctx context.Context, tenant string, sts []wire.State, received time.Time) error {
	g.hold()
	return g.Store.UpsertStates(ctx, tenant, sts, received)
}

func (g *gatedStore) AddEvents(ctx context.Context, tenant string, es []wire.Event, received time.Time) (int, error) {
	g.hold()
	return g.Store.AddEvents(ctx, tenant, es, received)
}

// waitQueued waits until n reports wait in ing's queue.
func waitQueued(t *testing.T, ing *Ingester, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ing.mu.Lock()
		q := len(ing.queue)
		ing.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reports queued after 10s, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// report is one message for Handle.
type report struct{ topic, payload string }

func eventReport(t testing.TB, tenant, device, id string) report {
	t.Helper()
	return report{
		topic: "dialtone/v1/" + tenant + "/" + device + "/events",
		payload: string(eventJSON(t, func(e *wire.Event) {
			// One Seq for all: Events then returns a device's events in the
			// order they were stored.
			e.ID, e.Device, e.Seq = id, device, 1
		})),
	}
}

func stateReport(t testing.TB, tenant, device string, at time.Time) report {
	t.Helper()
	return report{
		topic:   "dialtone/v1/" + tenant + "/" + device + "/state",
		payload: string(stateJSON(t, func(s *wire.State) { s.Tenant, s.Device, s.Time = tenant, device, at })),
	}
}

// handleAll hands each report to Handle on a goroutine of its own and
// returns the errors, in the order of rs.
func handleAll(ctx context.Context, ing *Ingester, rs []report) []error {
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for k, r := range rs {
		wg.Go(func() { errs[k] = ing.Handle(ctx, r.topic, []byte(r.payload)) })
	}
	wg.Wait()
	return errs
}

// TestBatchConcurrent: connections (goroutines) each report for their own
// devices, one report after the other as the embedded broker hands them
// over, redelivering some. Every event is stored exactly once, in the order
// it was handed over, the counters add up, and batches form.
func TestBatchConcurrent(t *testing.T) {
	const (
		conns     = 8
		perConn   = 4  // devices per connection
		perDevice = 40 // events per device
	)
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			st := kind.open(t)
			ing := newBatching(t, st, Options{})
			var (
				wg                  sync.WaitGroup
				states, redelivered atomic.Uint64
			)
			for c := range conns {
				wg.Go(func() {
					tenant := fmt.Sprintf("t%d", c%3)
					for k := range perDevice {
						for d := range perConn {
							dev := fmt.Sprintf("c%02d-d%d", c, d)
							r := eventReport(t, tenant, dev, fmt.Sprintf("e-%03d", k))
							n := 1
							if k%7 == 3 {
								n = 2 // a redelivery right after the original
								redelivered.Add(1)
							}
							for range n {
								if err := ing.Handle(t.Context(), r.topic, []byte(r.payload)); err != nil {
									t.Errorf("Handle(%s): %v", r.topic, err)
									return
								}
							}
							if k%10 == 0 {
								s := stateReport(t, tenant, dev, t0.Add(time.Duration(k)*time.Second))
								if err := ing.Handle(t.Context(), s.topic, []byte(s.payload)); err != nil {
									t.Errorf("Handle(%s): %v", s.topic, err)
									return
								}
								states.Add(1)
							}
						}
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			events := uint64(conns * perConn * perDevice)
			s := ing.Stats()
			want := Stats{Stored: events + states.Load(), Duplicates: redelivered.Load(), Batches: s.Batches}
			if s != want {
				t.Errorf("Stats = %+v, want %+v", s, want)
			}
			writes := events + redelivered.Load() + states.Load()
			t.Logf("%d reports in %d store writes", writes, s.Batches)
			if s.Batches == 0 || s.Batches >= writes {
				t.Errorf("%d store writes for %d reports: no batches formed", s.Batches, writes)
			}
			want0 := make([]string, perDevice)
			for k := range want0 {
				want0[k] = fmt.Sprintf("e-%03d", k)
			}
			for c := range conns {
				for d := range perConn {
					dev := fmt.Sprintf("c%02d-d%d", c, d)
					evs, err := st.Events(t.Context(), dev, 0)
					if err != nil {
						t.Fatal(err)
					}
					ids := make([]string, len(evs))
					for k, e := range evs {
						ids[k] = e.Event.ID
					}
					if !slices.Equal(ids, want0) {
						t.Errorf("%s: events %v, want %v", dev, ids, want0)
					}
				}
			}
			devs, err := st.ListDevices(t.Context(), store.DeviceFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(devs) != conns*perConn {
				t.Errorf("%d devices, want %d", len(devs), conns*perConn)
			}
		})
	}
}

// TestBatchForms: reports that arrive while a batch is being written are
// all written by the next one, in two store writes (states, events) per
// tenant.
func TestBatchForms(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			g := newGatedStore(kind.open(t))
			ing := newBatching(t, g, Options{})
			first := make(chan error, 1)
			go func() {
				r := eventReport(t, "acme", "first", "e-1")
				first <- ing.Handle(t.Context(), r.topic, []byte(r.payload))
			}()
			<-g.entered
			var rs []report
			for d := range 100 {
				dev := fmt.Sprintf("d%03d", d)
				rs = append(rs, eventReport(t, "acme", dev, "e-1"), stateReport(t, "acme", dev, t0))
			}
			done := make(chan []error, 1)
			go func() { done <- handleAll(t.Context(), ing, rs) }()
			waitQueued(t, ing, len(rs))
			close(g.release)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			for k, err := range <-done {
				if err != nil {
					t.Errorf("Handle(%s): %v", rs[k].topic, err)
				}
			}
			if got, want := ing.Stats(), (Stats{Stored: 201, Batches: 3}); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
		})
	}
}

// TestBatchBadReport: a report the store refuses (a device of another
// tenant, a value out of its range) fails alone; the rest of its batch is
// stored, and OnReject hears of it.
func TestBatchBadReport(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			st := kind.open(t)
			if err := st.UpsertState(t.Context(), "acme", wire.State{
				Schema: wire.SchemaVersion, Tenant: "acme", Device: "taken", Time: t0,
			}, t0); err != nil {
				t.Fatal(err)
			}
			g := newGatedStore(st)
			var (
				mu       sync.Mutex
				rejected []string
				stored   []string
			)
			ing := newBatching(t, g, Options{
				OnReject: func(topic string, err error) {
					mu.Lock()
					defer mu.Unlock()
					rejected = append(rejected, topic)
				},
				OnEvent: func(tenant string, e wire.Event) {
					mu.Lock()
					defer mu.Unlock()
					stored = append(stored, tenant+"/"+e.Device+"/"+e.ID)
				},
			})
			first := make(chan error, 1)
			go func() {
				r := eventReport(t, "globex", "first", "e-1")
				first <- ing.Handle(t.Context(), r.topic, []byte(r.payload))
			}()
			<-g.entered

			hugeSeq := report{
				topic: "dialtone/v1/globex/g-huge/events",
				payload: string(eventJSON(t, func(e *wire.Event) {
					e.ID, e.Device, e.Seq = "e-1", "g-huge", 1<<64-1
				})),
			}
			rs := []report{
				eventReport(t, "globex", "g-0", "e-1"),
				eventReport(t, "globex", "taken", "e-1"), // acme's device
				stateReport(t, "globex", "g-0", t0),
				stateReport(t, "globex", "taken", t0), // acme's device
				hugeSeq,                               // out of the store's range
				eventReport(t, "globex", "g-1", "e-1"),
				stateReport(t, "globex", "g-1", t0),
				eventReport(t, "acme", "a-0", "e-1"), // another tenant's batch
			}
			bad := map[int]error{1: store.ErrConflict, 3: store.ErrConflict, 4: wire.ErrInvalid}
			done := make(chan []error, 1)
			go func() { done <- handleAll(t.Context(), ing, rs) }()
			waitQueued(t, ing, len(rs))
			close(g.release)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			for k, err := range <-done {
				want := bad[k]
				switch {
				case want == nil && err != nil:
					t.Errorf("Handle(%s): %v", rs[k].topic, err)
				case want != nil && (!errors.Is(err, want) || Retryable(err)):
					t.Errorf("Handle(%s) = %v, want %v (not retryable)", rs[k].topic, err, want)
				}
			}
			if got, want := ing.Stats(), (Stats{Stored: 6, Rejected: 3, Batches: ing.Stats().Batches}); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(rejected)
			wantRejected := []string{rs[4].topic, rs[3].topic, rs[1].topic}
			slices.Sort(wantRejected)
			if !slices.Equal(rejected, wantRejected) {
				t.Errorf("OnReject heard of %v, want %v", rejected, wantRejected)
			}
			slices.Sort(stored)
			wantStored := []string{"acme/a-0/e-1", "globex/first/e-1", "globex/g-0/e-1", "globex/g-1/e-1"}
			if !slices.Equal(stored, wantStored) {
				t.Errorf("OnEvent heard of %v, want %v", stored, wantStored)
			}
			for _, dev := range []string{"g-0", "g-1", "a-0"} {
				if n, err := st.CountEvents(t.Context(), dev); err != nil || n != 1 {
					t.Errorf("CountEvents(%s) = %d, %v; want 1", dev, n, err)
				}
			}
			if n, err := st.CountEvents(t.Context(), "taken"); err != nil || n != 0 {
				t.Errorf("CountEvents(taken) = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestBatchStoreFailure: when the store fails a batch, every report of it
// fails with a retryable error, and nothing is retried one by one.
func TestBatchStoreFailure(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			st := kind.open(t)
			g := newGatedStore(st)
			ing := newBatching(t, g, Options{})
			first := make(chan error, 1)
			go func() {
				r := eventReport(t, "acme", "first", "e-1")
				first <- ing.Handle(t.Context(), r.topic, []byte(r.payload))
			}()
			<-g.entered
			var rs []report
			for d := range 20 {
				rs = append(rs, eventReport(t, "acme", fmt.Sprintf("d%02d", d), "e-1"))
			}
			rs = append(rs, stateReport(t, "acme", "d00", t0))
			done := make(chan []error, 1)
			go func() { done <- handleAll(t.Context(), ing, rs) }()
			waitQueued(t, ing, len(rs))
			_ = st.Close() // the database goes away
			close(g.release)
			if err := <-first; !Retryable(err) {
				t.Errorf("first report: err = %v, want a retryable one", err)
			}
			for k, err := range <-done {
				if !Retryable(err) {
					t.Errorf("Handle(%s) = %v, want a retryable error", rs[k].topic, err)
				}
			}
			if got, want := ing.Stats(), (Stats{Failed: uint64(len(rs) + 1), Batches: 3}); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
		})
	}
}

// TestBatchLifetime: Close stores what is queued, then Handle fails with
// ErrClosed; the end of New's context does the same; a caller whose context
// ends while it waits gets a retryable error, and its report is skipped.
func TestBatchLifetime(t *testing.T) {
	r := eventReport(t, "acme", "phone-1", "e-1")
	t.Run("close", func(t *testing.T) {
		ms := newMemStore()
		ing := New(t.Context(), ms, Options{})
		if err := ing.Handle(t.Context(), r.topic, []byte(r.payload)); err != nil {
			t.Fatal(err)
		}
		if err := ing.Close(); err != nil {
			t.Fatal(err)
		}
		_ = ing.Close()
		err := ing.Handle(t.Context(), r.topic, []byte(r.payload))
		if !errors.Is(err, ErrClosed) || !Retryable(err) {
			t.Errorf("Handle after Close = %v, want ErrClosed", err)
		}
		if ms.writes() != 1 {
			t.Errorf("%d writes, want 1", ms.writes())
		}
	})
	t.Run("close drains", func(t *testing.T) {
		g := newGatedStore(newMemStore())
		ing := New(t.Context(), g, Options{})
		errs := make(chan error, 3)
		go func() { errs <- ing.Handle(t.Context(), r.topic, []byte(r.payload)) }()
		<-g.entered
		for _, id := range []string{"e-2", "e-3"} {
			r := eventReport(t, "acme", "phone-1", id)
			go func() { errs <- ing.Handle(t.Context(), r.topic, []byte(r.payload)) }()
		}
		waitQueued(t, ing, 2)
		closed := make(chan struct{})
		go func() { _ = ing.Close(); close(closed) }()
		close(g.release)
		<-closed
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("Handle: %v", err)
			}
		}
		if got := ing.Stats().Stored; got != 3 {
			t.Errorf("Stored = %d, want 3", got)
		}
	})
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		ing := New(ctx, newMemStore(), Options{})
		cancel()
		err := ing.Handle(t.Context(), r.topic, []byte(r.payload))
		if !errors.Is(err, ErrClosed) || !Retryable(err) {
			t.Errorf("Handle after the context ended = %v, want ErrClosed", err)
		}
		_ = ing.Close()
	})
	t.Run("caller gives up", func(t *testing.T) {
		ms := newMemStore()
		g := newGatedStore(ms)
		ing := newBatching(t, g, Options{})
		first := make(chan error, 1)
		go func() { first <- ing.Handle(t.Context(), r.topic, []byte(r.payload)) }()
		<-g.entered
		ctx, cancel := context.WithCancel(t.Context())
		late := make(chan error, 1)
		r2 := eventReport(t, "acme", "phone-1", "e-2")
		go func() { late <- ing.Handle(ctx, r2.topic, []byte(r2.payload)) }()
		waitQueued(t, ing, 1)
		cancel()
		if err := <-late; !errors.Is(err, context.Canceled) || !Retryable(err) {
			t.Errorf("Handle with its context canceled = %v, want context.Canceled", err)
		}
		close(g.release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		_ = ing.Close()
		if ms.writes() != 1 {
			t.Errorf("%d writes, want 1 (the abandoned report skipped)", ms.writes())
		}
	})
}

// TestBatchMaxBatch: a batch never takes more than MaxBatch reports.
func TestBatchMaxBatch(t *testing.T) {
	g := newGatedStore(newMemStore())
	ing := newBatching(t, g, Options{MaxBatch: 4})
	first := make(chan error, 1)
	go func() {
		r := eventReport(t, "acme", "first", "e-1")
		first <- ing.Handle(t.Context(), r.topic, []byte(r.payload))
	}()
	<-g.entered
	var rs []report
	for d := range 10 {
		rs = append(rs, eventReport(t, "acme", fmt.Sprintf("d%02d", d), "e-1"))
	}
	done := make(chan []error, 1)
	go func() { done <- handleAll(t.Context(), ing, rs) }()
	waitQueued(t, ing, len(rs))
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for _, err := range <-done {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, want := ing.Stats(), (Stats{Stored: 11, Batches: 4}); got != want { // 1, then 4+4+2
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}
