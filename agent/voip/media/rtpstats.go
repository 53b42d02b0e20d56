package media

// RFC 3550 Appendix A.3: sequence number bookkeeping, loss counted from
// the extended sequence range against the packets received, so reordering
// costs nothing and duplicates (which SRTP replay protection drops before
// they get here) would not hide losses.
const (
	maxDropout  = 3000
	maxMisorder = 100
	seqMod      = 1 << 16
)

type seqState struct {
	started       bool
	maxSeq        uint16
	cycles        uint64 // shifted count of sequence number cycles
	baseSeq       uint64
	badSeq        uint64
	received      uint64
	expectedPrior uint64
	receivedPrior uint64
}

func (s *seqState) init(seq uint16) {
	*s = seqState{started: true, maxSeq: seq, baseSeq: uint64(seq), badSeq: seqMod + 1}
}

// update is A.3's update_seq without the probation of a new source: the
// packet authenticated, so it is no stray. It returns the packet's
// extended sequence number offset by one cycle (so that a packet reordered
// from before the first one still has a non-negative number), whether the source restarted (A.3's resync
// after two sequential packets past a large jump) and false for a packet
// to discard (the first after a large jump).
func (s *seqState) update(seq uint16) (ext uint64, restarted, ok bool) {
	if !s.started {
		s.init(seq)
		s.received++
		return seqMod + uint64(seq), true, true
	}
	udelta := seq - s.maxSeq
	switch {
	case udelta < maxDropout:
		// In order, with a permissible gap.
		if seq < s.maxSeq {
			s.cycles += seqMod
		}
		s.maxSeq = seq
		ext = seqMod + s.cycles + uint64(seq)
	case udelta <= seqMod-maxMisorder:
		// A very large jump: believe it once the next packet follows it.
		if uint64(seq) == s.badSeq {
			s.init(seq)
			s.received++
			return seqMod + uint64(seq), true, true
		}
		s.badSeq = uint64(seq+1) & (seqMod - 1)
		return 0, false, false
	default:
		// Duplicate or reordered: before maxSeq, perhaps in the previous
		// cycle.
		ext = seqMod + s.cycles + uint64(seq)
		if seq > s.maxSeq {
			ext -= seqMod
		}
	}
	s.received++
	return ext, false, true
}

func (s *seqState) extendedMax() uint64 { return s.cycles + uint64(s.maxSeq) }

func (s *seqState) expected() uint64 {
	if !s.started {
		return 0
	}
	return s.extendedMax() - s.baseSeq + 1
}

// lost is the cumulative number of packets lost, never negative.
func (s *seqState) lost() uint64 {
	e := s.expected()
	if e <= s.received {
		return 0
	}
	return e - s.received
}

// jitterState is RFC 3550 §6.4.1 / A.8's interarrival jitter, in
// timestamp units: J += (|D(i-1,i)| - J) / 16, D being the difference of
// relative transit times of consecutive packets.
type jitterState struct {
	j    float64
	last int32
	have bool
}

// update takes a packet's arrival time and RTP timestamp, both in
// timestamp units (8 kHz) and wrapping.
func (s *jitterState) update(arrival, ts uint32) {
	transit := int32(arrival - ts)
	if s.have {
		d := transit - s.last
		if d < 0 {
			d = -d
		}
		s.j += (float64(d) - s.j) / 16
	}
	s.last, s.have = transit, true
}
