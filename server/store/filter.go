package store

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What a DeviceFilter means, in the SQL both implementations share.

// sortKeys maps a sort order to the columns it sorts by before the ID. The
// tenant comes before the ID in every order, so that a page of one tenant's
// devices is one range of the (key, tenant, id) index that serves the order.
var sortKeys = map[string][]string{
	SortID:       {"tenant"},
	SortLastSeen: {"last_seen", "tenant"},
	SortVersion:  {"version", "tenant"},
	SortModel:    {"model", "tenant"},
}

func (f DeviceFilter) sort() string {
	if f.Sort == "" {
		return SortID
	}
	return f.Sort
}

// cursor is what DeviceFilter.After carries: the sort key of the last device
// of a page.
type cursor struct {
	Sort     string `json:"s"`
	Key      string `json:"k,omitempty"` // version or model
	LastSeen int64  `json:"l,omitempty"` // in µs
	Tenant   string `json:"t"`
	ID       string `json:"i"`
}

// Cursor returns the value of After that continues a listing by f after d,
// the last device of a page.
func (f DeviceFilter) Cursor(d Device) string {
	c := cursor{Sort: f.sort(), Tenant: d.Tenant, ID: d.ID}
	switch c.Sort {
	case SortLastSeen:
		c.LastSeen = micros(d.LastSeen)
	case SortVersion:
		c.Key = d.Version
	case SortModel:
		c.Key = d.Model
	}
	b, _ := json.Marshal(c) // cannot fail: strings and an integer
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseCursor(s, sort string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: malformed cursor", ErrBadFilter)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" || c.Tenant == "" {
		return cursor{}, fmt.Errorf("%w: malformed cursor", ErrBadFilter)
	}
	if c.Sort != sort {
		return cursor{}, fmt.Errorf("%w: cursor of sort order %q used with %q", ErrBadFilter, c.Sort, sort)
	}
	return c, nil
}

// dialect is what differs between the SQL the two stores speak.
type dialect struct {
	placeholder func(n int) string // the nth (from 1) argument
	time        func(time.Time) any
	// limitForOffset is the LIMIT that means none, for a dialect that wants
	// one before OFFSET; "" if OFFSET may stand alone.
	limitForOffset string
}

var (
	sqliteDialect = dialect{
		placeholder:    func(int) string { return "?" },
		time:           func(t time.Time) any { return micros(t) },
		limitForOffset: "-1",
	}
	postgresDialect = dialect{
		placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
		time:        func(t time.Time) any { return t },
	}
)

// tenantIn returns the condition that keeps the rows of tenants: `tenant IN
// (...)`, or one that keeps none for an empty set (fail closed: a caller
// allowed no tenant sees nothing).
func tenantIn(tenants []string, arg func(any) string) string {
	if len(tenants) == 0 {
		return "1 = 0"
	}
	ps := make([]string, len(tenants))
	for i, t := range tenants {
		ps[i] = arg(t)
	}
	return "tenant IN (" + strings.Join(ps, ", ") + ")"
}

// listClauses returns the WHERE, ORDER BY, LIMIT and OFFSET clauses of f's
// listing, and their arguments.
func listClauses(f DeviceFilter, d dialect) (string, []any, error) {
	sort := f.sort()
	keys, ok := sortKeys[sort]
	if !ok {
		return "", nil, fmt.Errorf("%w: unknown sort order %q", ErrBadFilter, f.Sort)
	}
	keys = append(slices.Clone(keys), "id")
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return d.placeholder(len(args))
	}
	for _, eq := range []struct{ col, v string }{
		{"tenant", f.Tenant}, {"model", f.Model}, {"version", f.Version}, {"attestation", f.Attestation},
	} {
		if eq.v != "" {
			where = append(where, eq.col+" = "+arg(eq.v))
		}
	}
	if f.Tenants != nil {
		where = append(where, tenantIn(f.Tenants, arg))
	}
	if f.Online != nil {
		where = append(where, "online = "+arg(*f.Online))
	}
	if !f.SeenSince.IsZero() {
		where = append(where, "last_seen >= "+arg(d.time(f.SeenSince)))
	}
	if !f.SeenBefore.IsZero() {
		where = append(where, "last_seen < "+arg(d.time(f.SeenBefore)))
	}
	if f.TUFTimestampBelow > 0 {
		where = append(where, "state_time IS NOT NULL AND tuf_timestamp < "+arg(f.TUFTimestampBelow))
	}
	if f.After != "" {
		c, err := parseCursor(f.After, sort)
		if err != nil {
			return "", nil, err
		}
		var vals []string
		switch sort {
		case SortLastSeen:
			vals = append(vals, arg(d.time(fromMicros(c.LastSeen))))
		case SortVersion, SortModel:
			vals = append(vals, arg(c.Key))
		}
		vals = append(vals, arg(c.Tenant), arg(c.ID))
		op := " > "
		if f.Desc {
			op = " < "
		}
		// A row value, which both databases match against the index of the
		// order, so a page deep in the fleet costs what the first does.
		where = append(where, "("+strings.Join(keys, ", ")+")"+op+"("+strings.Join(vals, ", ")+")")
	}

	var q strings.Builder
	if len(where) > 0 {
		q.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	order := keys
	if f.Desc {
		order = make([]string, len(keys))
		for i, k := range keys {
			order[i] = k + " DESC"
		}
	}
	q.WriteString(" ORDER BY " + strings.Join(order, ", "))
	switch {
	case f.Limit > 0:
		q.WriteString(" LIMIT " + arg(f.Limit))
	case f.Offset > 0 && d.limitForOffset != "":
		q.WriteString(" LIMIT " + d.limitForOffset)
	}
	if f.Offset > 0 {
		q.WriteString(" OFFSET " + arg(f.Offset))
	}
	return q.String(), args, nil
}
