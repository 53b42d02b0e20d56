// Package audit is the server's tamper-evident record of changes
// (DESIGN.md §8): every change an operator, a token or the bootstrap admin
// makes through the API is appended to a hash-chained log in the store, and
// Verify walks a copy of that log and names each entry that was edited,
// removed or reordered since it was written.
//
// # The chain
//
// Entries are numbered 1, 2, 3, … without gaps (Seq). Each entry carries
// the hash of the entry before it (PrevHash; Genesis for entry 1) and its
// own hash (Hash), SHA-256 over the canonical encoding of all its other
// fields and PrevHash (see Hash for the encoding). Changing any field of a
// stored entry breaks its hash; recomputing that hash breaks the next
// entry's PrevHash; removing an entry leaves a gap in Seq and a PrevHash
// that names an entry that is gone; moving an entry to another Seq makes
// its hash fit its content at its old Seq only.
//
// # The anchor
//
// The chain alone cannot show that its last entries were removed: a
// shorter chain is still a valid chain. The store therefore keeps the
// latest (Seq, Hash), the Head, in a row of its own that it updates in the
// transaction that appends, and CheckHead compares a listing with it.
//
// # Limits
//
// Whoever can rewrite both the log and the head, with write access to the
// database, can rewrite history consistently: recompute every hash from
// the first changed entry on and set the head to the new last one. The
// chain makes that detectable only against a copy of the head kept
// elsewhere. The API logs the head at every append (message "audit
// appended", attributes seq and hash) so that a log shipper keeps such
// copies outside the database; an operator can also record the output of
// `dialtone audit verify`, which prints the head, from time to time. An
// entry that was never written (a failed append, see the API) is not in
// the chain and cannot be detected by it.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Entry is one change, as appended to the log.
type Entry struct {
	// Seq numbers the entries from 1 without gaps; the store assigns it.
	Seq uint64 `json:"seq"`
	// Time is when the change was recorded, in UTC with microsecond
	// precision (what the stores keep).
	Time time.Time `json:"time"`
	// Actor names who made the change (auth.Principal.String: "token:ab12",
	// "session:alice", "bootstrap:bootstrap"), ActorKind its kind.
	Actor     string `json:"actor"`
	ActorKind string `json:"actor_kind,omitempty"`
	// Tenant is the tenant the change touched, "" for platform-wide ones.
	Tenant string `json:"tenant,omitempty"`
	// Action is what was done: the API route ("PUT /v1/devices/{id}/desired")
	// or a verb ("login").
	Action string `json:"action"`
	// Target names what the change touched: the route's path values
	// ("id=phone1") or what the handler set.
	Target string `json:"target,omitempty"`
	// Before and After are JSON documents of the changed thing, when the
	// handler gave them. The store keeps them in canonical form (see
	// Canonical).
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
	// Remote is the client's address.
	Remote string `json:"remote,omitempty"`
	// Status is the HTTP status the change was answered with.
	Status int `json:"status"`
	// PrevHash is the previous entry's Hash (Genesis for the first entry),
	// Hash this entry's; the store sets both.
	PrevHash []byte `json:"prev_hash"`
	Hash     []byte `json:"hash"`
}

// Head is the latest entry's Seq and Hash, kept apart from the entries so
// that removing the last entries shows. A log without entries has Seq 0
// and Hash Genesis.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
}

// hashDomain starts every hashed encoding, so that an entry's hash cannot
// be mistaken for the hash of anything else, and names the encoding's
// version.
const hashDomain = "dialtone audit entry v1\x00"

// Genesis is the PrevHash of the first entry: SHA-256 of
// "dialtone audit genesis v1".
var Genesis = func() []byte {
	h := sha256.Sum256([]byte("dialtone audit genesis v1"))
	return h[:]
}()

// Hash computes e's hash from its fields and PrevHash (e.Hash is ignored):
//
//	SHA-256( "dialtone audit entry v1" 0x00
//	         u64(Seq) i64(Time in Unix microseconds) i64(Status)
//	         lp(Actor) lp(ActorKind) lp(Tenant) lp(Action) lp(Target)
//	         lp(Canonical(Before)) lp(Canonical(After)) lp(Remote)
//	         lp(PrevHash) )
//
// where u64 and i64 are 8 bytes big-endian, and lp(x) is u64(len(x))
// followed by the bytes of x. Every variable-length field is
// length-prefixed and the fields come in a fixed order, so no two different
// entries share an encoding. Before and After are hashed in canonical form,
// so that JSON that travelled through the API (re-indented, HTML-escaped)
// hashes as it did when it was stored; an empty or null document hashes as
// no bytes.
func Hash(e Entry) []byte {
	h := sha256.New()
	writeHashInput(h, e)
	return h.Sum(nil)
}

func writeHashInput(w io.Writer, e Entry) {
	var n [8]byte
	u64 := func(v uint64) {
		binary.BigEndian.PutUint64(n[:], v)
		_, _ = w.Write(n[:])
	}
	lp := func(b []byte) {
		u64(uint64(len(b)))
		_, _ = w.Write(b)
	}
	_, _ = io.WriteString(w, hashDomain)
	u64(e.Seq)
	u64(uint64(e.Time.UnixMicro()))
	u64(uint64(int64(e.Status)))
	for _, s := range []string{e.Actor, e.ActorKind, e.Tenant, e.Action, e.Target} {
		lp([]byte(s))
	}
	lp(canonicalOrRaw(e.Before))
	lp(canonicalOrRaw(e.After))
	lp([]byte(e.Remote))
	lp(e.PrevHash)
}

// canonicalOrRaw is Canonical, or the bytes as they are when they are not
// JSON (which no store keeps, but an edited copy may hold).
func canonicalOrRaw(b []byte) []byte {
	c, err := Canonical(b)
	if err != nil {
		return b
	}
	return c
}

// Canonical returns the canonical form of a JSON document: compact, object
// keys sorted, strings escaped only where JSON requires it, numbers as
// written. Empty input and "null" give nil (no document). Two documents
// with the same canonical form mean the same; whitespace and key order are
// not part of what the log protects.
func Canonical(doc []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("audit: canonical JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("audit: canonical JSON: trailing data after the document")
	}
	if v == nil {
		return nil, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps encode with sorted keys
		return nil, fmt.Errorf("audit: canonical JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Normalize readies e for appending after an entry whose hash is prev: it
// puts Time in UTC at microsecond precision (now when zero) and Before and
// After in canonical form, and sets Seq, PrevHash and Hash. A store calls
// it in the transaction that appends, with the head it read there.
func Normalize(e Entry, head Head, now time.Time) (Entry, error) {
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	var err error
	if e.Before, err = Canonical(e.Before); err != nil {
		return Entry{}, fmt.Errorf("before: %w", err)
	}
	if e.After, err = Canonical(e.After); err != nil {
		return Entry{}, fmt.Errorf("after: %w", err)
	}
	e.Seq = head.Seq + 1
	e.PrevHash = head.Hash
	if head.Seq == 0 && len(head.Hash) == 0 {
		e.PrevHash = Genesis
	}
	e.PrevHash = bytes.Clone(e.PrevHash)
	e.Hash = Hash(e)
	return e, nil
}
