package cel

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

func sampleLog(t *testing.T) ([]Record, []byte) {
	t.Helper()
	fws := []Firmware{
		{Kind: KindBooted, Version: "1.0.0", Target: "firmware/dt100/dt100-1.0.0.tar", SHA256: sha256.Sum256([]byte("a"))},
		{Kind: KindInstalled, Version: "1.1.0", Target: "firmware/dt100/dt100-1.1.0.tar", SHA256: sha256.Sum256([]byte("b"))},
		{Kind: KindBooted, Version: "1.1.0", Target: "firmware/dt100/dt100-1.1.0.tar", SHA256: sha256.Sum256([]byte("b"))},
	}
	var recs []Record
	var b []byte
	for i, f := range fws {
		r := NewRecord(uint64(i), 14, f)
		recs = append(recs, r)
		b = Append(b, r)
	}
	return recs, b
}

func TestRoundTripAndReplay(t *testing.T) {
	recs, b := sampleLog(t)
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		if got[i] != recs[i] {
			t.Errorf("record %d: %+v, want %+v", i, got[i], recs[i])
		}
	}
	var pcr [32]byte
	for _, r := range recs {
		pcr = sha256.Sum256(append(pcr[:], r.Digest[:]...))
	}
	if rp := Replay(got); rp[14] != pcr || len(rp) != 1 {
		t.Errorf("Replay = %x, want PCR 14 = %x", rp, pcr)
	}
}

// TestTampering: each way of changing a log is refused by Decode, or (a
// record removed at the end) changes what Replay gives.
func TestTampering(t *testing.T) {
	recs, b := sampleLog(t)
	encode := func(rs ...Record) []byte {
		var out []byte
		for _, r := range rs {
			out = Append(out, r)
		}
		return out
	}
	edited := recs[1]
	edited.Firmware.Version = "1.2.0" // content edited, digest kept
	rehashed := recs[1]
	rehashed.Firmware.Version = "1.2.0"
	rehashed.Digest = rehashed.Firmware.Digest() // consistent, but the replay differs
	swapped0, swapped1 := recs[1], recs[0]
	swapped0.Num, swapped1.Num = 0, 1
	for _, tc := range []struct {
		name      string
		log       []byte
		decodeErr bool
	}{
		{"record removed from the middle", encode(recs[0], recs[2]), true},
		{"records reordered", encode(recs[1], recs[0], recs[2]), true},
		{"content edited", encode(recs[0], edited, recs[2]), true},
		{"content edited and its digest recomputed", encode(recs[0], rehashed, recs[2]), false},
		{"records swapped and renumbered", encode(swapped0, swapped1, recs[2]), false},
		{"last record removed", encode(recs[0], recs[1]), false},
		{"truncated", b[:len(b)-3], true},
		{"trailing garbage", append(append([]byte{}, b...), 0xD7), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.log)
			if tc.decodeErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Decode = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if Replay(got)[14] == Replay(recs)[14] {
				t.Fatal("the tampered log replays to the genuine PCR value")
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	_, b := sampleLog(&testing.T{})
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		var again []byte
		for _, r := range recs {
			again = Append(again, r)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("a decoded log does not encode back to itself")
		}
	})
}
