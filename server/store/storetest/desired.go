package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

func testDesired(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	if _, err := s.SetDesired(ctx, "nobody", "1.0.0", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetDesired(unknown device) = %v, want ErrNotFound", err)
	}
	if _, err := s.SetDesired(ctx, "", "1.0.0", t0); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("SetDesired(empty device) = %v, want ErrInvalid", err)
	}
	for _, d := range []string{"d1", "d2"} {
		if err := s.UpsertState(ctx, "acme", wire.State{Schema: wire.SchemaVersion, Tenant: "acme", Device: d, Time: t0}, t0); err != nil {
			t.Fatal(err)
		}
	}
	if ds, err := s.DesiredVersions(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("DesiredVersions before any = %v, %v", ds, err)
	}
	steps := []struct {
		version string
		at      time.Time
		want    string
	}{
		{"1.2.0", t0.Add(time.Minute), "1.2.0"},
		{"1.1.0", t0, "1.2.0"}, // older: ignored
		{"", t0.Add(2 * time.Minute), ""},
		{"1.3.0", t0.Add(3 * time.Minute), "1.3.0"},
	}
	for _, st := range steps {
		d, err := s.SetDesired(ctx, "d1", st.version, st.at)
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != st.want || d.Tenant != "acme" || d.Device != "d1" {
			t.Fatalf("SetDesired(%q at %s) = %+v, want version %q", st.version, st.at, d, st.want)
		}
	}
	if _, err := s.SetDesired(ctx, "d2", "", t0); err != nil {
		t.Fatal(err)
	}
	ds, err := s.DesiredVersions(ctx)
	if err != nil || len(ds) != 2 || ds[0].Device != "d1" || ds[0].Version != "1.3.0" || !ds[0].Time.Equal(t0.Add(3*time.Minute)) ||
		ds[1].Device != "d2" || ds[1].Version != "" {
		t.Fatalf("DesiredVersions = %+v, %v", ds, err)
	}
}
