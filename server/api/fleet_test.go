package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/rollout"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

// versionRepo is a repository whose only answer is its status: a timestamp
// at version ts.
type versionRepo struct {
	unreachableRepo
	ts int64
}

func (v versionRepo) Status() []tufrepo.RoleStatus {
	return []tufrepo.RoleStatus{{Role: "root", Version: 1}, {Role: "timestamp", Version: v.ts}}
}

// recorder is the broker as rollout sees it, keeping what it publishes.
type recorder struct {
	mu  sync.Mutex
	got []recorded
}

type recorded struct {
	topic   string
	payload []byte
	retain  bool
	qos     byte
}

func (r *recorder) Publish(topic string, payload []byte, retain bool, qos byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, recorded{topic, payload, retain, qos})
	return nil
}

func (r *recorder) messages() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

type fleetServer struct {
	srv *httptest.Server
	st  *store.SQLite
	pub *recorder
}

// newFleetAPI serves a real SQLite store holding fleet, a repository whose
// timestamp is at version 10, and a rollout service on a recording broker;
// without rollouts it steers nothing.
func newFleetAPI(t *testing.T, rollouts bool) *fleetServer {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs := &fleetServer{st: st, pub: &recorder{}}
	o := Options{Repo: versionRepo{unreachableRepo{t}, 10}, Devices: st, Tokens: st, AdminToken: token}
	if rollouts {
		o.Rollouts = rollout.New(st, fs.pub, nil)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	fs.srv = httptest.NewServer(a)
	t.Cleanup(fs.srv.Close)
	fleet(t, st)
	return fs
}

var fleetT0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// fleet: acme has p1..p4, beta b1 and b2; p2 trusts an old TUF timestamp,
// p4 was last seen an hour after the others, b2 is untrusted.
func fleet(t *testing.T, st *store.SQLite) {
	t.Helper()
	ctx := t.Context()
	for _, d := range []struct {
		tenant, id, model, version string
		online                     bool
		ts                         int64
		seen                       time.Duration
		attestation                string
	}{
		{"acme", "p1", "dt100", "1.0.0", true, 10, 0, "trusted"},
		{"acme", "p2", "dt100", "1.0.0", false, 5, 0, "trusted"},
		{"acme", "p3", "dt200", "1.1.0", true, 9, 0, ""},
		{"acme", "p4", "dt100", "1.1.0", true, 10, time.Hour, ""},
		{"beta", "b1", "dt100", "1.1.0", false, 10, 0, ""},
		{"beta", "b2", "dt200", "1.0.0", true, 8, 0, "untrusted"},
	} {
		st0 := wire.State{Schema: wire.SchemaVersion, Tenant: d.tenant, Device: d.id, Model: d.model, Hardware: "r1",
			Version: d.version, Slot: "a", UpdateState: wire.UpdateIdle, Online: d.online,
			TUF: wire.TUFVersions{Root: 1, Timestamp: d.ts, Snapshot: d.ts, Targets: 1}, Time: fleetT0}
		if err := st.UpsertState(ctx, d.tenant, st0, fleetT0.Add(d.seen)); err != nil {
			t.Fatal(err)
		}
		if d.attestation != "" {
			if err := st.SetAttestation(ctx, d.id, d.attestation, fleetT0); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// get fetches path and decodes a 200 answer into v; it returns the status
// and the error message of any other.
func (fs *fleetServer) get(t *testing.T, path string, v any) (int, string) {
	t.Helper()
	return fs.do(t, http.MethodGet, path, "", v)
}

func (fs *fleetServer) do(t *testing.T, method, path, body string, v any) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, fs.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := fs.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var e errorBody
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Error
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, b)
	}
	return resp.StatusCode, ""
}

func ids(ds []Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func TestDevicesQuery(t *testing.T) {
	fs := newFleetAPI(t, false)
	since := url.QueryEscape(fleetT0.Add(30 * time.Minute).Format(time.RFC3339))
	for _, tc := range []struct {
		q    string
		want []string
		next bool
	}{
		{"", []string{"p1", "p2", "p3", "p4", "b1", "b2"}, false},
		{"?tenant=acme&model=dt100", []string{"p1", "p2", "p4"}, false},
		{"?version=1.1.0", []string{"p3", "p4", "b1"}, false},
		{"?attestation=trusted", []string{"p1", "p2"}, false},
		{"?online=false", []string{"p2", "b1"}, false},
		{"?online=true&tenant=beta", []string{"b2"}, false},
		{"?seen_since=" + since, []string{"p4"}, false},
		{"?seen_before=" + since, []string{"p1", "p2", "p3", "b1", "b2"}, false},
		{"?sort=last_seen&desc=true&limit=2", []string{"p4", "b2"}, true},
		{"?sort=model&desc=false", []string{"p1", "p2", "p4", "b1", "p3", "b2"}, false},
		{"?sort=version", []string{"p1", "p2", "b2", "p3", "p4", "b1"}, false},
		{"?limit=6", []string{"p1", "p2", "p3", "p4", "b1", "b2"}, false},
		{"?limit=5", []string{"p1", "p2", "p3", "p4", "b1"}, true},
		// The repository's timestamp is at 10: 8 and below lag.
		{"?tuf_behind=true", []string{"p2", "b2"}, false},
		{"?tuf_behind=true&tenant=acme", []string{"p2"}, false},
		{"?tuf_behind=false", []string{"p1", "p2", "p3", "p4", "b1", "b2"}, false},
	} {
		var out DeviceList
		code, msg := fs.get(t, "/v1/devices"+tc.q, &out)
		if code != 200 || !slices.Equal(ids(out.Devices), tc.want) || (out.Next != "") != tc.next {
			t.Errorf("GET /v1/devices%s: %d %s %v next %q; want %v, next %v", tc.q, code, msg, ids(out.Devices), out.Next, tc.want, tc.next)
		}
	}
	// The devices show their attestation.
	var out DeviceList
	fs.get(t, "/v1/devices?tenant=beta", &out)
	if len(out.Devices) != 2 || out.Devices[1].Attestation != "untrusted" || !out.Devices[1].Attested.Equal(fleetT0) || out.Devices[0].Attestation != "" {
		t.Errorf("beta's devices: %+v", out.Devices)
	}
}

func TestDevicesPages(t *testing.T) {
	fs := newFleetAPI(t, false)
	for _, base := range []string{"", "sort=last_seen&", "sort=version&desc=true&", "tenant=acme&"} {
		var all DeviceList
		fs.get(t, "/v1/devices?"+strings.TrimSuffix(base, "&"), &all)
		var got []string
		cursor := ""
		for i := 0; ; i++ {
			if i > 10 {
				t.Fatalf("%s: paging does not end", base)
			}
			var page DeviceList
			q := base + "limit=2"
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			if code, msg := fs.get(t, "/v1/devices?"+q, &page); code != 200 {
				t.Fatalf("GET /v1/devices?%s: %d %s", q, code, msg)
			}
			got = append(got, ids(page.Devices)...)
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		if !slices.Equal(got, ids(all.Devices)) {
			t.Errorf("pages of %q: %v, want %v", base, got, ids(all.Devices))
		}
	}
}

func TestDevicesQueryErrors(t *testing.T) {
	fs := newFleetAPI(t, false)
	var first DeviceList
	fs.get(t, "/v1/devices?limit=1", &first)
	for _, tc := range []struct{ q, says string }{
		{"?limit=0", "limit"},
		{"?limit=10001", "limit"},
		{"?limit=-1", "limit"},
		{"?limit=x", "limit"},
		{"?tenant=a/b", "tenant"},
		{"?model=", "model"},
		{"?version=" + strings.Repeat("1", 65), "version"},
		{"?attestation=%00", "attestation"},
		{"?online=yes", "online"},
		{"?desc=1", "desc"},
		{"?seen_since=1h", "seen_since"},
		{"?seen_before=2026-11-25", "seen_before"},
		{"?sort=name", "sort"},
		{"?cursor=!!", "cursor"},
		{"?sort=last_seen&cursor=" + first.Next, "cursor of sort order"},
		{"?tuf_behind=1", "tuf_behind"},
		{"?tenant=acme&tenant=beta", "tenant given 2 times"},
		{"?colour=red", `unknown query parameter "colour"`},
	} {
		var out DeviceList
		code, msg := fs.get(t, "/v1/devices"+tc.q, &out)
		if code != 400 || !strings.Contains(msg, tc.says) {
			t.Errorf("GET /v1/devices%s: %d %q; want 400 saying %q", tc.q, code, msg, tc.says)
		}
	}
}

func TestDeviceDetail(t *testing.T) {
	fs := newFleetAPI(t, true)
	ctx := t.Context()
	for i := range 25 {
		e := wire.Event{Schema: wire.SchemaVersion, ID: fmt.Sprintf("e%02d", i), Device: "p2", Seq: uint64(i),
			Time: fleetT0, Type: wire.EventCheck, Message: "checked"}
		if _, err := fs.st.AddEvent(ctx, "acme", e, fleetT0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fs.st.SetDesired(ctx, "p2", "1.1.0", fleetT0); err != nil {
		t.Fatal(err)
	}
	var d DeviceDetail
	if code, msg := fs.get(t, "/v1/devices/p2", &d); code != 200 {
		t.Fatalf("GET /v1/devices/p2: %d %s", code, msg)
	}
	if d.ID != "p2" || d.Tenant != "acme" || d.Version != "1.0.0" || d.DesiredVersion != "1.1.0" || !d.DesiredTime.Equal(fleetT0) ||
		!d.TUFBehind || d.Attestation != "trusted" || len(d.Events) != DeviceEvents || d.Events[0].ID != "e05" || d.Events[19].ID != "e24" {
		t.Errorf("GET /v1/devices/p2 = %+v", d)
	}
	var d1 DeviceDetail
	fs.get(t, "/v1/devices/p3", &d1)
	if d1.ID != "p3" || d1.TUFBehind || d1.DesiredVersion != "" || d1.Events == nil || len(d1.Events) != 0 {
		t.Errorf("GET /v1/devices/p3 = %+v", d1)
	}
	for _, tc := range []struct {
		path string
		code int
	}{{"/v1/devices/nope", 404}, {"/v1/devices/a%20b", 400}, {"/v1/devices/" + strings.Repeat("x", 65), 400}} {
		if code, _ := fs.get(t, tc.path, &d); code != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.path, code, tc.code)
		}
	}
}

func TestFleetSummary(t *testing.T) {
	fs := newFleetAPI(t, false)
	var sum FleetSummary
	if code, msg := fs.get(t, "/v1/fleet/summary", &sum); code != 200 {
		t.Fatalf("GET /v1/fleet/summary: %d %s", code, msg)
	}
	want := FleetTotals{Devices: 6, Online: 4, Offline: 2, Untrusted: 1, Unattested: 3, TUFBehind: 2}
	if sum.TUFTimestamp != 10 || sum.Totals != want || len(sum.Rows) != 6 {
		t.Errorf("summary: timestamp %d, totals %+v, %d rows; want 10, %+v, 6 rows", sum.TUFTimestamp, sum.Totals, len(sum.Rows), want)
	}
	// p1 and p2 differ only in being online.
	if r := sum.Rows[0]; r.Tenant != "acme" || r.Model != "dt100" || r.Version != "1.0.0" || r.Online || r.Devices != 1 || r.TUFBehind != 1 {
		t.Errorf("first row %+v, want acme's offline dt100 on 1.0.0 (p2, behind)", r)
	}
	if code, _ := fs.get(t, "/v1/fleet/summary?tenant=beta", &sum); code != 200 || sum.Totals.Devices != 2 || sum.Totals.TUFBehind != 1 {
		t.Errorf("beta's summary: %d %+v", code, sum.Totals)
	}
	if code, _ := fs.get(t, "/v1/fleet/summary?tenant=nobody", &sum); code != 200 || sum.Rows == nil || len(sum.Rows) != 0 {
		t.Errorf("nobody's summary: %d %+v", code, sum)
	}
	for _, q := range []string{"?tenant=a/b", "?tenant=", "?tenant=a&tenant=b", "?model=dt100"} {
		if code, msg := fs.get(t, "/v1/fleet/summary"+q, &sum); code != 400 || msg == "" {
			t.Errorf("GET /v1/fleet/summary%s: %d %q, want 400", q, code, msg)
		}
	}
}

// A repository whose timestamp is at version 1 has no laggards.
func TestTUFBehindYoungRepository(t *testing.T) {
	fs := newFleetAPI(t, false)
	a, err := New(Options{Repo: versionRepo{unreachableRepo{t}, 1}, Devices: fs.st, Tokens: fs.st, AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	fs.srv = httptest.NewServer(a)
	t.Cleanup(fs.srv.Close)
	var out DeviceList
	if code, _ := fs.get(t, "/v1/devices?tuf_behind=true", &out); code != 200 || len(out.Devices) != 0 {
		t.Errorf("tuf_behind with a young repository: %d %v", code, ids(out.Devices))
	}
	var sum FleetSummary
	if code, _ := fs.get(t, "/v1/fleet/summary", &sum); code != 200 || sum.Totals.TUFBehind != 0 || sum.Totals.Devices != 6 {
		t.Errorf("summary with a young repository: %d %+v", code, sum.Totals)
	}
}

func TestDeviceCommand(t *testing.T) {
	fs := newFleetAPI(t, true)
	for _, tc := range []struct {
		device, body string
		code         int
		says         string
	}{
		{"p1", `{"name":"check"}`, 202, ""},
		{"p1", `{"name":"attest"}`, 202, ""},
		{"b2", `{"name":"reboot"}`, 202, ""},
		{"nope", `{"name":"check"}`, 404, "no device nope"},
		{"p1", `{"name":"desired"}`, 400, "PUT /v1/devices/{id}/desired"},
		{"p1", `{"name":"format"}`, 400, `"format"`},
		{"p1", `{"name":"check","version":"1.0.0"}`, 400, "unknown field"},
		{"p1", `{"name":"check"} {}`, 400, "trailing"},
		{"p1", ``, 400, "EOF"},
		{"p1", `{"name":"` + strings.Repeat("c", 2000) + `"}`, 400, "exceeds"},
		{"a%20b", `{"name":"check"}`, 400, "bad device id"},
	} {
		var sent CommandSent
		code, msg := fs.do(t, http.MethodPost, "/v1/devices/"+tc.device+"/cmd", tc.body, &sent)
		if code != tc.code || !strings.Contains(msg, tc.says) {
			t.Errorf("POST %s %s: %d %q; want %d saying %q", tc.device, tc.body, code, msg, tc.code, tc.says)
		}
		if code == 202 && (sent.Device != tc.device || sent.ID == "" || sent.Time.IsZero()) {
			t.Errorf("POST %s %s answered %+v", tc.device, tc.body, sent)
		}
	}
	msgs := fs.pub.messages()
	want := []struct{ topic, name string }{
		{wire.Topic("acme", "p1", wire.KindCmd), "check"},
		{wire.Topic("acme", "p1", wire.KindCmd), "attest"},
		{wire.Topic("beta", "b2", wire.KindCmd), "reboot"},
	}
	if len(msgs) != len(want) {
		t.Fatalf("published %d commands, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		cmd, err := wire.DecodeCommand(m.payload)
		if err != nil || m.topic != want[i].topic || cmd.Name != want[i].name || m.retain || m.qos != 1 {
			t.Errorf("command %d: %s %+v retain %v qos %d (%v); want %s on %s, QoS 1, not retained", i, m.topic, cmd, m.retain, m.qos, err,
				want[i].name, want[i].topic)
		}
	}

	// Without a broker there is nothing to send with.
	bare := newFleetAPI(t, false)
	if code, _ := bare.do(t, http.MethodPost, "/v1/devices/p1/cmd", `{"name":"check"}`, nil); code != 501 {
		t.Errorf("POST cmd without a broker: %d, want 501", code)
	}
	// Only an admin sends commands.
	code, info := createToken(t, fs.srv, `{"role":"publisher","models":["dt100"],"ttl":3600000000000}`)
	if code != 201 {
		t.Fatal(code)
	}
	for _, p := range []string{"/v1/devices/p1", "/v1/fleet/summary"} {
		if got := do(t, fs.srv, "GET", p, info.Token); got != 403 {
			t.Errorf("publisher GET %s: %d, want 403", p, got)
		}
	}
	req, _ := http.NewRequestWithContext(context.Background(), "POST", fs.srv.URL+"/v1/devices/p1/cmd", strings.NewReader(`{"name":"check"}`))
	req.Header.Set("Authorization", "Bearer "+info.Token)
	resp, err := fs.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || len(fs.pub.messages()) != 3 {
		t.Errorf("publisher POST cmd: %d, %d commands published", resp.StatusCode, len(fs.pub.messages()))
	}
}
