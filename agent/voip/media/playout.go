package media

// reorderDepth is how many packets the playout waits for a missing one
// (100 ms at 20 ms packets) before giving it up as lost.
const reorderDepth = 5

// maxFill bounds the silence written for a timestamp gap (lost frames,
// comfort noise, a pause): 2 s. A larger jump is a new timeline, not a
// gap to fill.
const maxFill = 2 * SampleRate

var zeros [SampleRate / 10]int16

type slot struct {
	used    bool
	ext     uint64
	ts      uint32
	payload []byte
	audio   bool
}

// playout puts packets back in sequence order and writes their audio,
// with silence for the timestamps no packet covered, so the Sink stays
// aligned with the sender's clock.
type playout struct {
	slots   [reorderDepth]slot
	next    uint64 // extended sequence number of the next packet to play
	high    uint64 // highest extended sequence number held or played
	started bool
	nextTS  uint32 // timestamp just past the last audio written
	haveTS  bool
}

func newPlayout() playout {
	var p playout
	for i := range p.slots {
		p.slots[i].payload = make([]byte, 0, MaxPacket)
	}
	return p
}

func (p *playout) reset() {
	for i := range p.slots {
		p.slots[i].used = false
	}
	p.started, p.haveTS = false, false
}

// insert adds a packet (payload nil: no audio) and plays what is ready.
func (p *playout) insert(in *Inbound, ext uint64, ts uint32, payload []byte) {
	if !p.started {
		p.next, p.high, p.started = ext, ext, true
	}
	if ext < p.next {
		in.late++
		return
	}
	if ext >= p.next+reorderDepth {
		// No room: give up on the oldest gaps.
		if ext-p.next >= 2*reorderDepth {
			p.flush(in)
			p.next = max(p.next, ext-reorderDepth+1)
		}
		for p.next+reorderDepth <= ext {
			p.emitAt(in, p.next)
			p.next++
		}
	}
	s := &p.slots[ext%reorderDepth]
	if s.used && s.ext == ext {
		return // a duplicate (only possible without replay protection)
	}
	if ext == p.next && p.high < ext+1 {
		// In order with nothing held after it: play it straight from the
		// packet.
		p.high = ext
		p.play(in, ts, payload)
		p.next++
		return
	}
	s.used, s.ext, s.ts, s.audio = true, ext, ts, payload != nil
	s.payload = append(s.payload[:0], payload...)
	p.high = max(p.high, ext)
	for p.slots[p.next%reorderDepth].used && p.slots[p.next%reorderDepth].ext == p.next {
		p.emitAt(in, p.next)
		p.next++
	}
}

// flush plays everything held, in order, and moves past the highest.
func (p *playout) flush(in *Inbound) {
	if !p.started {
		return
	}
	for ; p.next <= p.high; p.next++ {
		p.emitAt(in, p.next)
	}
}

// emitAt plays the packet with extended sequence number ext if held.
func (p *playout) emitAt(in *Inbound, ext uint64) {
	s := &p.slots[ext%reorderDepth]
	if !s.used || s.ext != ext {
		return
	}
	s.used = false
	if s.audio {
		p.play(in, s.ts, s.payload)
	}
}

// play writes a packet's audio (none for nil), after silence for any
// timestamps between it and the audio before.
func (p *playout) play(in *Inbound, ts uint32, payload []byte) {
	if payload == nil {
		return
	}
	if p.haveTS {
		if gap := int32(ts - p.nextTS); gap > 0 && gap <= maxFill {
			for gap > 0 {
				k := min(int(gap), len(zeros))
				in.write(zeros[:k])
				gap -= int32(k)
			}
		}
	}
	n := len(payload)
	in.decode(in.samples[:n], payload)
	in.write(in.samples[:n])
	p.nextTS, p.haveTS = ts+uint32(n), true
}
