package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Recorder collects what a handler says about the change it makes: the
// state before and after, the tenant and the target. The API's audit
// middleware puts one in the request's context and appends an entry from
// it when the handler succeeded. It is safe for concurrent use.
type Recorder struct {
	mu             sync.Mutex
	before, after  json.RawMessage
	tenant, target string
	actor          string
	err            error
}

type recorderKey struct{}

// WithRecorder returns ctx carrying r.
func WithRecorder(ctx context.Context, r *Recorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, r)
}

func recorder(ctx context.Context) *Recorder {
	r, _ := ctx.Value(recorderKey{}).(*Recorder)
	return r
}

// Recording reports whether ctx carries a recorder, so that a handler can
// skip reading a before-state nobody records.
func Recording(ctx context.Context) bool { return recorder(ctx) != nil }

// SetChange records the changed thing's state before and after the
// change, each marshalled to JSON (nil: none). Never pass secrets: the log
// is read by every auditor. Without a recorder in ctx it does nothing.
func SetChange(ctx context.Context, before, after any) {
	r := recorder(ctx)
	if r == nil {
		return
	}
	b, errB := marshal(before)
	a, errA := marshal(after)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.before, r.after = b, a
	if errB != nil || errA != nil {
		r.err = fmt.Errorf("audit: recording change: %w", firstErr(errB, errA))
	}
}

// SetTenant records the tenant the change touched, when the request did
// not name it (a device's tenant, found by the handler).
func SetTenant(ctx context.Context, tenant string) {
	if r := recorder(ctx); r != nil {
		r.mu.Lock()
		r.tenant = tenant
		r.mu.Unlock()
	}
}

// SetTarget records what the change touched, replacing the route's path
// values (a created token's ID).
func SetTarget(ctx context.Context, target string) {
	if r := recorder(ctx); r != nil {
		r.mu.Lock()
		r.target = target
		r.mu.Unlock()
	}
}

// SetActor records who acted when the request is not authenticated yet: the
// user name a login tried.
func SetActor(ctx context.Context, actor string) {
	if r := recorder(ctx); r != nil {
		r.mu.Lock()
		r.actor = actor
		r.mu.Unlock()
	}
}

// Recorded is what the handler recorded.
type Recorded struct {
	Before, After  json.RawMessage
	Tenant, Target string
	Actor          string
	// Err is set when a before or after state could not be marshalled.
	Err error
}

// Recorded returns what the handler recorded.
func (r *Recorder) Recorded() Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Recorded{Before: r.before, After: r.after, Tenant: r.tenant, Target: r.target, Actor: r.actor, Err: r.err}
}

func marshal(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	return json.Marshal(v)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
