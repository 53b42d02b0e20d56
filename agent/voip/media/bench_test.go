package media

import (
	"testing"
	"time"
)

// BenchmarkPipeline is one packet through both halves, as hack/bench's
// voip row measures it.
func BenchmarkPipeline(b *testing.B) {
	for _, suite := range suites {
		b.Run(suite.name, func(b *testing.B) {
			key := newKey(b, suite.profile)
			out, err := NewOutbound(suite.profile, key, PCMU)
			if err != nil {
				b.Fatal(err)
			}
			in, err := NewInbound(suite.profile, key, PCMU, Discard{})
			if err != nil {
				b.Fatal(err)
			}
			frame := readAll(b, NewTone(440, 12000, 20*time.Millisecond))
			buf := make([]byte, 0, MaxPacket)
			at := time.Now()
			for b.Loop() {
				pkt, err := out.Packet(buf, frame)
				if err != nil {
					b.Fatal(err)
				}
				at = at.Add(20 * time.Millisecond)
				if err := in.Receive(pkt, at); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
