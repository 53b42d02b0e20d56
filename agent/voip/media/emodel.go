package media

import (
	"math"
	"time"
)

// Quality is what the E-model estimate of a G.711 call is made from.
type Quality struct {
	Loss   float64       // fraction of packets lost or discarded late, 0..1
	Jitter time.Duration // RFC 3550 interarrival jitter
	RTT    time.Duration // round-trip time; 0 when unknown (counted as none)
	Ptime  time.Duration // packetisation; 0 means 20 ms
	PLC    bool          // packet loss concealment (G.711 Appendix I) at the receiver
}

// ITU-T G.113 Appendix I packet-loss robustness factors for G.711 with
// random loss (BurstR = 1): with and without concealment.
const (
	bplG711PLC   = 25.1
	bplG711NoPLC = 4.3
)

// G.107 default parameters (Table 3) and what they give: Ro - Is is the
// basic signal-to-noise ratio less the simultaneous impairments, 94.77
// - 1.41. With no delay and no loss R comes to 93.2, MOS 4.41.
const (
	eRo   = 94.77
	eIs   = 1.41
	eTELR = 65.0  // talker echo loudness rating, dB
	eWEPL = 110.0 // weighted echo path loss, dB
	eNo   = -61.18
)

// OneWayDelay is the mouth-to-ear delay the E-model is given: half the
// round trip, one packet of packetisation, and a playout buffer holding
// twice the interarrival jitter (jitter counted as extra delay).
func (q Quality) OneWayDelay() time.Duration {
	ptime := q.Ptime
	if ptime == 0 {
		ptime = 20 * time.Millisecond
	}
	return q.RTT/2 + ptime + 2*q.Jitter
}

// RFactor is the ITU-T G.107 transmission rating for q: R = Ro - Is - Id -
// Ie,eff + A with the default parameters, A = 0, Ie = 0 for G.711, Bpl
// from G.113 (PLC or not) and loss taken as random.
func RFactor(q Quality) float64 {
	ta := float64(q.OneWayDelay()) / float64(time.Millisecond)
	ppl := 100 * min(max(q.Loss, 0), 1)
	bpl := bplG711NoPLC
	if q.PLC {
		bpl = bplG711PLC
	}
	const ie, burstR = 0.0, 1.0
	ieEff := ie + (95-ie)*ppl/(ppl/burstR+bpl)
	return eRo - eIs - delayImpairment(ta) - ieEff
}

// delayImpairment is G.107's Id = Idte + Idle + Idd for a one-way delay
// of ta ms, the echo paths' delays following it (T = Ta, Tr = 2T).
func delayImpairment(ta float64) float64 {
	t, tr := ta, 2*ta
	// Talker echo.
	terv := eTELR - 40*math.Log10((1+t/10)/(1+t/150)) + 6*math.Exp(-0.3*t*t)
	re := 80 + 2.5*(terv-14)
	roe := -1.5 * (eNo + 2)
	idte := ((roe-re)/2 + math.Sqrt((roe-re)*(roe-re)/4+100) - 1) * (1 - math.Exp(-t))
	// Listener echo.
	rle := 10.5 * (eWEPL + 7) * math.Pow(tr+1, -0.25)
	idle := (eRo-rle)/2 + math.Sqrt((eRo-rle)*(eRo-rle)/4+169)
	return idte + idle + absoluteDelayImpairment(ta)
}

// absoluteDelayImpairment is G.107's Idd: nothing up to 100 ms.
func absoluteDelayImpairment(ta float64) float64 {
	if ta <= 100 {
		return 0
	}
	x := math.Log10(ta/100) / math.Log10(2)
	return 25 * (math.Pow(1+math.Pow(x, 6), 1.0/6) - 3*math.Pow(1+math.Pow(x/3, 6), 1.0/6) + 2)
}

// MOSFromR is G.107 Annex B's conversion of R to a conversational MOS.
func MOSFromR(r float64) float64 {
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return 1 + 0.035*r + r*(r-60)*(100-r)*7e-6
}

// EstimateMOS is MOSFromR(RFactor(q)).
func EstimateMOS(q Quality) float64 { return MOSFromR(RFactor(q)) }
