package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/dialtone-dev/dialtone/server/fleet"
	"github.com/dialtone-dev/dialtone/server/store"
)

// The ingest benchmark: devices publish QoS 1 events to the embedded
// broker, in process, as fast as their PUBACKs allow (a sliding window of
// in-flight publishes each). The reference is the same broker delivering
// them to a server-side subscription that discards them; the subjects have
// the broker hand them to fleet.Ingester (decode, check, store) before
// acknowledging them, on SQLite and on PostgreSQL. Every run gets a fresh
// broker, fresh connections and a fresh, empty store, and ends by checking
// that the store holds exactly the events sent.

const (
	ingestTenant = "bench"
	ingestTopics = "dialtone/v1/+/+/events"
)

// ingestSide is one way the broker's messages end.
type ingestSide struct {
	name  string // "reference", "sqlite", "postgres"
	label string
}

// ingestResult is one run's outcome.
type ingestResult struct {
	msgs    int
	elapsed time.Duration
	stats   fleet.Stats   // subjects only
	writing time.Duration // subjects: time spent in the store's batch writes
}

// busy is the share of the run the writer spent in store writes.
func (r ingestResult) busy() float64 { return r.writing.Seconds() / r.elapsed.Seconds() }

func (r ingestResult) rate() float64 { return float64(r.msgs) / r.elapsed.Seconds() }

// reportsPerWrite is how many reports one store write took on average.
func (r ingestResult) reportsPerWrite() float64 {
	if r.stats.Batches == 0 {
		return 1
	}
	return float64(r.stats.Stored+r.stats.Duplicates) / float64(r.stats.Batches)
}

func benchIngest(cfg config) ([]row, error) {
	batching := "batching up to 512 reports per store write"
	switch {
	case cfg.ingestBatch == 1:
		batching = "no batching (a transaction per report)"
	case cfg.ingestBatch > 1:
		batching = fmt.Sprintf("batching up to %d reports per store write", cfg.ingestBatch)
	}
	logf("== ingest: %d devices × %d QoS 1 events, %d in flight per device, %d rounds; %s",
		cfg.ingestDevices, cfg.ingestEvents, cfg.ingestWindow, cfg.ingestRounds, batching)
	dir := filepath.Join(cfg.workdir, "ingest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	sides := []ingestSide{
		{"reference", "broker → discarding subscriber"},
		{"sqlite", "broker → fleet.Ingester → SQLite"},
		{"postgres", "broker → fleet.Ingester → PostgreSQL"},
	}
	pgErr := pingPostgres(cfg.postgres)
	if pgErr != nil {
		logf("   PostgreSQL unavailable (%v): its figure is skipped; set -postgres or DIALTONE_TEST_POSTGRES", pgErr)
		sides = sides[:2]
	}
	payloads := ingestPayloads(cfg.ingestDevices, cfg.ingestEvents)

	results := map[string][]ingestResult{}
	ratios := map[string][]float64{}
	for round := range cfg.ingestRounds {
		order := sides
		if round%2 == 1 { // alternate the order, so that drift favours no side
			order = make([]ingestSide, 0, len(sides))
			for i := len(sides) - 1; i >= 0; i-- {
				order = append(order, sides[i])
			}
		}
		byName := map[string]ingestResult{}
		for _, s := range order {
			r, err := ingestRun(cfg, s, dir, round, payloads)
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", s.name, round+1, err)
			}
			byName[s.name] = r
			results[s.name] = append(results[s.name], r)
		}
		line := fmt.Sprintf("   round %d: reference %7.0f msg/s", round+1, byName["reference"].rate())
		for _, s := range sides[1:] {
			r := byName[s.name]
			ratio := r.rate() / byName["reference"].rate()
			ratios[s.name] = append(ratios[s.name], ratio)
			line += fmt.Sprintf("   %s %7.0f msg/s (ratio %.3f", s.name, r.rate(), ratio)
			if r.stats.Batches > 0 {
				line += fmt.Sprintf(", %.1f reports per store write, writer busy %.0f%%", r.reportsPerWrite(), 100*r.busy())
			}
			line += ")"
		}
		logf("%s", line)
	}

	rates := func(name string) []float64 {
		var xs []float64
		for _, r := range results[name] {
			xs = append(xs, r.rate())
		}
		return xs
	}
	ref := rates("reference")
	logf("   reference: %s msg/s (spread %.0f%%)", fmtSeries(ref, "%.0f"), spread(ref))
	suffix := ""
	if cfg.ingestBatch == 1 {
		suffix = ", unbatched"
	}
	var rows []row
	for _, s := range sides[1:] {
		xs := rates(s.name)
		var per []float64
		for _, r := range results[s.name] {
			per = append(per, r.reportsPerWrite())
		}
		logf("   %s: %s msg/s (spread %.0f%%)", s.name, fmtSeries(xs, "%.0f"), spread(xs))
		r := row{name: "ingest " + s.name + suffix + " (msg/s)", value: median(xs), ref: median(ref), unit: "msg/s",
			refName: "broker → discard", ratio: median(ratios[s.name]), rounds: ratios[s.name]}
		if s.name == "sqlite" {
			r.min = 0.5
		}
		rows = append(rows, r)
		rows = append(rows, row{name: "  reports per store write (" + s.name + ")", value: median(per), ref: -1, ratio: -1, target: "-"})
	}
	if pgErr != nil {
		rows = append(rows, row{name: "ingest postgres (msg/s)", value: -1, ref: median(ref), unit: "msg/s",
			refName: "broker → discard", ratio: -1, failNote: "PostgreSQL unavailable"})
	}
	return rows, nil
}

