package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

// The authz benchmark: an authenticated, authorized API request, GET
// /v1/devices/{id} with an API token of the device's tenant (the route
// whose guard does the most: token, then the device's tenant), through the
// whole API handler, against the same route's handler mounted on a plain
// ServeMux without the guard (api.UnguardedHandler), in this process, over
// a SQLite store of authzDevices devices in two tenants with events.
// Requests go straight to ServeHTTP (no network), so the ratio is the
// guard's cost against the handler alone: the strictest reading. Token
// lookups are cached for a few seconds (server/api tokenCache); the first
// request of each cache period reads the token table.

const (
	authzDevices = 1000
	authzEvents  = 20 // per device: what GET /v1/devices/{id} shows
	// A round alternates authzBatches batches of authzBatch requests with
	// and without auth, so that a busy machine's drift hits both alike.
	authzBatch   = 100
	authzBatches = 10
)

// noRepo answers what GET /v1/devices/{id} asks of the repository.
type noRepo struct{}

func (noRepo) Handler() http.Handler { return http.NotFoundHandler() }
func (noRepo) Delegation(string) (string, []byte, error) {
	return "", nil, errors.New("none")
}
func (noRepo) Publish(context.Context, tufrepo.PublishRequest) (*tufrepo.PublishResult, error) {
	return nil, errors.New("none")
}
func (noRepo) Push(context.Context, tufrepo.PushRequest) (*tufrepo.PushResult, error) {
	return nil, errors.New("none")
}
func (noRepo) Status() []tufrepo.RoleStatus               { return nil }
func (noRepo) Revocations() ([]tufrepo.Revocation, error) { return nil, nil }

func benchAuthz(cfg config) ([]row, error) {
	ctx := context.Background()
	dir := filepath.Join(cfg.workdir, "authz")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "fleet.db"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	now := time.Now().UTC()
	for i := range authzDevices {
		tenant := []string{"acme", "beta"}[i%2]
		id := fmt.Sprintf("authz-%05d", i)
		if err := st.UpsertState(ctx, tenant, wire.State{Schema: wire.SchemaVersion, Tenant: tenant, Device: id, Model: "dt100",
			Hardware: "r1", Version: "1.0.0", Slot: "a", UpdateState: wire.UpdateIdle, Online: true, Time: now}, now); err != nil {
			return nil, err
		}
		evs := make([]wire.Event, authzEvents)
		for j := range evs {
			evs[j] = wire.Event{Schema: wire.SchemaVersion, Device: id, ID: fmt.Sprintf("e%d", j), Seq: uint64(j + 1),
				Time: now.Add(time.Duration(j) * time.Second), Type: "boot", Version: "1.0.0"}
		}
		if _, err := st.AddEvents(ctx, tenant, evs, now); err != nil {
			return nil, err
		}
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	token := api.APITokenPrefix + hex.EncodeToString(secret)
	h := sha256.Sum256([]byte(token))
	if err := st.CreateToken(ctx, store.Token{ID: "bench", Hash: h[:], Tenant: "acme", Role: "viewer",
		Created: now, Expires: now.Add(time.Hour)}); err != nil {
		return nil, err
	}
	a, err := api.New(api.Options{Repo: noRepo{}, Devices: st, Tokens: st, AdminToken: hex.EncodeToString(secret[:16])})
	if err != nil {
		return nil, err
	}
	const pattern = "GET /v1/devices/{id}"
	bare, ok := a.UnguardedHandler(pattern)
	if !ok {
		return nil, fmt.Errorf("no route %s", pattern)
	}
	ref := http.NewServeMux()
	ref.Handle(pattern, bare)

	run := func(h http.Handler, auth bool) (time.Duration, error) {
		t0 := time.Now()
		for i := range authzBatch {
			// Devices of acme: the even ones.
			req := httptest.NewRequest("GET", fmt.Sprintf("/v1/devices/authz-%05d", (2*i)%authzDevices), nil)
			if auth {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				return 0, fmt.Errorf("%s: %d %s", req.URL.Path, w.Code, w.Body.String())
			}
		}
		return time.Since(t0), nil
	}
	// Warm both (caches, the device tenants the guard keeps) unmeasured.
	if _, err := run(a, true); err != nil {
		return nil, err
	}
	if _, err := run(ref, false); err != nil {
		return nil, err
	}
	var guarded, plain, ratios []float64
	for round := range cfg.authzRounds {
		var g, p time.Duration
		for b := range authzBatches {
			var gb, pb time.Duration
			if (round+b)%2 == 0 {
				if gb, err = run(a, true); err == nil {
					pb, err = run(ref, false)
				}
			} else {
				if pb, err = run(ref, false); err == nil {
					gb, err = run(a, true)
				}
			}
			if err != nil {
				return nil, err
			}
			g, p = g+gb, p+pb
		}
		n := float64(authzBatch * authzBatches)
		gu, pu := float64(g.Nanoseconds())/1000/n, float64(p.Nanoseconds())/1000/n
		guarded, plain, ratios = append(guarded, gu), append(plain, pu), append(ratios, gu/pu)
		logf("   authz round %d: with token auth %.1f µs, without %.1f µs per request (%.2fx)", round+1, gu, pu, gu/pu)
	}
	return []row{{name: "authz: GET /v1/devices/{id} with token auth", value: median(guarded), ref: median(plain), unit: "µs",
		refName: "same handler, no auth", ratio: median(ratios), max: 1.3, rounds: ratios}}, nil
}
