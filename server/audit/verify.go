package audit

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
)

// Kind names what Verify found wrong with the log.
type Kind string

// Kinds of problem.
const (
	// Edited: an entry's content no longer matches its hash, or it was
	// rewritten with a recomputed hash that its successor does not chain
	// to, or its Seq was changed.
	Edited Kind = "edited"
	// Removed: entries are missing from the middle (or the start) of the
	// chain: a gap in Seq where the next entry chains to an entry that is
	// not there.
	Removed Kind = "removed"
	// Reordered: an entry sits at a Seq other than the one it was written
	// at (its hash fits its content at that other Seq).
	Reordered Kind = "reordered"
	// Truncated: the last entries are missing: the chain ends before the
	// head the server anchored.
	Truncated Kind = "truncated"
	// Inserted: an entry the server did not append: a second entry with
	// the same Seq, or entries after the anchored head.
	Inserted Kind = "inserted"
)

// Problem is one thing wrong with the log, about the entry at Seq (for
// Removed and Truncated, the first missing Seq).
type Problem struct {
	Seq    uint64 `json:"seq"`
	Kind   Kind   `json:"kind"`
	Detail string `json:"detail"`
}

func (p Problem) String() string { return fmt.Sprintf("seq %d: %s: %s", p.Seq, p.Kind, p.Detail) }

// maxMoveCandidates bounds the search for where mismatching entries came
// from: each of them is hashed at the Seq of each other, so the work grows
// with the square of their number.
const maxMoveCandidates = 512

// Verify checks a listing of the whole log, entries in any order, and
// returns each problem it finds, ordered by Seq; nil when the chain is
// intact. It cannot see that the last entries are gone: CheckHead does
// that against the anchored head.
//
// An entry whose hash does not fit its content is Reordered when its hash
// fits its content at the Seq of another such entry (rows swapped or
// rotated), Edited otherwise. Then, with every entry at the Seq it was
// written at, the chain is walked from Genesis: a gap in Seq where the next
// entry does not chain to the previous one is Removed (named by the first
// missing Seq); an unbroken Seq where it does not is an Edited entry whose
// hash was recomputed (named by that entry).
func Verify(entries []Entry) []Problem {
	var problems []Problem
	report := func(seq uint64, k Kind, format string, args ...any) {
		problems = append(problems, Problem{Seq: seq, Kind: k, Detail: fmt.Sprintf(format, args...)})
	}

	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	type item struct {
		e       Entry
		seq     uint64 // the Seq it was written at, as far as known
		flagged bool   // already reported as edited or moved
		copied  bool   // a copy of another entry: not part of the chain
	}
	items := make([]item, 0, len(sorted))
	for i, e := range sorted {
		if i > 0 && e.Seq == sorted[i-1].Seq {
			report(e.Seq, Inserted, "a second entry with this seq (hash %s)", short(e.Hash))
			continue
		}
		if e.Seq == 0 {
			report(0, Edited, "an entry with seq 0, which no entry is written with (hash %s)", short(e.Hash))
			continue
		}
		items = append(items, item{e: e, seq: e.Seq})
	}

	// Entries whose hash does not fit their content.
	var bad []int
	for i := range items {
		if !bytes.Equal(Hash(items[i].e), items[i].e.Hash) {
			bad = append(bad, i)
		}
	}
	var seqOfHash, goodSeqOfHash map[string]uint64
	if len(bad) > 0 {
		seqOfHash = make(map[string]uint64, len(items))
		goodSeqOfHash = make(map[string]uint64, len(items))
		for _, it := range items {
			seqOfHash[string(it.e.Hash)] = it.e.Seq
		}
		for i, it := range items {
			if _, isBad := slices.BinarySearch(bad, i); !isBad {
				goodSeqOfHash[string(it.e.Hash)] = it.e.Seq
			}
		}
	}
	for n, i := range bad {
		it := &items[i]
		it.flagged = true
		if s, ok := goodSeqOfHash[string(it.e.Hash)]; ok {
			it.copied = true
			report(it.e.Seq, Inserted, "a copy of the entry at seq %d", s)
			continue
		}
		if n < maxMoveCandidates {
			// Where it may have come from: the Seq after the entry it
			// chains to, or the Seq of another entry that moved.
			var cands []uint64
			if bytes.Equal(it.e.PrevHash, Genesis) {
				cands = append(cands, 1)
			} else if s, ok := seqOfHash[string(it.e.PrevHash)]; ok {
				cands = append(cands, s+1)
			}
			for m, j := range bad {
				if m < maxMoveCandidates && j != i {
					cands = append(cands, items[j].e.Seq)
				}
			}
			moved := false
			for _, s := range cands {
				if s == it.e.Seq {
					continue
				}
				e := it.e
				e.Seq = s
				if bytes.Equal(Hash(e), it.e.Hash) {
					it.seq = s
					moved = true
					// Its successor may have moved with it.
					seqOfHash[string(it.e.Hash)] = s
					break
				}
			}
			if moved {
				report(it.e.Seq, Reordered, "holds the entry written as seq %d (entries were moved)", it.seq)
				continue
			}
		}
		report(it.e.Seq, Edited, "its content does not match its hash %s (a field was changed)", short(it.e.Hash))
	}

	// Walk the chain in the order entries were written.
	items = slices.DeleteFunc(items, func(it item) bool { return it.copied })
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
	prevSeq, prevHash, prevFlagged := uint64(0), Genesis, false
	for _, it := range items {
		linked := bytes.Equal(it.e.PrevHash, prevHash)
		switch {
		case it.seq == prevSeq:
			// Two entries claim the same place; the moved one was
			// reported.
		case it.seq > prevSeq+1 && !linked:
			if it.seq == prevSeq+2 {
				report(prevSeq+1, Removed, "missing: seq %d chains to an entry that is not in the log", it.seq)
			} else {
				report(prevSeq+1, Removed, "seq %d to %d missing: seq %d chains to an entry that is not in the log",
					prevSeq+1, it.seq-1, it.seq)
			}
		case it.seq > prevSeq+1:
			if !it.flagged {
				report(it.e.Seq, Edited, "seq changed: it chains to seq %d, yet seq %d to %d are missing", prevSeq, prevSeq+1, it.seq-1)
			}
		case !linked && !it.flagged && !prevFlagged:
			if prevSeq == 0 {
				report(it.e.Seq, Edited, "the first entry does not chain from the genesis hash")
			} else {
				report(prevSeq, Edited, "rewritten with a recomputed hash: seq %d chains to %s, not to its %s",
					it.seq, short(it.e.PrevHash), short(prevHash))
			}
		}
		prevSeq, prevHash, prevFlagged = it.seq, it.e.Hash, it.flagged
	}
	slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Seq, b.Seq) })
	return problems
}

