package store

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// What both implementations accept, checked before either writes, so that
// they agree on it.

// checkText returns an error wrapping wire.ErrInvalid unless every one of ss
// can be stored as text by every implementation.
func checkText(ss ...string) error {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return fmt.Errorf("%w: text that is not valid UTF-8 or holds a NUL byte", wire.ErrInvalid)
		}
	}
	return nil
}

func checkIDs(tenant, device string) error {
	if tenant == "" || device == "" {
		return fmt.Errorf("%w: empty tenant or device", wire.ErrInvalid)
	}
	if err := checkText(tenant, device); err != nil {
		return fmt.Errorf("tenant %q or device %q: %w", tenant, device, err)
	}
	return nil
}

// checkState validates st for storing under tenant.
func checkState(tenant string, st wire.State) error {
	if err := checkIDs(tenant, st.Device); err != nil {
		return err
	}
	if st.Tenant != "" && st.Tenant != tenant {
		return fmt.Errorf("state of %s: %w: state names tenant %q, stored under %q",
			st.Device, ErrConflict, st.Tenant, tenant)
	}
	if err := checkText(st.Model, st.Hardware, st.Version, st.Slot, st.UpdateState); err != nil {
		return fmt.Errorf("state of %s: %w", st.Device, err)
	}
	return nil
}

// checkEvent validates e for storing under tenant and returns its fields as
// JSON, "" when it has none.
func checkEvent(tenant string, e wire.Event) (fields string, err error) {
	if err := checkIDs(tenant, e.Device); err != nil {
		return "", err
	}
	if e.ID == "" {
		return "", fmt.Errorf("%w: empty event id", wire.ErrInvalid)
	}
	if err := checkText(e.ID, e.Type, e.Version, e.Message); err != nil {
		return "", fmt.Errorf("event %q: %w", e.ID, err)
	}
	if e.Seq > math.MaxInt64 {
		return "", fmt.Errorf("event %s: %w: seq %d out of range", e.ID, wire.ErrInvalid, e.Seq)
	}
	if e.Schema < 0 || e.Schema > math.MaxInt32 {
		return "", fmt.Errorf("event %s: %w: schema %d out of range", e.ID, wire.ErrInvalid, e.Schema)
	}
	if len(e.Fields) == 0 {
		return "", nil
	}
	for k, v := range e.Fields {
		if err := checkText(k, v); err != nil {
			return "", fmt.Errorf("event %s: fields: %w", e.ID, err)
		}
	}
	b, err := json.Marshal(e.Fields)
	if err != nil {
		return "", fmt.Errorf("event %s: encoding fields: %w", e.ID, err)
	}
	return string(b), nil
}

// latestStates returns states with only the one that UpsertState, applied
// in order, would leave for each device: the newest at the precision stored,
// the later of equals. Order is otherwise kept.
func latestStates(states []wire.State) []wire.State {
	idx := make(map[string]int, len(states))
	out := make([]wire.State, 0, len(states))
	for _, st := range states {
		i, ok := idx[st.Device]
		switch {
		case !ok:
			idx[st.Device] = len(out)
			out = append(out, st)
		case micros(st.Time) >= micros(out[i].Time):
			out[i] = st
		}
	}
	return out
}
