package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/store"
)

func newAlertsAPI(t *testing.T) (*httptest.Server, *store.SQLite) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := New(Options{Repo: unreachableRepo{t}, Devices: st, Tokens: st, Alerts: st, AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv, st
}

func getAlerts(t *testing.T, srv *httptest.Server, q url.Values) (int, AlertList) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/alerts?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out AlertList
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, out
}

func TestAlertsList(t *testing.T) {
	srv, st := newAlertsAPI(t)
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range 5 {
		a := store.Alert{ID: fmt.Sprintf("a%d", i), Time: t0.Add(time.Duration(i) * time.Minute), Tenant: "acme", Device: "phone1",
			Kind: "acl-denied", Severity: store.AlertCritical, Source: "embedded-broker", Message: "refused", Count: i + 1,
			Fields: map[string]string{"topic": "#"}}
		if i%2 == 1 {
			a.Kind, a.Device, a.Tenant = "malformed-payload", "phone2", "beta"
		}
		if _, err := st.AddAlert(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	if code := do(t, srv, "GET", "/v1/alerts", ""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d", code)
	}
	code, all := getAlerts(t, srv, nil)
	if code != 200 || len(all.Alerts) != 5 || all.Alerts[0].ID != "a4" || all.Next != "" || all.Alerts[4].Fields["topic"] != "#" {
		t.Fatalf("all: %d %+v", code, all)
	}
	for _, tc := range []struct {
		q    url.Values
		want int
	}{
		{url.Values{"kind": {"acl-denied"}}, 3},
		{url.Values{"device": {"phone2"}}, 2},
		{url.Values{"tenant": {"beta"}, "kind": {"malformed-payload"}}, 2},
		{url.Values{"since": {t0.Add(3 * time.Minute).Format(time.RFC3339)}}, 2},
		{url.Values{"kind": {"nothing"}}, 0},
	} {
		if code, got := getAlerts(t, srv, tc.q); code != 200 || len(got.Alerts) != tc.want {
			t.Errorf("%v: %d, %d alerts, want %d", tc.q, code, len(got.Alerts), tc.want)
		}
	}
	// Pages.
	var ids []string
	q := url.Values{"limit": {"2"}}
	for range 5 {
		code, page := getAlerts(t, srv, q)
		if code != 200 {
			t.Fatalf("page: %d", code)
		}
		for _, a := range page.Alerts {
			ids = append(ids, a.ID)
		}
		if page.Next == "" {
			break
		}
		q.Set("after", page.Next)
	}
	if fmt.Sprint(ids) != "[a4 a3 a2 a1 a0]" {
		t.Errorf("pages: %v", ids)
	}
	for _, bad := range []url.Values{
		{"since": {"yesterday"}},
		{"limit": {"0"}},
		{"limit": {"100001"}},
		{"after": {"%%%"}},
	} {
		if code, _ := getAlerts(t, srv, bad); code != http.StatusBadRequest {
			t.Errorf("%v: %d, want 400", bad, code)
		}
	}
}

func TestAlertsNotConfigured(t *testing.T) {
	srv, _ := newAPI(t)
	if code := do(t, srv, "GET", "/v1/alerts", token); code != http.StatusNotImplemented {
		t.Errorf("GET /v1/alerts without Alerts: %d, want 501", code)
	}
}
