package rollout_test

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/rollout"
	"github.com/dialtone-dev/dialtone/server/store"
)

type published struct {
	topic   string
	payload []byte
	retain  bool
	qos     byte
}

// recorder is a Publisher that keeps what it is given, or fails with err.
type recorder struct {
	mu  sync.Mutex
	got []published
	err error
}

func (r *recorder) Publish(topic string, payload []byte, retain bool, qos byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.got = append(r.got, published{topic, payload, retain, qos})
	return nil
}

func newStore(t *testing.T) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	if err := st.UpsertState(t.Context(), "acme", wire.State{Schema: wire.SchemaVersion, Tenant: "acme", Device: "p1", Time: now}, now); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCommand(t *testing.T) {
	st := newStore(t)
	pub := &recorder{}
	s := rollout.New(st, pub, nil)
	for _, name := range []string{wire.CmdCheck, wire.CmdAttest, wire.CmdReboot} {
		cmd, err := s.Command(t.Context(), "p1", name)
		if err != nil {
			t.Fatalf("Command(%s): %v", name, err)
		}
		if cmd.Name != name || cmd.Schema != wire.SchemaVersion || cmd.ID == "" || cmd.Time.IsZero() {
			t.Errorf("Command(%s) = %+v", name, cmd)
		}
	}
	if len(pub.got) != 3 {
		t.Fatalf("published %d messages, want 3", len(pub.got))
	}
	ids := map[string]bool{}
	for i, p := range pub.got {
		if p.topic != wire.Topic("acme", "p1", wire.KindCmd) || p.retain || p.qos != 1 {
			t.Errorf("message %d on %s retain %v qos %d; want %s, not retained, QoS 1", i, p.topic, p.retain, p.qos,
				wire.Topic("acme", "p1", wire.KindCmd))
		}
		// What the agent receives decodes as the command that was sent.
		cmd, err := wire.DecodeCommand(p.payload)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if ids[cmd.ID] {
			t.Errorf("command ID %s sent twice", cmd.ID)
		}
		ids[cmd.ID] = true
	}

	for _, tc := range []struct {
		device, name string
		want         error
	}{
		{"nope", wire.CmdCheck, store.ErrNotFound},
		{"p1", wire.CmdDesired, rollout.ErrUnknownCommand},
		{"p1", "", rollout.ErrUnknownCommand},
		{"p1", "Check", rollout.ErrUnknownCommand},
	} {
		if _, err := s.Command(t.Context(), tc.device, tc.name); !errors.Is(err, tc.want) {
			t.Errorf("Command(%q, %q) = %v, want %v", tc.device, tc.name, err, tc.want)
		}
	}
	if len(pub.got) != 3 {
		t.Errorf("refused commands were published: %d messages", len(pub.got))
	}

	// A broker that refuses: the error says so.
	pub.err = errors.New("broker down")
	if _, err := s.Command(t.Context(), "p1", wire.CmdReboot); err == nil || !errors.Is(err, pub.err) {
		t.Errorf("Command with the broker down = %v", err)
	}
}
