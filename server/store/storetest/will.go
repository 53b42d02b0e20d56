package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// testLastWill: a last will is fixed when its connection is made, so it is
// older than every state sent on that connection. It must still take the
// device offline — but only the will of the stored state's connection (or
// a newer one), never that of an earlier connection, which a session
// takeover publishes after the new connection's first state.
func testLastWill(t *testing.T, s store.Store) {
	conn1, conn2 := at(0), at(time.Hour)
	online := func(tm, conn time.Time) wire.State {
		st := state("acme", "d1", "1.0.0", tm)
		st.Conn = conn
		return st
	}
	will := func(conn time.Time) wire.State {
		st := online(conn, conn)
		st.Online = false
		return st
	}
	// Each step is applied one by one, then (on a fresh device) as one
	// batch: the batch path must give the same answer.
	for _, tc := range []struct {
		name  string
		steps []wire.State
		want  bool // online
	}{
		{"will of the current connection", []wire.State{online(at(time.Minute), conn1), will(conn1)}, false},
		{"will of an earlier connection", []wire.State{online(at(time.Minute), conn1), online(at(time.Hour+time.Minute), conn2), will(conn1)}, true},
		{"will, then the next connection", []wire.State{online(at(time.Minute), conn1), will(conn1), online(at(time.Hour+time.Minute), conn2)}, true},
		{"a state without Conn is never overruled by a will", []wire.State{online(at(time.Minute), time.Time{}), will(conn1)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, batch := range []bool{false, true} {
				dev := []string{"one", "batch"}[i]
				steps := make([]wire.State, len(tc.steps))
				for j, st := range tc.steps {
					st.Device = dev
					steps[j] = st
				}
				if batch {
					if err := s.UpsertStates(context.Background(), "acme", steps, at(2*time.Hour)); err != nil {
						t.Fatalf("UpsertStates: %v", err)
					}
				} else {
					for _, st := range steps {
						upsert(t, s, "acme", st, at(2*time.Hour))
					}
				}
				got := device(t, s, "acme", dev)
				if got.Online != tc.want {
					t.Errorf("%s: online = %v, want %v", dev, got.Online, tc.want)
				}
				if got.Version != "1.0.0" {
					t.Errorf("%s: version %q: a will must change nothing but the online flag", dev, got.Version)
				}
			}
		})
	}
}
