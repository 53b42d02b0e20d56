package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// ErrClosed is returned by Handle once the batching writer has stopped
// (Close, or the end of New's context). It is retryable: the report was not
// stored.
var ErrClosed = errors.New("fleet: ingester closed")

// request is one decoded report waiting for its batch.
type request struct {
	ctx    context.Context // the caller's: a request whose ctx is done is skipped
	tenant string
	state  wire.State
	event  wire.Event
	isEvt  bool
	// done receives the outcome, once, on the writer's goroutine: it must
	// not block.
	done func(error)
}

// upsertState stores a state — directly without batching, else through the
// writer — and passes the outcome to done.
func (i *Ingester) upsertState(ctx context.Context, tenant string, st wire.State, done func(error)) {
	if i.wake == nil {
		err := i.st.UpsertState(ctx, tenant, st, i.now())
		if err == nil {
			i.stored.Add(1)
		}
		done(err)
		return
	}
	i.submit(&request{ctx: ctx, tenant: tenant, state: st, done: done})
}

// addEvent stores an event — directly without batching, else through the
// writer — and passes the outcome to done.
func (i *Ingester) addEvent(ctx context.Context, tenant string, e wire.Event, done func(error)) {
	if i.wake == nil {
		inserted, err := i.st.AddEvent(ctx, tenant, e, i.now())
		if err == nil {
			i.count(inserted)
		}
		done(err)
		return
	}
	i.submit(&request{ctx: ctx, tenant: tenant, event: e, isEvt: true, done: done})
}

func (i *Ingester) count(inserted bool) {
	if inserted {
		i.stored.Add(1)
	} else {
		i.duplicates.Add(1)
	}
}

// submit queues r for the writer, which passes the outcome to r.done.
// Requests are queued, and so written, in the order of submit calls: the
// reports of a device handed over one after the other stay in order.
func (i *Ingester) submit(r *request) {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		r.done(ErrClosed)
		return
	}
	i.queue = append(i.queue, r)
	i.mu.Unlock()
	select {
	case i.wake <- struct{}{}:
	default: // the writer has news already
	}
}

// Close stops taking reports, lets the writer store those already queued,
// and waits for it to exit. Reports handed to Handle afterwards fail with
// ErrClosed. Without batching it does nothing. It is safe to call more than
// once.
func (i *Ingester) Close() error {
	if i.wake == nil {
		return nil
	}
	i.mu.Lock()
	i.closed = true
	i.mu.Unlock()
	select {
	case i.wake <- struct{}{}:
	default:
	}
	<-i.done
	return nil
}

// write is the batching writer: it takes what is queued, writes it, answers
// its waiters, and starts over, until closed and drained or ctx is done.
func (i *Ingester) write(ctx context.Context) {
	defer close(i.done)
	for {
		batch := i.take(ctx)
		if batch == nil {
			return
		}
		i.commit(ctx, batch)
		i.mu.Lock()
		clear(batch)
		i.spare = batch[:0]
		i.mu.Unlock()
	}
}

// take waits for queued reports and returns up to maxBatch of them, oldest
// first; nil once closed and drained, or when ctx is done (then everything
// queued fails with ErrClosed).
func (i *Ingester) take(ctx context.Context) []*request {
	for {
		i.mu.Lock()
		if err := ctx.Err(); err != nil {
			i.closed = true
			queued := i.queue
			i.queue = nil
			i.mu.Unlock()
			for _, r := range queued {
				r.done(fmt.Errorf("%w: %w", ErrClosed, err))
			}
			return nil
		}
		if n := len(i.queue); n > 0 {
			batch := i.queue
			if n > i.maxBatch {
				rest := batch[i.maxBatch:]
				i.queue = append(i.spare, rest...)
				clear(rest) // batch's array becomes the spare: hold no stale requests
				batch = batch[:i.maxBatch:i.maxBatch]
			} else {
				i.queue = i.spare
			}
			i.spare = nil
			i.mu.Unlock()
			return batch
		}
		closed := i.closed
		i.mu.Unlock()
		if closed {
			return nil
		}
		select {
		case <-i.wake:
		case <-ctx.Done():
		}
	}
}

// group is a batch's reports under one tenant, each kind in queue order.
type group struct {
	tenant         string
	states, events []*request
}

// commit writes a batch: per tenant (in the order tenants first appear),
// its states in one UpsertStates, then its events in one AddEvents.
func (i *Ingester) commit(ctx context.Context, batch []*request) {
	var groups []*group
	byTenant := map[string]*group{}
	for _, r := range batch {
		if r.ctx.Err() != nil {
			// The caller is gone (and told so): leave the report to its
			// redelivery.
			r.done(r.ctx.Err())
			continue
		}
		g := byTenant[r.tenant]
		if g == nil {
			g = &group{tenant: r.tenant}
			byTenant[r.tenant] = g
			groups = append(groups, g)
		}
		if r.isEvt {
			g.events = append(g.events, r)
		} else {
			g.states = append(g.states, r)
		}
	}
	received := i.now()
	for _, g := range groups {
		if len(g.states) > 0 {
			i.commitStates(ctx, g.tenant, g.states, received)
		}
		if len(g.events) > 0 {
			i.commitEvents(ctx, g.tenant, g.events, received)
		}
	}
}

func (i *Ingester) commitStates(ctx context.Context, tenant string, rs []*request, received time.Time) {
	states := make([]wire.State, len(rs))
	for k, r := range rs {
		states[k] = r.state
	}
	err := i.st.UpsertStates(ctx, tenant, states, received)
	i.batches.Add(1)
	if err != nil && perItem(err) && len(rs) > 1 {
		// One bad state must not fail the others: write them one by one.
		for _, r := range rs {
			err := i.st.UpsertState(ctx, tenant, r.state, received)
			i.batches.Add(1)
			if err == nil {
				i.stored.Add(1)
			}
			r.done(err)
		}
		return
	}
	if err == nil {
		i.stored.Add(uint64(len(rs)))
	}
	for _, r := range rs {
		r.done(err)
	}
}

func (i *Ingester) commitEvents(ctx context.Context, tenant string, rs []*request, received time.Time) {
	events := make([]wire.Event, len(rs))
	for k, r := range rs {
		events[k] = r.event
	}
	n, err := i.st.AddEvents(ctx, tenant, events, received)
	i.batches.Add(1)
	if err != nil && perItem(err) && len(rs) > 1 {
		for _, r := range rs {
			inserted, err := i.st.AddEvent(ctx, tenant, r.event, received)
			i.batches.Add(1)
			if err == nil {
				i.count(inserted)
			}
			r.done(err)
		}
		return
	}
	if err == nil {
		// A duplicate of an event earlier in the batch counts too.
		i.stored.Add(uint64(n))
		i.duplicates.Add(uint64(len(rs) - n))
	}
	for _, r := range rs {
		r.done(err)
	}
}

// perItem reports whether a batch failed because of one of its reports
// rather than the store.
func perItem(err error) bool {
	return errors.Is(err, wire.ErrInvalid) || errors.Is(err, store.ErrConflict)
}