// ingestPayloads are the events each device sends, made before any run so
// that marshalling is not measured. Event IDs are unique per device; every
// run starts with an empty store.
func ingestPayloads(devices, events int) [][][]byte {
	t := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	out := make([][][]byte, devices)
	for d := range devices {
		dev := ingestDevice(d)
		out[d] = make([][]byte, events)
		for k := range events {
			b, err := json.Marshal(wire.Event{
				Schema: wire.SchemaVersion, ID: fmt.Sprintf("e-%06d", k), Device: dev, Seq: uint64(k + 1),
				Time: t.Add(time.Duration(k) * time.Millisecond), Type: wire.EventCheck, Version: "1.4.0",
				Fields: map[string]string{"result": "up-to-date"},
			})
			if err != nil {
				panic(err) // a wire.Event always marshals
			}
			out[d][k] = b
		}
	}
	return out
}

func ingestDevice(d int) string { return fmt.Sprintf("bench-%04d", d) }

// ingestRun is one run of one side: a fresh broker (and store), every
// device connected, then all publishing at once; it lasts until the last
// PUBACK.
func ingestRun(cfg config, side ingestSide, dir string, round int, payloads [][][]byte) (ingestResult, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		st        store.Store
		ing       *fleet.Ingester
		delivered atomic.Int64
		err       error
	)
	opts := broker.Options{Addr: "127.0.0.1:0", Dev: true}
	switch side.name {
	case "reference":
	case "sqlite":
		path := filepath.Join(dir, fmt.Sprintf("fleet-%d.db", round))
		defer func() {
			for _, suf := range []string{"", "-wal", "-shm"} {
				_ = os.Remove(path + suf)
			}
		}()
		if st, err = store.OpenSQLite(ctx, path); err != nil {
			return ingestResult{}, err
		}
	case "postgres":
		schema := "dialtone_bench_" + randomHex()
		defer dropPostgresSchema(cfg.postgres, schema)
		if st, err = store.OpenPostgres(ctx, cfg.postgres, store.WithSchema(schema)); err != nil {
			return ingestResult{}, err
		}
	}
	var ts *timedStore
	if st != nil {
		defer st.Close()
		ts = &timedStore{Store: st}
		ing = fleet.New(context.WithoutCancel(ctx), ts, fleet.Options{MaxBatch: cfg.ingestBatch})
		defer ing.Close()
		// As the daemon wires it: pipelined, acknowledged once stored.
		opts.IngestAsync = func(ctx context.Context, topic string, payload []byte, done func(error)) {
			ing.HandleAsync(ctx, topic, payload, func(err error) {
				if fleet.Retryable(err) {
					done(err)
					return
				}
				done(nil) // rejected for good: counted, and checked below
			})
		}
	}
	b, err := broker.New(opts)
	if err != nil {
		return ingestResult{}, err
	}
	if err := b.Start(ctx); err != nil {
		return ingestResult{}, err
	}
	defer b.Close()
	total := 0
	for _, p := range payloads {
		total += len(p)
	}
	// mochi may acknowledge a publish before it delivers it: the reference
	// run ends with the last delivery or the last PUBACK, whichever is later.
	allDelivered := make(chan time.Time, 1)
	if st == nil {
		if err := b.Subscribe(ingestTopics, func(string, []byte) {
			if delivered.Add(1) == int64(total) {
				allDelivered <- time.Now()
			}
		}); err != nil {
			return ingestResult{}, err
		}
	}

	clients, err := connectPublishers(b.Addr().String(), len(payloads))
	if err != nil {
		return ingestResult{}, err
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()

	start := make(chan struct{})
	errs := make(chan error, len(clients))
	var wg sync.WaitGroup
	for d, c := range clients {
		wg.Go(func() {
			<-start
			errs <- publishAll(c, "dialtone/v1/"+ingestTenant+"/"+ingestDevice(d)+"/events", payloads[d], cfg.ingestWindow)
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	close(errs)
	for err := range errs {
		if err != nil {
			return ingestResult{}, err
		}
	}

	res := ingestResult{msgs: total, elapsed: elapsed}
	if st == nil {
		select {
		case end := <-allDelivered:
			res.elapsed = max(elapsed, end.Sub(t0))
		case <-time.After(10 * time.Second):
			return res, fmt.Errorf("the subscriber got %d messages, %d were acknowledged", delivered.Load(), total)
		}
		return res, nil
	}
	res.writing = time.Duration(ts.writing.Load())
	// A benchmark that loses (or doubles) data measures nothing.
	res.stats = ing.Stats()
	if s := res.stats; s.Stored != uint64(total) || s.Duplicates != 0 || s.Rejected != 0 || s.Failed != 0 {
		return res, fmt.Errorf("ingester counters %+v after %d events", s, total)
	}
	for d, p := range payloads {
		n, err := st.CountEvents(ctx, ingestDevice(d))
		if err != nil {
			return res, fmt.Errorf("counting the events of %s: %w", ingestDevice(d), err)
		}
		if n != len(p) {
			return res, fmt.Errorf("the store holds %d events of %s, %d were acknowledged", n, ingestDevice(d), len(p))
		}
	}
	return res, nil
}

// connectPublishers connects one MQTT client per device.
func connectPublishers(addr string, n int) ([]mqtt.Client, error) {
	clients := make([]mqtt.Client, 0, n)
	for d := range n {
		dev := ingestDevice(d)
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(dev).SetUsername(dev).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetKeepAlive(60 * time.Second).SetConnectTimeout(10 * time.Second)
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			for _, c := range clients {
				c.Disconnect(0)
			}
			return nil, fmt.Errorf("connecting %s: %v", dev, cmpErr(tok.Error(), "timeout"))
		}
		clients = append(clients, c)
	}
	return clients, nil
}

// publishAll publishes payloads at QoS 1, at most window unacknowledged at a
// time, and returns once all are acknowledged.
func publishAll(c mqtt.Client, topic string, payloads [][]byte, window int) error {
	tokens := make(chan mqtt.Token, max(window-1, 0))
	go func() {
		defer close(tokens)
		for _, p := range payloads {
			tokens <- c.Publish(topic, 1, false, p)
		}
	}()
	var firstErr error
	for tok := range tokens {
		if firstErr != nil {
			continue // drain
		}
		if !tok.WaitTimeout(time.Minute) {
			firstErr = fmt.Errorf("%s: no PUBACK within a minute", topic)
		} else if err := tok.Error(); err != nil {
			firstErr = fmt.Errorf("%s: publishing: %w", topic, err)
		}
	}
	return firstErr
}

func cmpErr(err error, otherwise string) error {
	if err != nil {
		return err
	}
	return errors.New(otherwise)
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// pingPostgres checks that the PostgreSQL server dsn names answers.
func pingPostgres(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// dropPostgresSchema drops a schema the benchmark made, with all it holds.
func dropPostgresSchema(dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		logf("   dropping schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
		logf("   dropping schema %s: %v", schema, err)
	}
}

// startCPUProfile profiles this process into file until stop is called.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// timedStore adds up the time the ingester's batch writes take.
type timedStore struct {
	store.Store
	writing atomic.Int64 // nanoseconds
}

func (s *timedStore) UpsertStates(ctx context.Context, tenant string, sts []wire.State, received time.Time) error {
	defer s.time(time.Now())
	return s.Store.UpsertStates(ctx, tenant, sts, received)
}

func (s *timedStore) AddEvents(ctx context.Context, tenant string, es []wire.Event, received time.Time) (int, error) {
	defer s.time(time.Now())
	return s.Store.AddEvents(ctx, tenant, es, received)
}

func (s *timedStore) time(t0 time.Time) { s.writing.Add(int64(time.Since(t0))) }