// CheckHead compares a listing of the whole log with the head the server
// anchored. before is the head read before listing: the listing must reach
// it with the same hash, or the log lost its last entries (Truncated) or
// the entry at the head was replaced (Edited). after is the head read after
// listing: entries beyond it were not appended by the server (Inserted).
// Entries between the two were appended while the listing ran. Pass the
// same head twice when the log cannot change meanwhile.
func CheckHead(entries []Entry, before, after Head) []Problem {
	var problems []Problem
	var last uint64
	var atHead *Entry
	for i := range entries {
		e := &entries[i]
		last = max(last, e.Seq)
		if e.Seq == before.Seq && atHead == nil {
			atHead = e
		}
		if e.Seq > after.Seq {
			problems = append(problems, Problem{Seq: e.Seq, Kind: Inserted,
				Detail: fmt.Sprintf("after the anchored head (seq %d): not appended by the server", after.Seq)})
		}
	}
	switch {
	case before.Seq == 0:
	case last < before.Seq:
		d := fmt.Sprintf("seq %d to %d missing: the log ends at seq %d, the anchored head is seq %d", last+1, before.Seq, last, before.Seq)
		if last+1 == before.Seq {
			d = fmt.Sprintf("missing: the log ends at seq %d, the anchored head is seq %d", last, before.Seq)
		}
		problems = append(problems, Problem{Seq: last + 1, Kind: Truncated, Detail: d})
	case atHead == nil:
		// A gap at the head itself: Verify reports it as removed.
	case !bytes.Equal(atHead.Hash, before.Hash):
		problems = append(problems, Problem{Seq: before.Seq, Kind: Edited,
			Detail: fmt.Sprintf("its hash %s is not the anchored head's %s", short(atHead.Hash), short(before.Hash))})
	}
	slices.SortStableFunc(problems, func(a, b Problem) int { return cmp.Compare(a.Seq, b.Seq) })
	return problems
}

// short abbreviates a hash for messages.
func short(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 16 {
		return s[:16]
	}
	if s == "" {
		return "(none)"
	}
	return s
}
